"""The contract every registered strategy passes (in the style of torch's OptimizerInfo database
and optuna's SamplerTestCase): its spec answers the planner, the simulator and the CLI; its rule
gives the same numbers with the threaded executor as with the inline reference, and resumes
exactly from a checkpoint. The toy strategy of ``_toy_strategy`` runs the same contract."""

from __future__ import annotations

import math

import pytest
import torch

from _alg_refs import SGD_KW, batches, flat, loss_fn, mlp, save_load
from _profiles import synthetic_profile_dict
from _toy_strategy import NAME as TOY
from _toy_strategy import registered
from hetsam import AutoSAM, Plan, strategies
from hetsam.cost.model import CostModel
from hetsam.execution.threads import ThreadedExecutor
from hetsam.planning.search import plan as make_plan
from hetsam.evidence import share_model
from hetsam.profiling.schema import Profile
from hetsam.simulator import simulate

NAMES = [*strategies.BUILTIN, TOY]


@pytest.fixture(params=NAMES)
def spec(request):
    if request.param == TOY:
        with registered() as toy:
            yield toy
    else:
        yield strategies.get(request.param)



def _plan(spec, **fields) -> Plan:
    if "ascent_batch_size" in spec.fields:
        fields.setdefault("ascent_batch_size", 8)
    return Plan(spec.name, **fields)


def _train(plan, executor, steps):
    """``steps`` steps of a fresh AutoSAM fed by ``prefetch``; returns model, losses, stats."""
    model = mlp(bn=True)
    losses = []
    with AutoSAM(model, loss_fn, plan=plan, executor=executor, seed=7, total_steps=steps, **SGD_KW) as opt:
        for batch in opt.prefetch(batches(steps)):
            losses.append(opt.step(batch))
        return model, losses, opt.stats()


def _steps(opt, data, start, stop):
    """Steps ``start..stop-1`` on ``data``, each with the batches after it as ``upcoming``."""
    return [opt.step(data[t], upcoming=data[t + 1:t + 3]) for t in range(start, stop)]


# ---- the spec ---------------------------------------------------------------------------------
def test_spec_describes_itself(spec):
    p = _plan(spec, batch_size=64)
    assert spec.name in p.describe() and isinstance(spec.settings(p, 64), str) and spec.title and spec.summary
    fid = spec.fidelity(p, 64)
    assert len(fid) == 3 and 0.0 <= fid[0] <= 1.0 and fid[1] <= 0 and 0.0 <= fid[2] <= 1.0
    assert 0 <= spec.staleness(p) and 1 <= spec.ascent_batch_size(p, 64) <= 64
    assert Plan.from_json(p.to_json()) == p
    assert callable(spec.rule_class())


def test_closed_form_and_candidates_on_a_machine(spec):
    report = make_plan(Profile.from_dict(synthetic_profile_dict()), strategies=(spec.name,), simulate=False)
    mine = [c for c in report.candidates if c.plan.strategy == spec.name]
    assert mine or spec.baseline or not spec.planned  # SGD is always there
    for c in mine:
        assert math.isfinite(c.closed_form_seconds) and c.closed_form_seconds > 0
        # (the objective's value of its share for a new task, *the strategy's own fidelity)
        assert c.fidelity == (c.share.objective(report.objective_name), *spec.fidelity(c.plan, report.batch_size))
        assert c.share == share_model().share(c.plan, report.batch_size, report.base_optimizer)


def test_simulator_iteration(spec):
    cm = CostModel(Profile.from_dict(synthetic_profile_dict()))
    p = _plan(spec, descent_device="cpu:0", batch_size=64)
    r = simulate(p, cm, iterations=60, jitter=False, steady_state=False)
    assert r.simulated_iterations == 60 and r.iteration_seconds["mean"] > 0
    sgd = simulate(Plan("sgd", "cpu:0", batch_size=64), cm, iterations=60, jitter=False, steady_state=False)
    assert r.iteration_seconds["mean"] >= sgd.iteration_seconds["mean"] * (1 - 1e-9)  # never faster than SGD


# ---- the rule ---------------------------------------------------------------------------------
def test_threads_equal_the_inline_reference_bit_for_bit(spec, deterministic):
    p = _plan(spec)
    ref, ref_losses, _ = _train(p, "inline", 12)
    got, losses, stats = _train(p, ThreadedExecutor(share="concurrent"), 12)
    assert losses == ref_losses and torch.equal(flat(got), flat(ref))
    assert stats["steps"] == 12


def test_resume_continues_exactly(spec, deterministic):
    p, data = _plan(spec), batches(12)
    whole = mlp(bn=True)
    with AutoSAM(whole, loss_fn, plan=p, executor="inline", seed=7, total_steps=12, **SGD_KW) as opt:
        whole_losses = _steps(opt, data, 0, 12)
    first = mlp(bn=True)
    with AutoSAM(first, loss_fn, plan=p, executor="inline", seed=7, total_steps=12, **SGD_KW) as opt:
        losses = _steps(opt, data, 0, 6)
        state = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
    resumed = mlp(seed=3, bn=True)  # other initial values: everything must come from the checkpoint
    resumed.load_state_dict(state["model"])
    with AutoSAM(resumed, loss_fn, plan=p, executor="inline", seed=99, **SGD_KW) as opt:
        opt.load_state_dict(state["opt"])
        losses += _steps(opt, data, 6, 12)
        assert opt.stats()["steps"] == 12
    assert losses == whole_losses and torch.equal(flat(resumed), flat(whole))
