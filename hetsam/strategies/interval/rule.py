"""Interval SAM's rule: ``sam_step`` when ``(t + 1) % k == 0``, ``base_step`` otherwise."""

from __future__ import annotations

from hetsam.strategies.sam.rule import SAMRule

__all__ = ["IntervalRule"]


class IntervalRule(SAMRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.k = ctx.plan.spec.option(ctx.plan, "k")
        self.sam_steps = 0

    def step(self, batch, upcoming, accumulate):
        if (self.t + 1) % self.k == 0:
            loss = self.sam_step(batch, accumulate)
            self.sam_steps += 1
        else:
            loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t, "sam_steps": self.sam_steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sam_steps = int(state.get("sam_steps", 0))

    def stats(self) -> dict:
        return {"sam_steps": self.sam_steps, "k": self.k}
