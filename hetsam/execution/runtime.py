"""The training model's side of a step: passes, the climb, the base step, and job building.

:class:`Runtime` gathers what every AutoSAM strategy does on the descent device (the calling
thread): gradient passes through :func:`~hetsam.execution.passes.compute_gradient`, the SAM
climb and restore through one :class:`~hetsam.optim.kernels.Perturbation` (the single
backup copy of θ), the base optimizer step (through the ``GradScaler`` when AMP uses one), and
the :class:`~hetsam.execution.jobs.GradJob` s that strategies hand to an executor.

Gradient convention with a ``GradScaler`` (loss scale S, a power of two): after a descent pass
``p.grad`` holds S · g; ascent gradients (and job results) are unscaled before they are used, so
the perturbation norm is taken on the true gradient. Rules that mix an unscaled gradient into
``p.grad`` (G-RST, SAMPa) multiply it by S first; :meth:`Runtime.apply` then lets the scaler
unscale, skip a step with inf/NaN, and update S.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from hetsam.optim.kernels import AscentGroup, Perturbation
from hetsam.execution.passes import AmpSpec, compute_gradient, norm_layers
from hetsam.execution.jobs import GradJob

__all__ = ["Runtime"]


class Runtime:
    """Descent-side operations shared by the AutoSAM strategies (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn: Callable, base: torch.optim.Optimizer, *, rho: float,
                 adaptive: bool = False, amp: AmpSpec | None = None, scaler: Any = None,
                 local_model: nn.Module | None = None):
        self.model = model
        # the model without a DDP wrapper (hetsam.execution.distributed): per-rank passes and jobs use it
        self.local_model = model if local_model is None else local_model
        self.loss_fn = loss_fn
        self.base = base
        self.rho = rho
        self.adaptive = adaptive
        self.amp = amp
        self.scaler = scaler
        self.layers = norm_layers(model)
        self.perturbation = Perturbation("AutoSAM")
        self._scale: float | None = None  # S for the current step

    @property
    def params(self) -> list[Tensor]:
        """The trainable parameters: the base optimizer's groups, in order."""
        return [p for group in self.base.param_groups for p in group["params"]]

    def loss_scale(self) -> float | None:
        """The current AMP loss scale S, or None without an (enabled) ``GradScaler``.

        Read once per step (it changes only in :meth:`apply`); ``scaler.scale`` rather than
        ``get_scale`` so the scaler initialises its state as ``scaler.step`` expects.
        """
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        if self._scale is None:
            device = self.params[0].device
            self._scale = float(self.scaler.scale(torch.ones((), device=device)))
        return self._scale

    # ---- passes on the training model -------------------------------------------------------
    def gradient(self, batch: Any, *, accumulate: int, update_stats: bool, unscale: bool, local: bool = False) -> Tensor:
        """``p.grad`` ← g(θ; B) at the model's current θ (S · g unless ``unscale``); returns the loss.

        ``local``: through ``local_model``, so under DDP the gradient stays this rank's own (no all-reduce).
        """
        return compute_gradient(
            self.local_model if local else self.model, self.loss_fn, batch, self.params, accumulate=accumulate, amp=self.amp,
            loss_scale=self.loss_scale(), unscale=unscale, update_stats=update_stats, layers=self.layers,
        )

    def release_grads(self) -> None:
        """``p.grad = None``: the last step's gradients are not needed once it has been applied."""
        for p in self.params:
            p.grad = None

    def take_grads(self) -> list[Tensor | None]:
        """Detach the gradients from the parameters without copying (``p.grad`` becomes None)."""
        params = self.params
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        return grads

    # ---- the climb ----------------------------------------------------------------------------
    def save(self) -> None:
        """Back up θ (the one extra parameter copy)."""
        self.perturbation.save(self.params)

    def restore(self) -> None:
        """θ ← the backup (exact)."""
        self.perturbation.restore()

    def ascent_group(self, grads: Sequence[Tensor | None]) -> AscentGroup:
        """The parameters that have an ascent gradient in ``grads`` (aligned with ``params``)."""
        pairs = [(p, g) for p, g in zip(self.params, grads) if g is not None]
        return AscentGroup([p for p, _ in pairs], [g for _, g in pairs], self.rho, self.adaptive)

    def climb(self, grads: Sequence[Tensor | None], *, scratch: bool, norm: Tensor | None = None) -> bool:
        """θ ← θ + ρ T² ĝ / ‖T ĝ‖ along the unscaled ``grads`` (aligned with ``params``).

        Returns False (and leaves θ alone) when ĝ is zero or non-finite; see ``Perturbation``.
        """
        return self.perturbation.perturb([self.ascent_group(grads)], scratch=scratch, norm=norm)

    # ---- the update ---------------------------------------------------------------------------
    def apply(self) -> None:
        """The base optimizer step on ``p.grad`` (through the GradScaler when there is one)."""
        if self.loss_scale() is not None:
            self.scaler.step(self.base)
            self.scaler.update()
            self._scale = None
        else:
            self.base.step()

    # ---- jobs for an executor -----------------------------------------------------------------
    def job(self, key: int, kind: str, batch: Any, *, accumulate: int) -> GradJob:
        """A job at the model's *current* parameter values (live tensors; see ``GradJob``)."""
        return GradJob(
            key=key,
            kind=kind,
            batch=batch,
            params=self.params,
            buffers=list(self.local_model.buffers()),
            training=tuple(m.training for m in self.local_model.modules()),  # aligned with a replica of it
            loss_scale=self.loss_scale(),
            accumulate=accumulate,
        )

    def held_tensors(self) -> list[Tensor]:
        return self.perturbation.buffers()
