"""Late-phase SAM: the base optimizer for the first ``start`` share of the planned steps, SAM after.

SAM's gain comes mostly from the end of training (late-phase SAM, ICLR 2025), so the first
``floor(start · T)`` of T planned steps are plain steps and the rest SAM steps; AutoSAM needs T
(``AutoSAM(..., total_steps=T)``; the Lightning and Trainer integrations set it). Planned per step
on average: ``SGD + (1 − start)·(SAM − SGD)``, exact from the simulated baselines. The simulator
has no notion of T, so it spreads the same share of SAM steps evenly over the iterations
(``t`` is a SAM step when ``⌊(t + 1)(1 − start)⌋ > ⌊t (1 − start)⌋``): the mean per step over a
run is the same, the order is not.
"""

from __future__ import annotations

import math

from hetsam.strategies.registry import LATE_PHASE
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "LatePhaseSpec"]

_STARTS = (0.5, 0.75, 0.9)  # besides the start that meets the budget


class LatePhaseSpec(StrategySpec):
    name = LATE_PHASE
    title = "late-phase SAM"
    summary = "the base optimizer for the first `start` share of the steps, then SAM"
    options = (Option("start", float, 0.75, 0.0, 1.0, "the share of the planned steps before SAM starts"),)
    mixed_steps = True
    rule = "hetsam.strategies.late_phase.rule:LatePhaseRule"

    evidence_axis = "sam_fraction"
    guarded = True  # skipped perturbations

    def evidence_point(self, settings, base_optimizer=None):
        start = setting(settings, "start", 0.0, 1.0)
        return None if start is None else ((), 1.0 - start)

    def sam_fraction(self, plan) -> float:
        return 1.0 - self.option(plan, "start")

    def settings(self, plan, batch_size: int) -> str:
        return f"start={self.option(plan, 'start'):g}"

    def candidates(self, ctx):
        starts = set(_STARTS)
        if ctx.sam_extra > 0:
            share = (ctx.budget_seconds - ctx.sgd_seconds) / ctx.sam_extra  # SAM share that meets the budget
            if 0 < share < 1:
                starts.add(round(1.0 - math.floor(share * 1000) / 1000, 3))
        for start in sorted(starts):
            plan = ctx.plan(self.name, descent_device=ctx.fastest, options={"start": start})
            yield Proposal(plan, self.closed_form_seconds(ctx, plan), exact=True)

    def simulation(self, w):
        share = self.sam_fraction(w.plan)
        return lambda t: w.sam_step(t) if math.floor((t + 1) * share) > math.floor(t * share) else w.sgd_step(t)


SPEC = LatePhaseSpec()
