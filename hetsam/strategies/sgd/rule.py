"""SGD's rule: θ_{t+1} = base(θ_t, g(θ_t; B_t)). Returns L(θ_t; B_t)."""

from __future__ import annotations

from hetsam.strategies.rule import StrategyRule

__all__ = ["SGDRule"]


class SGDRule(StrategyRule):
    def step(self, batch, upcoming, accumulate):
        loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss
