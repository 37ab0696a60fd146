"""The per-step rules that AutoSAM runs, one class per strategy of a Plan.

Each strategy implements :class:`Strategy`: ``step(batch, upcoming, accumulate)`` does one
whole update of the training model through a :class:`~hetsam.execution.runtime.Runtime`, and
hands the gradients that may run elsewhere to an executor as jobs. This module holds the rules
that need no second device (SGD, SAM, RST/G-RST); AsyncSAM and SAMPa live in their own modules.

Notation of DESIGN.md section 3: θ_t the parameters before step t, B_t its batch, g(θ; B) the
mean-loss gradient, e the SAM perturbation ρ T² ĝ / ‖T ĝ‖, ``base`` the base optimizer.

BatchNorm: in every strategy exactly one pass per step updates the running statistics, the
pass whose gradient the update applies (SGD: the only pass; SAM/RST/AsyncSAM: the descent pass
at θ_t + e; SAMPa: the pass for g_x). Every other pass uses batch statistics and leaves the
running statistics alone.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from hetsam.optim.kernels import mix_
from hetsam.optim.rst import SamTrials
from hetsam.execution.runtime import Runtime

__all__ = ["Strategy", "SGDStep", "SAMStep", "RSTStep"]


class Strategy:
    """One strategy's step rule (the contract every strategy passes).

    Attributes:
        name: the Plan strategy it implements.
        lookahead: how many upcoming batches ``step`` wants in ``upcoming`` (0: none).
        uses_executor: whether it sends jobs to an executor (needs a replica).
    """

    name = ""
    lookahead = 0
    uses_executor = False

    def __init__(self, rt: Runtime, executor: Any = None):
        self.rt = rt
        self.executor = executor
        self.t = 0  # steps taken

    def step(self, batch: Any, upcoming: Sequence[Any] | None, accumulate: int) -> Tensor:
        """One update; returns the step's loss as a detached 0-dim tensor."""
        raise NotImplementedError

    def base_step(self, batch: Any, accumulate: int) -> Tensor:
        """θ_{t+1} = base(θ_t, g(θ_t; B_t)); returns L(θ_t; B_t)."""
        loss = self.rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False)
        self.rt.apply()
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])

    def held_tensors(self) -> list[Tensor]:
        """Parameter-sized tensors the strategy holds between steps (memory accounting)."""
        return []

    def stats(self) -> dict:
        return {}


class SGDStep(Strategy):
    """θ_{t+1} = base(θ_t, g(θ_t; B_t)). Returns L(θ_t; B_t)."""

    name = "sgd"

    def step(self, batch, upcoming, accumulate):
        loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss


class SAMStep(Strategy):
    """SAM (Foret et al. 2021): e = ρ g(θ_t; B_t)/‖·‖, θ_{t+1} = base(θ_t, g(θ_t + e; B_t)).

    Both passes run on the training model; the ascent pass does not update BatchNorm
    statistics, the descent pass does. Returns L(θ_t; B_t) (the ascent pass's loss).
    """

    name = "sam"

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
        rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False)  # S · g(θ_t + e)
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


class RSTStep(SAMStep):
    """RST / G-RST (Zhao et al. 2022): a SAM step with probability p(t), an SGD step otherwise.

    The trial is drawn before any pass, from the strategy's own seeded generator. Returns
    L(θ_t; B_t) either way.
    """

    name = "rst"

    def __init__(self, rt: Runtime, executor: Any = None, *, p: Any = 0.5, alpha: float = 1.0, seed: int | None = None):
        super().__init__(rt, executor)
        self.trials = SamTrials(p, seed, name="sam_probability")
        self.alpha = alpha

    def step(self, batch, upcoming, accumulate):
        if self.trials.draw():
            loss = self.sam_step(batch, accumulate, self.alpha)
        else:
            loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t, "trials": self.trials.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trials.load_state_dict(state["trials"])

    def stats(self) -> dict:
        return {"steps": self.trials.steps, "sam_steps": self.trials.sam_steps, "seed": self.trials.seed}
