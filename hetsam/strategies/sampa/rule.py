"""SAMPa-λ: SAM's two gradients in parallel, through an optimistic auxiliary sequence.

Xie et al., "SAMPa: Sharpness-aware Minimization Parallelized" (NeurIPS 2024); semantics of the
official ``LIONS-EPFL/SAMPa`` ``train.py``, as the README ("SAMPa") writes them. Keep g_y, the
gradient at the auxiliary point (none before the first step). At step t:

    x̃_t     = x_t + ρ · g_y / ‖g_y‖                          (ASAM scaling when adaptive)
    y_{t+1} = x_t − η · (g_y + wd · x_t + μ · buf_t)          (SGD with a momentum buffer)
            = x_t − η · g_y                                    (any other base optimizer, or no buffer yet)
    g_x     = g(x̃_t; B_{t−1})       on the training model      (B_{−1} = B_0)
    g_y'    = g(y_{t+1}; B_t)        a job for the executor     (runs at the same time as g_x)
    x_{t+1} = base(x_t, (1 − λ) · g_x + λ · g_y');   then g_y ← g_y'

η, wd, μ are each parameter group's ``lr``, ``weight_decay`` and ``momentum`` (the official code
uses the first group's lr for all groups; they agree for one group). At t = 0, g_y is absent and
SGD has no momentum buffer yet, so x̃_0 = y_1 = x_0, as in the official code. λ = 0 works: g_y is
kept itself rather than recovered from the mixed gradient by dividing by λ as the official code
does. The batches: g_x is taken on the previous batch, which g_y was computed on.

A non-finite g_y' (or loss of its pass, which ``step`` returns) never enters the update: under
AutoSAM the step applies nothing (``stats()["skipped_updates"]``), and either way g_y is dropped, so
the next step is not perturbed (``stats()["dropped_g_y"]``).

Only the g_x pass updates BatchNorm running statistics (the official code keeps the model of
the device that computes g_x). ``step`` returns L(y_{t+1}; B_t), the loss of the g_y' pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from hetsam.execution.jobs import SAMPA_Y
from hetsam.optim.kernels import AscentGroup, ascent_norm, mix_, optimistic_point_
from hetsam.optim.state_checks import aligned, counter, keys
from hetsam.strategies.rule import StrategyRule

__all__ = ["SAMPaRule", "optimistic_point_"]


class SAMPaRule(StrategyRule):
    """SAMPa-λ; see the module docstring for the rule."""

    def __init__(self, ctx, *, executor: bool = True):
        super().__init__(ctx)
        self.executor = ctx.executor() if executor else None
        self.lam = ctx.plan.options["sampa_lambda"]
        self.g_y: list[Tensor | None] | None = None
        self.g_y_norm: Tensor | None = None  # ‖g_y‖, found when g_y arrived (reused by a SAM climb)
        self.prev_batch: Any = None
        self.dropped = 0  # non-finite g_y' left out of the update

    def step(self, batch, upcoming, accumulate):
        rt, ex = self.rt, self.executor
        prev = batch if self.prev_batch is None else self.prev_batch  # B_{t−1}; B_{−1} = B_0
        g_y, self.g_y = self.g_y, None
        rt.save()  # x_t
        moved = optimistic_point_(rt.base, g_y)  # params: y_{t+1}
        future = ex.submit(rt.job(self.t, SAMPA_Y, batch, accumulate=accumulate))  # g_y' = g(y_{t+1}; B_t)
        if moved:
            rt.restore()  # params: x_t
        norm = None if rt.adaptive else self.g_y_norm
        climbed = g_y is not None and rt.climb(g_y, scratch=True, norm=norm)  # params: x̃_t
        del g_y
        rt.gradient(prev, accumulate=accumulate, update_stats=True, unscale=False, update=True)  # p.grad = S · g_x
        if climbed:
            rt.restore()  # params: x_t
        rt.perturbation.release()
        result = ex.wait(future)
        scale = rt.loss_scale()
        self.g_y_norm = self._norm(result.grads)
        finite = self.g_y_norm is not None
        if finite or scale is not None:  # with a GradScaler a non-finite g_y' makes the scaler skip the step
            mix_([p.grad for p in rt.params], result.grads, 1.0 - self.lam, self.lam * (scale or 1.0))
        if hasattr(rt, "require"):  # AutoSAM's runtime: a non-finite loss of the g_y' pass applies nothing
            rt.require("the loss of the g_y' pass", loss=result.loss)
        rt.apply()  # x_{t+1} = base(x_t, (1 − λ) g_x + λ g_y')
        self.g_y = result.grads if finite else None  # g_y ← g_y'
        self.prev_batch = batch
        self.t += 1
        return torch.tensor(result.loss)

    def _norm(self, grads: Sequence[Tensor | None]) -> Tensor | None:
        """‖g_y'‖, or None when g_y' is not finite: then it is dropped (counted), and under AutoSAM's
        runtime (``require``) the step's update applies nothing (the pair rule's too)."""
        norm = ascent_norm([AscentGroup([], [g for g in grads if g is not None], 0.0)])
        if norm is None or math.isfinite(float(norm)):
            return norm
        self.dropped += 1
        if hasattr(self.rt, "require"):
            self.rt.require("g_y' (the gradient at the auxiliary point y_{t+1})", finite=False)
        return None

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"t": self.t, "g_y": None if self.g_y is None else list(self.g_y), "prev_batch": self.prev_batch,
                "dropped": self.dropped}

    def check_state(self, state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads
        (the previous batch is the user's data: anything goes)."""
        keys(state, where, ("t", "g_y", "prev_batch"), ("dropped",))
        counter(state["t"], f"{where}['t']")
        if state["g_y"] is not None:
            aligned(state["g_y"], self.rt.params, f"{where}['g_y']")
        if "dropped" in state:
            counter(state["dropped"], f"{where}['dropped']")

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        g_y = state["g_y"]
        params = self.rt.params
        self.g_y = None if g_y is None else [None if g is None else g.to(p.device) for g, p in zip(g_y, params)]
        self.g_y_norm = None  # recomputed by the next climb
        self.prev_batch = state["prev_batch"]
        self.dropped = int(state.get("dropped", 0))

    def held_tensors(self):
        return [g for g in self.g_y or () if g is not None]

    def stats(self) -> dict:
        return {"dropped_g_y": self.dropped}
