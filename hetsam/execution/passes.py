"""One gradient pass g(θ; B), exactly the same code wherever it runs.

Every gradient hetsam computes, on the training model (descent device) or on an executor's
replica (ascent device, possibly another thread), goes through :func:`compute_gradient`, under
the intra-op thread count of its role (:func:`hetsam.execution.binding.intra_op_threads`). That is what lets the inline
executor and a threaded executor do bit-identical arithmetic on CPU.

Cross-cutting rules implemented here:

* **Gradient accumulation**: ``accumulate=k`` splits the batch into ``min(k, n)`` contiguous
  micro-batches and backpropagates ``(n_i / n) · loss_i`` for each, so the accumulated gradient
  is the whole-batch mean-loss gradient (for a mean-reduced loss).
* **AMP**: the forward runs under ``torch.autocast(device_type, dtype)`` when an autocast dtype
  is given; the backward runs outside it. With a loss scale S (``GradScaler``) the backward is
  of ``S · loss``; :func:`compute_gradient` can unscale (``· 1/S``) before returning.
* **BatchNorm**: ``update_stats=False`` (every ascent pass) runs normalisation layers that are
  in training mode on batch statistics as usual, but leaves their running statistics and
  ``num_batches_tracked`` untouched. Only the pass that computes the update gradient
  (``update_stats=True``) updates them, so exactly one pass per step does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hetsam.errors import HetsamInputError
from hetsam.execution.batches import samples, split_batch
from hetsam.optim.batchnorm import frozen_running_stats, norm_layers

__all__ = ["AmpSpec", "compute_gradient", "frozen_running_stats", "norm_layers"]

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass(frozen=True)
class AmpSpec:
    """Autocast settings of a pass: ``torch.autocast(device_type, dtype)``."""

    device_type: str
    dtype: torch.dtype

    def context(self):
        return torch.autocast(self.device_type, dtype=self.dtype)


def compute_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    params: Sequence[Tensor],
    *,
    accumulate: int = 1,
    amp: AmpSpec | None = None,
    loss_scale: float | None = None,
    unscale: bool = False,
    update_stats: bool = True,
    layers: Sequence[nn.Module] = (),
    outputs: bool = False,
) -> tuple[Tensor, Any]:
    """Set ``p.grad`` = g(θ; B) (times S if ``loss_scale`` and not ``unscale``) for ``params``.

    ``loss_fn`` returns the loss, or ``(loss, outputs)``. ``layers`` are the model's
    :func:`norm_layers`, frozen when ``update_stats`` is False. Returns the mean loss over the
    batch as a detached 0-dim float32 tensor (no host sync), and with ``outputs`` what ``loss_fn``
    returned beside the loss (a list, one per micro-batch, when ``accumulate`` > 1), else None.
    """
    if samples(batch) == 0:
        raise HetsamInputError("the batch has 0 samples; every step needs at least one (drop empty batches)")
    for p in params:
        p.grad = None
    total: Tensor | None = None
    kept: list = []
    frozen = contextlib.nullcontext() if update_stats else frozen_running_stats(layers)
    with torch.enable_grad(), frozen:
        for chunk, weight in split_batch(batch, accumulate):
            with amp.context() if amp is not None else contextlib.nullcontext():
                loss, extra = _split_output(loss_fn(model, chunk))
            objective = loss if weight == 1.0 else loss * weight
            if loss_scale is not None:
                objective = objective * loss_scale
            objective.backward()
            if outputs:
                kept.append(extra)
            part = loss.detach().float() if weight == 1.0 else loss.detach().float() * weight  # x·1 = x: no kernel
            total = part if total is None else total + part
    if unscale and loss_scale is not None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / loss_scale)
    return total, (None if not outputs else kept[0] if len(kept) == 1 else kept)


def _split_output(value: Any) -> tuple[Tensor, Any]:
    """``loss`` or ``(loss, outputs)`` → (loss, outputs or None); the loss must be a scalar tensor."""
    extra = None
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], Tensor):
        value, extra = value
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
        raise HetsamInputError(
            f"loss_fn(model, batch) must return a scalar tensor or (loss, outputs), got {type(value).__name__}{shape}"
        )
    return value, extra
