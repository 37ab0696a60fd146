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

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hetsam.execution.jobs import GradJob
from hetsam.execution.passes import AmpSpec, compute_gradient, norm_layers
from hetsam.optim.hooks import no_global_step_hooks
from hetsam.optim.kernels import AscentGroup, Perturbation

__all__ = ["Runtime"]


class Runtime:
    """Descent-side operations shared by the AutoSAM strategies (see the module docstring).

    The perturbation follows each parameter group's ``rho``, ``adaptive`` and ``eta`` (the
    base optimizer's groups carry them, as ``hetsam.SAM``'s do). ``max_grad_norm`` clips the
    gradient the base optimizer applies. ``pre_update`` (set for one step) is called right before
    the base update, with the update gradient in ``p.grad``; ``descent`` (set for one step) computes
    the update pass itself (a framework's closure: forward and backward at the current θ).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, base: torch.optim.Optimizer, *, amp: AmpSpec | None = None,
                 scaler: Any = None, local_model: nn.Module | None = None, max_grad_norm: float | None = None):
        self.model = model
        # the model without a DDP wrapper (hetsam.execution.distributed): per-rank passes and jobs use it
        self.local_model = model if local_model is None else local_model
        self.loss_fn = loss_fn
        self.base = base
        self.amp = amp
        self.scaler = scaler
        self.max_grad_norm = max_grad_norm
        self.layers = norm_layers(model)
        # the module tree, walked once (a replica copies it once too): every job reads its train/eval flags
        self._modules = list(self.local_model.modules())
        self.perturbation = Perturbation("AutoSAM")
        self._scale: float | None = None  # S for the current step
        self._positions: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (param ids, positions)
        self.pre_update: Callable[[], Any] | None = None
        self.descent: Callable[[], Any] | None = None
        self.closure_result: Any = None
        self.outputs: Any = None  # what loss_fn returned beside the loss, in the update pass
        self.grad_norm: Tensor | float | None = None  # the update gradient's norm before clipping (read by stats())
        self.pass_seconds: float | None = None  # wall time of the last update pass (ascent timeouts)

    @property
    def params(self) -> list[Tensor]:
        """The trainable parameters: the base optimizer's groups, in order."""
        return [p for group in self.base.param_groups for p in group["params"]]

    @property
    def adaptive(self) -> bool:
        """Whether any group scales its perturbation (ASAM)."""
        return any(group.get("adaptive", False) for group in self.base.param_groups)

    def loss_scale(self) -> float | None:
        """The current AMP loss scale S, or None without an (enabled) ``GradScaler``.

        Read once per step (it changes only in :meth:`apply`); ``scaler.scale`` rather than
        ``get_scale`` so the scaler initialises its state as ``scaler.step`` expects.
        """
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        if self._scale is None:
            device = self.params[0].device
            self._scale = float(self.scaler.scale(torch.ones((), device=device)))  # the GradScaler's one host sync a step
        return self._scale

    # ---- passes on the training model -------------------------------------------------------
    def gradient(self, batch: Any, *, accumulate: int, update_stats: bool, unscale: bool, local: bool = False,
                 update: bool = False) -> Tensor:
        """``p.grad`` ← g(θ; B) at the model's current θ (S · g unless ``unscale``); returns the loss.

        ``local``: through ``local_model``, so under DDP the gradient stays this rank's own (no
        all-reduce). ``update``: this is the update pass on the step's own batch, which a
        ``descent`` closure computes when one is set; its ``loss_fn`` outputs are kept.
        """
        if update and self.descent is not None:
            for p in self.params:
                p.grad = None
            with torch.enable_grad():
                self.closure_result = self.descent()
            loss = self.closure_result
            return loss.detach().float() if isinstance(loss, Tensor) else torch.tensor(float("nan"))
        start = time.perf_counter()
        loss, outputs = compute_gradient(
            self.local_model if local else self.model, self.loss_fn, batch, self.params, accumulate=accumulate,
            amp=self.amp, loss_scale=self.loss_scale(), unscale=unscale, update_stats=update_stats, layers=self.layers,
            outputs=update,
        )
        if update:
            self.outputs = outputs
            self.pass_seconds = time.perf_counter() - start
        return loss

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

    def ascent_groups(self, grads: Sequence[Tensor | None]) -> list[AscentGroup]:
        """One :class:`AscentGroup` per parameter group, over the parameters that have an ascent
        gradient in ``grads`` (aligned with ``params``; shorter when groups were added since)."""
        groups, offset = [], 0
        for group in self.base.param_groups:
            params = group["params"]
            pairs = [(p, g) for p, g in zip(params, grads[offset:offset + len(params)]) if g is not None]
            offset += len(params)
            groups.append(AscentGroup([p for p, _ in pairs], [g for _, g in pairs], group["rho"],
                                      group.get("adaptive", False), group.get("eta", 0.0)))
        return groups

    def climb(self, grads: Sequence[Tensor | None], *, scratch: bool, norm: Tensor | None = None) -> bool:
        """θ ← θ + ρ T² ĝ / ‖T ĝ‖ along the unscaled ``grads`` (aligned with ``params``).

        Returns False (and leaves θ alone) when ĝ is zero or non-finite; see ``Perturbation``.
        """
        return self.perturbation.perturb(self.ascent_groups(grads), scratch=scratch, norm=norm)

    # ---- the update ---------------------------------------------------------------------------
    def apply(self) -> None:
        """The base optimizer step on ``p.grad``: first the ``pre_update`` hook, then (after
        unscaling) clipping to ``max_grad_norm``, then the step, through the GradScaler when there
        is one (which skips a step with inf/NaN)."""
        if self.pre_update is not None:
            with torch.enable_grad():
                self.closure_result = self.pre_update()
        scaled = self.loss_scale() is not None
        if self.max_grad_norm is not None:
            if scaled:
                self.scaler.unscale_(self.base)
            grads = [p for p in self.params if p.grad is not None]
            # kept as a tensor: no host sync in the step (stats() reads it)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(grads, self.max_grad_norm).detach() if grads else 0.0
        with no_global_step_hooks():  # they fire for AutoSAM.step, once (hetsam/optim/hooks.py)
            if scaled:
                self.scaler.step(self.base)
            else:
                self.base.step()
        if scaled:
            self.scaler.update()
            self._scale = None

    # ---- jobs for an executor -----------------------------------------------------------------
    def _job_positions(self, params: list[Tensor]) -> tuple[int, ...]:
        """Where ``params`` sit in ``local_model.parameters()`` (cached until the groups change)."""
        key = tuple(id(p) for p in params)
        if self._positions is None or self._positions[0] != key:
            index = {id(p): i for i, p in enumerate(self.local_model.parameters())}
            self._positions = (key, tuple(index[id(p)] for p in params))
        return self._positions[1]

    def job(self, key: int, kind: str, batch: Any, *, accumulate: int) -> GradJob:
        """A job at the model's *current* parameter values (live tensors; see ``GradJob``)."""
        params = self.params
        return GradJob(
            key=key,
            kind=kind,
            batch=batch,
            params=params,
            buffers=list(self.local_model.buffers()),
            training=tuple(m.training for m in self._modules),  # aligned with a replica of it
            loss_scale=self.loss_scale(),
            accumulate=accumulate,
            positions=self._job_positions(params),
        )

    def held_tensors(self) -> list[Tensor]:
        return self.perturbation.buffers()
