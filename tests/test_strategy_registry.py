"""A strategy added from outside the package works end to end: planner, simulator, CLI, AutoSAM."""

from __future__ import annotations

import json

import pytest
import torch
from _alg_refs import (
    SGD_KW,
    Scratch,
    assert_rel_close,
    batches,
    descend,
    flat,
    loss_fn,
    mlp,
    perturbation,
    snapshot,
)
from _toy_strategy import NAME, registered

from hetsam import AutoSAM, HetsamInputError, Plan, strategies
from hetsam.cli import main
from hetsam.planning.search import plan
from hetsam.simulator import simulate
from hetsam.testing import StrategyContract

PROFILE = "cpu-2core-resnet20"


@pytest.fixture
def toy():
    with registered() as spec:
        yield spec


def test_registry_lists_and_refuses(toy):
    assert NAME in strategies.names() and strategies.get(NAME) is toy
    with pytest.raises(HetsamInputError, match="registered already"):
        strategies.register(toy)
    with pytest.raises(HetsamInputError, match="built-in"):
        strategies.unregister("sam")
    with pytest.raises(HetsamInputError, match="no option 'j'"):
        Plan(NAME, options={"j": 2})
    with pytest.raises(HetsamInputError, match=r"options\['k'\]=0"):
        Plan(NAME, options={"k": 0})


def test_unknown_after_unregistering():
    with registered():
        Plan(NAME)
    with pytest.raises(HetsamInputError, match="every_k"):
        Plan(NAME)


def test_planner_proposes_and_can_choose_it(toy):
    report = plan(PROFILE, strategies=(NAME, "sam"), budget=1.3)
    mine = [c for c in report.candidates if c.plan.strategy == NAME]
    assert sorted(c.plan.options["k"] for c in mine) == [2, 4, 8]
    # (1 − 1/k)·SGD + (1/k)·SAM, from the simulated baselines
    for c in mine:
        k = c.plan.options["k"]
        assert c.predicted_seconds == pytest.approx(report.sgd_seconds + (report.sam_seconds - report.sgd_seconds) / k,
                                                    rel=1e-6)
    assert report.plan.strategy == NAME and report.budget_met  # the most faithful within 1.3 x SGD here


def test_simulator_follows_its_iteration(toy):
    sgd = simulate(Plan("sgd", "cpu:0", batch_size=64), PROFILE, iterations=400, jitter=False, steady_state=False)
    sam = simulate(Plan("sam", "cpu:0", batch_size=64), PROFILE, iterations=400, jitter=False, steady_state=False)
    mine = simulate(Plan(NAME, "cpu:0", batch_size=64, options={"k": 4}), PROFILE, iterations=400, jitter=False,
                    steady_state=False)
    expected = (3 * sgd.iteration_seconds["mean"] + sam.iteration_seconds["mean"]) / 4
    assert mine.iteration_seconds["mean"] == pytest.approx(expected, rel=1e-9)


def test_cli_simulate_accepts_it(toy, capsys):
    assert main(["simulate", "--profile", PROFILE, "--strategy", NAME, "--option", "k=3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["strategy"] == NAME and data["plan"]["options"] == {"k": 3}
    assert main(["simulate", "--profile", PROFILE, "--strategy", NAME, "--staleness", "2"]) == 2
    assert "does not apply to strategy 'every_k'" in capsys.readouterr().err


@pytest.mark.parametrize("executor", ["inline", "threads"])
def test_autosam_runs_it_as_a_hand_written_loop_does(toy, executor):
    data = batches(9)
    ours, ref = mlp(), mlp()
    with AutoSAM(ours, loss_fn, torch.optim.SGD, rho=0.05, plan=Plan(NAME, options={"k": 3}), executor=executor,
                 **SGD_KW) as opt:
        for batch in data:
            opt.step(batch)
        assert opt.stats()["sam_steps"] == 3 and opt.stats()["steps"] == 9
    sgd = torch.optim.SGD(ref.parameters(), **SGD_KW)
    scratch = Scratch(ref)
    for t, batch in enumerate(data):
        e = perturbation(scratch.grad(snapshot(ref), batch), 0.05) if t % 3 == 0 else None
        descend(ref, sgd, batch, e)
    assert_rel_close(flat(ours), flat(ref), 1e-6)


class TestContract(StrategyContract):
    """The toy passes the shipped contract, as a third party's own tests would run it."""

    strategy = NAME

    @pytest.fixture(autouse=True)
    def _registered(self, toy):  # a package would register on import; the toy only for its tests
        yield
