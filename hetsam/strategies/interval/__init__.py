"""Interval SAM (Composer's ``interval``): a SAM step on every k-th step, the base optimizer otherwise.

Step t (counted from 0) is a SAM step when ``(t + 1) % k == 0``, deterministically, so the first
SAM step is the k-th. Expected step: ``SGD + (SAM − SGD)/k`` exactly, so the planner takes it from
the simulated baselines, like RST's. Simulated: that same pattern of SAM and SGD iterations.
"""

from __future__ import annotations

import math

from hetsam.strategies.registry import INTERVAL
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "IntervalSpec"]

_KS = (2, 4, 10)  # besides the k that meets the budget


class IntervalSpec(StrategySpec):
    name = INTERVAL
    title = "SAM every k"
    summary = "SAM on every k-th step (Composer's interval), the base optimizer otherwise"
    options = (Option("k", int, 10, 1, 10_000, "a SAM step when (t + 1) % k == 0"),)
    mixed_steps = True
    rule = "hetsam.strategies.interval.rule:IntervalRule"

    evidence_axis = "sam_fraction"
    guarded = True  # skipped perturbations

    def evidence_point(self, settings, base_optimizer=None):
        k = setting(settings, "k", 1.0, 1e6)
        return None if k is None else ((), 1.0 / k)

    def sam_fraction(self, plan) -> float:
        return 1.0 / self.option(plan, "k")

    def candidates(self, ctx):
        ks = set(_KS)
        spare = ctx.budget_seconds - ctx.sgd_seconds
        if spare > 0 and ctx.sam_extra > 0:
            ks.add(max(1, min(10_000, math.ceil(ctx.sam_extra / spare))))  # the smallest k within the budget
        for k in sorted(ks):
            plan = ctx.plan(self.name, descent_device=ctx.fastest, options={"k": k})
            yield Proposal(plan, self.closed_form_seconds(ctx, plan), exact=True)

    def simulation(self, w):
        k = self.option(w.plan, "k")
        return lambda t: w.sam_step(t) if (t + 1) % k == 0 else w.sgd_step(t)


SPEC = IntervalSpec()
