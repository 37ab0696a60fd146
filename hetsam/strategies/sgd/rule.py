"""SGD's rule: θ_{t+1} = base(θ_t, g(θ_t; B_t)). Returns L(θ_t; B_t)."""

from __future__ import annotations

from hetsam.optim.state_checks import counter, keys
from hetsam.strategies.rule import StrategyRule

__all__ = ["SGDRule"]


class SGDRule(StrategyRule):
    def step(self, batch, upcoming, accumulate):
        loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss

    def check_state(self, state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads."""
        counter(keys(state, where, ("t",))["t"], f"{where}['t']")
