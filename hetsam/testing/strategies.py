"""The contract every registered strategy passes (in the style of torch's OptimizerInfo database and
optuna's sampler test cases): its spec is well-formed and answers the planner, the simulator and
the command line; its rule gives the same numbers with the threaded executor as with the inline
reference, and resumes exactly from a checkpoint.

Subclass :class:`StrategyContract` in a test module (the name starting with ``Test``) and say which
strategy: set ``strategy`` to a registered name, or override the ``spec`` fixture (to parametrise
it over several strategies, or to register one for the test's duration)::

    from hetsam.testing import StrategyContract

    class TestMySAM(StrategyContract):
        strategy = "my_sam"  # registered when my_package is imported
"""

from __future__ import annotations

import math

import pytest
import torch

from hetsam import AutoSAM, Plan, strategies
from hetsam.cost.model import CostModel
from hetsam.evidence import share_model
from hetsam.execution.threads import ThreadedExecutor
from hetsam.planning.search import plan as plan_machine
from hetsam.profiling.schema import Profile
from hetsam.simulator import simulate
from hetsam.strategies.checks import check_spec
from hetsam.strategies.rule import StrategyRule
from hetsam.testing.profiles import synthetic_profile_dict
from hetsam.testing.toys import (
    SGD_KW,
    batches,
    deterministic_algorithms,
    flat,
    loss_fn,
    mlp,
    save_load,
)

__all__ = ["StrategyContract"]


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


class StrategyContract:
    """pytest test cases for one strategy (see the module docstring).

    ``strategy``: a registered strategy's name (or override the ``spec`` fixture); ``steps``: the
    length of the trainings that compare executors and resume from a checkpoint.
    """

    strategy: str | None = None
    steps = 12

    @pytest.fixture
    def spec(self):
        if self.strategy is None:
            pytest.fail(f"{type(self).__name__}: set strategy = '<a registered name>' or override the spec fixture")
        return strategies.get(self.strategy)

    @pytest.fixture
    def deterministic(self):
        with deterministic_algorithms():
            yield

    def make_plan(self, spec, **fields):
        """The plan the cases run (with ``fields``): the strategy's defaults. Override it to run
        other settings (the model's batches have 16 samples)."""
        return Plan(spec.name, **fields)

    # ---- the spec -----------------------------------------------------------------------------
    def test_spec_passes_the_registration_checks(self, spec):
        check_spec(spec)  # name, fields, options, closed form, and the rule imported now
        assert issubclass(spec.rule_class(), StrategyRule)

    def test_spec_describes_itself(self, spec):
        p = self.make_plan(spec, batch_size=64)
        assert spec.name in p.describe() and isinstance(spec.settings(p, 64), str) and spec.title and spec.summary
        fid = spec.fidelity(p, 64)
        assert len(fid) == 3 and 0.0 <= fid[0] <= 1.0 and fid[1] <= 0 and 0.0 <= fid[2] <= 1.0
        assert 0 <= spec.staleness(p) and 1 <= spec.ascent_batch_size(p, 64) <= 64
        assert Plan.from_json(p.to_json()) == p

    def test_closed_form_and_candidates_on_a_machine(self, spec):
        report = plan_machine(Profile.from_dict(synthetic_profile_dict()), strategies=(spec.name,), simulate=False)
        mine = [c for c in report.candidates if c.plan.strategy == spec.name]
        assert mine or spec.baseline or not spec.planned  # SGD is always there
        for c in mine:
            assert math.isfinite(c.closed_form_seconds) and c.closed_form_seconds > 0
            # (the objective's value of its share for a new task, *the strategy's own fidelity)
            assert c.fidelity == (c.share.objective(report.objective_name), *spec.fidelity(c.plan, report.batch_size))
            assert c.share == share_model().share(c.plan, report.batch_size, report.base_optimizer)

    def test_simulator_iteration(self, spec):
        cm = CostModel(Profile.from_dict(synthetic_profile_dict()))
        p = self.make_plan(spec, descent_device="cpu:0", batch_size=64)
        r = simulate(p, cm, iterations=60, jitter=False, steady_state=False)
        assert r.simulated_iterations == 60 and r.iteration_seconds["mean"] > 0
        sgd = simulate(Plan(strategies.SGD, "cpu:0", batch_size=64), cm, iterations=60, jitter=False, steady_state=False)
        assert r.iteration_seconds["mean"] >= sgd.iteration_seconds["mean"] * (1 - 1e-9)  # never faster than SGD

    # ---- the rule -----------------------------------------------------------------------------
    def test_threads_equal_the_inline_reference_bit_for_bit(self, spec, deterministic):
        p = self.make_plan(spec)
        ref, ref_losses, _ = _train(p, "inline", self.steps)
        got, losses, stats = _train(p, ThreadedExecutor(share="concurrent"), self.steps)
        assert torch.equal(torch.stack(losses), torch.stack(ref_losses)) and torch.equal(flat(got), flat(ref))
        assert stats["steps"] == self.steps

    def test_resume_continues_exactly(self, spec, deterministic):
        n, half = self.steps, self.steps // 2
        p, data = self.make_plan(spec), batches(n)
        whole = mlp(bn=True)
        with AutoSAM(whole, loss_fn, plan=p, executor="inline", seed=7, total_steps=n, **SGD_KW) as opt:
            whole_losses = _steps(opt, data, 0, n)
        first = mlp(bn=True)
        with AutoSAM(first, loss_fn, plan=p, executor="inline", seed=7, total_steps=n, **SGD_KW) as opt:
            losses = _steps(opt, data, 0, half)
            state = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
        resumed = mlp(seed=3, bn=True)  # other initial values: everything must come from the checkpoint
        resumed.load_state_dict(state["model"])
        with AutoSAM(resumed, loss_fn, plan=p, executor="inline", seed=99, **SGD_KW) as opt:
            opt.load_state_dict(state["opt"])
            losses += _steps(opt, data, half, n)
            assert opt.stats()["steps"] == n
        assert torch.equal(torch.stack(losses), torch.stack(whole_losses)) and torch.equal(flat(resumed), flat(whole))

