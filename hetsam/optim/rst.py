"""RST and G-RST: SAM with probability p(t), the base step otherwise.

Zhao, Zhang and Hu, "Randomized Sharpness-Aware Training for Boosting Computational
Efficiency in Deep Learning" (2022). At each step t:

    u_t ~ U[0, 1) from a dedicated, seeded ``torch.Generator``
    if u_t < p(t):  θ_{t+1} = base(θ_t, (1 − α) · g(θ_t; B_t) + α · g(θ_t + e; B_t))   (a SAM trial;
                    α = 1 is RST, α < 1 is G-RST; e is SAM's perturbation)
    else:           θ_{t+1} = base(θ_t, g(θ_t; B_t))

p is a number, a callable ``t -> p`` or a schedule (:mod:`hetsam.optim.schedules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.optim.hooks import no_global_step_hooks
from hetsam.optim.kernels import mix_
from hetsam.optim.sam import SAM
from hetsam.optim.schedules import make_schedule
from hetsam.optim.state_checks import counter, generator_state, keys

__all__ = ["RST", "SamTrials", "check_alpha"]


def check_alpha(alpha) -> float:
    """G-RST's α must be a number in [0, 1] (α = 1 is plain RST)."""
    return _checks.number(alpha, "alpha", low=0.0, high=1.0, hint="1 is RST, less is G-RST")


class SamTrials:
    """The Bernoulli trials of RST: ``draw()`` is True (take a SAM step) with probability p(t).

    Uses its own CPU ``torch.Generator`` seeded with ``seed`` (a fresh random seed when None,
    recorded in ``seed``), so the draws do not disturb, and are not disturbed by, the global RNG.
    Counts ``steps`` (trials drawn) and ``sam_steps`` (trials that chose SAM).
    """

    def __init__(self, p: Any = 0.5, seed: int | None = None, *, name: str = "p"):
        self.schedule = make_schedule(p, name)
        self.schedule(0)  # validates a constant or a callable's first value now
        _checks.optional(_checks.integer, seed, "seed", low=0, high=2**63 - 1, hint="or None")
        self.generator = torch.Generator(device="cpu")
        if seed is None:
            seed = self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.seed = seed
        self.steps = 0
        self.sam_steps = 0

    def draw(self) -> bool:
        """One trial at t = ``steps``: u_t < p(t)."""
        p = self.schedule(self.steps)
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        chosen = u < p
        self.steps += 1
        self.sam_steps += int(chosen)
        return chosen

    def state_dict(self) -> dict:
        return {"seed": self.seed, "steps": self.steps, "sam_steps": self.sam_steps,
                "generator": self.generator.get_state()}

    @staticmethod
    def check_state(state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads."""
        keys(state, where, ("seed", "steps", "sam_steps", "generator"))
        counter(state["seed"], f"{where}['seed']", high=2**64 - 1)  # Generator.seed() draws 64 bits
        steps = counter(state["steps"], f"{where}['steps']")
        counter(state["sam_steps"], f"{where}['sam_steps']", high=steps)
        generator_state(state["generator"], f"{where}['generator']")

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.steps = int(state["steps"])
        self.sam_steps = int(state["sam_steps"])
        self.generator.set_state(state["generator"])


class RST(SAM):
    """Randomized SAM: a SAM trial with probability p(t), the base step otherwise (G-RST with α < 1).

    Args:
        params, base_optimizer, rho, adaptive, **base_kwargs: as for :class:`hetsam.SAM`.
        p: the SAM probability: a number in [0, 1], a callable ``t -> p``, a schedule from
            :mod:`hetsam.optim.schedules`, or a mapping such as
            ``{"schedule": "cosine", "start": 1.0, "end": 0.2, "steps": 10000}``.
        alpha: G-RST's mixing weight α in [0, 1]; α = 1 is RST.
        seed: seed of the trials' own generator (None: a fresh one, kept in ``seed``).

    ``step(closure)`` computes g(θ_t; B_t) with the closure, draws the trial, and on a SAM trial
    climbs and calls the closure again at θ_t + e. It returns the loss at θ_t. ``steps`` and
    ``sam_steps`` count the trials and the SAM steps; ``state_dict()`` carries them and the
    generator state, so a resumed run draws the same trials.
    """

    def __init__(self, params, base_optimizer, rho: float = 0.05, p: Any = 0.5, alpha: float = 1.0,
                 seed: int | None = None, adaptive: bool = False, **base_kwargs):
        self.trials = SamTrials(p, seed)
        self.alpha = check_alpha(alpha)
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, **base_kwargs)

    @property
    def steps(self) -> int:
        return self.trials.steps

    @property
    def sam_steps(self) -> int:
        return self.trials.sam_steps

    @property
    def seed(self) -> int:
        return self.trials.seed

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        if closure is None:
            raise HetsamInputError("RST.step() needs a closure that computes the loss and calls backward()")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()  # g(θ_t; B_t)
        if not self.trials.draw():
            with no_global_step_hooks():  # they fired for this step() already
                self.base_optimizer.step()  # base step on g(θ_t; B_t)
            return loss
        if self.alpha == 1.0:
            self.first_step(zero_grad=True)
            closure()  # g(θ_t + e; B_t)
        else:
            self.first_step(zero_grad=False)
            params = [p for g in self.param_groups for p in g["params"]]
            g0 = [p.grad for p in params]  # keep g(θ_t; B_t) without copying it
            self.zero_grad()
            closure()  # g(θ_t + e; B_t)
            mix_([p.grad for p in params], g0, self.alpha, 1.0 - self.alpha)  # α g_e + (1−α) g_0
        with no_global_step_hooks():
            self.second_step()
        return loss

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["trials"] = self.trials.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict):
            raise HetsamInputError(f"state_dict must be a dict, not a {type(state_dict).__name__}")
        state_dict = dict(state_dict)
        trials = state_dict.pop("trials", None)
        if trials is not None:  # checked before anything loads
            SamTrials.check_state(trials, "state_dict['trials']")
        super().load_state_dict(state_dict)
        if trials is not None:
            self.trials.load_state_dict(trials)
