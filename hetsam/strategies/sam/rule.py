"""SAM's rule (Foret et al. 2021): e = ρ g(θ_t; B_t)/‖·‖, θ_{t+1} = base(θ_t, g(θ_t + e; B_t)).

Both passes run on the training model; the ascent pass does not update BatchNorm statistics,
the descent pass does. Returns L(θ_t; B_t) (the ascent pass's loss).
"""

from __future__ import annotations

import abc

from torch import Tensor

from hetsam.optim.kernels import mix_
from hetsam.optim.state_checks import counter, keys
from hetsam.strategies.rule import StrategyRule

__all__ = ["SAMRule", "ScheduledSAMRule"]


class SAMRule(StrategyRule):
    def sam_step(self, batch, accumulate: int, alpha: float = 1.0) -> Tensor:
        """A SAM step; with α < 1 the update gradient is (1−α) g(θ_t) + α g(θ_t + e) (G-RST)."""
        rt = self.rt
        # under DDP the ascent is per rank (local: no all-reduce); G-RST mixes g0 into the update,
        # so there it goes through DDP like the update gradient (hetsam.execution.distributed)
        loss = rt.gradient(batch, accumulate=accumulate, update_stats=False, unscale=True, local=alpha == 1.0)
        g0 = rt.take_grads()  # g(θ_t; B_t), unscaled
        rt.save()
        climbed = rt.climb(g0, scratch=alpha == 1.0)  # θ_t + e (g0 becomes e when it is not needed)
        if alpha == 1.0:
            del g0  # free e before the descent pass allocates its gradients
        rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False, update=True)  # S · g(θ_t + e)
        if climbed:
            rt.restore()
        rt.perturbation.release()
        if alpha != 1.0:
            scale = rt.loss_scale() or 1.0
            mix_([p.grad for p in rt.params], g0, alpha, (1.0 - alpha) * scale)
        rt.apply()
        return loss

    def step(self, batch, upcoming, accumulate):
        loss = self.sam_step(batch, accumulate)
        self.t += 1
        return loss

    def check_state(self, state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads."""
        counter(keys(state, where, ("t",))["t"], f"{where}['t']")


class ScheduledSAMRule(SAMRule):
    """A SAM step where ``is_sam_step(t)`` says so, the base optimizer's step otherwise (interval,
    late-phase); counts the SAM steps, which its checkpoints carry."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.sam_steps = 0

    @abc.abstractmethod
    def is_sam_step(self, t: int) -> bool:
        """Whether step t is a SAM step."""

    def step(self, batch, upcoming, accumulate):
        if self.is_sam_step(self.t):
            loss = self.sam_step(batch, accumulate)
            self.sam_steps += 1
        else:
            loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t, "sam_steps": self.sam_steps}

    def check_state(self, state, where: str) -> None:
        keys(state, where, ("t",), ("sam_steps",))
        t = counter(state["t"], f"{where}['t']")
        if "sam_steps" in state:
            counter(state["sam_steps"], f"{where}['sam_steps']", high=t)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sam_steps = int(state.get("sam_steps", 0))

    def stats(self) -> dict:
        return {"sam_steps": self.sam_steps}
