"""Interval SAM's rule: ``sam_step`` when ``(t + 1) % k == 0``, ``base_step`` otherwise."""

from __future__ import annotations

from hetsam.strategies.sam.rule import ScheduledSAMRule

__all__ = ["IntervalRule"]


class IntervalRule(ScheduledSAMRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.k = ctx.plan.spec.option(ctx.plan, "k")

    def is_sam_step(self, t: int) -> bool:
        return (t + 1) % self.k == 0

    def stats(self) -> dict:
        return {**super().stats(), "k": self.k}
