"""Late-phase SAM's rule: ``base_step`` while ``t < ⌊start · T⌋``, ``sam_step`` from then on.

T is read at every step from the run's facts (``ctx.run.total_steps``: AutoSAM's ``total_steps``),
so a framework may set it after the optimizer was built; a run past T keeps taking SAM steps.
"""

from __future__ import annotations

import math

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.strategies.sam.rule import ScheduledSAMRule

__all__ = ["LatePhaseRule"]


class LatePhaseRule(ScheduledSAMRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.start = ctx.plan.spec.option(ctx.plan, "start")

    def first_sam_step(self) -> int:
        total = self.ctx.run.total_steps
        if total is None:
            raise HetsamInputError("late_phase needs the number of planned steps: AutoSAM(..., total_steps=T) or "
                                   "opt.total_steps = T before the first step")
        return math.floor(self.start * _checks.integer(total, "total_steps", low=1, high=1 << 48))

    def is_sam_step(self, t: int) -> bool:
        return t >= self.first_sam_step()

    def stats(self) -> dict:
        total = self.ctx.run.total_steps
        return {**super().stats(), "total_steps": total,
                "first_sam_step": None if total is None else math.floor(self.start * total)}
