"""One gradient pass g(θ; B), exactly the same code wherever it runs.

Every gradient hetsam computes, on the training model (descent device) or on an executor's
replica (ascent device, possibly another thread), goes through :func:`compute_gradient`, under
the intra-op thread count of its role (:func:`intra_op_threads`). That is what lets the inline
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
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from hetsam.execution.batches import split_batch
from hetsam.errors import HetsamInputError

__all__ = [
    "AmpSpec",
    "compute_gradient",
    "frozen_running_stats",
    "intra_op_threads",
    "norm_layers",
]

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass(frozen=True)
class AmpSpec:
    """Autocast settings of a pass: ``torch.autocast(device_type, dtype)``."""

    device_type: str
    dtype: torch.dtype

    def context(self):
        return torch.autocast(self.device_type, dtype=self.dtype)


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` on the calling thread (``None``: as is).

    With the OpenMP backend the setting belongs to the calling thread, so a worker thread and
    the training thread each keep their own count.
    """
    if n is None or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """The normalisation layers that can track running statistics."""
    return [m for m in model.modules() if isinstance(m, (_BatchNorm, _InstanceNorm))]


@contextlib.contextmanager
def frozen_running_stats(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Batch statistics as usual, but no running-statistics update, inside the body.

    BatchNorm layers are switched to ``track_running_stats=False`` (no copy; PyTorch then
    normalises with the batch statistics and updates nothing). InstanceNorm updates its running
    buffers even so, so those (small) buffers are saved and copied back instead.
    """
    toggled: list[nn.Module] = []
    saved: list[tuple[Tensor, Tensor]] = []
    for m in layers:
        if not (m.training and m.track_running_stats):
            continue
        if isinstance(m, _BatchNorm):
            m.track_running_stats = False
            toggled.append(m)
        else:
            for b in (m.running_mean, m.running_var, m.num_batches_tracked):
                if b is not None:
                    saved.append((b, b.clone()))
    try:
        yield
    finally:
        for m in toggled:
            m.track_running_stats = True
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


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
) -> Tensor:
    """Set ``p.grad`` = g(θ; B) (times S if ``loss_scale`` and not ``unscale``) for ``params``.

    ``layers`` are the model's :func:`norm_layers`, frozen when ``update_stats`` is False.
    Returns the mean loss over the batch as a detached 0-dim float32 tensor (no host sync).
    """
    for p in params:
        p.grad = None
    total: Tensor | None = None
    frozen = contextlib.nullcontext() if update_stats else frozen_running_stats(layers)
    with torch.enable_grad(), frozen:
        for chunk, weight in split_batch(batch, accumulate):
            with amp.context() if amp is not None else contextlib.nullcontext():
                loss = loss_fn(model, chunk)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise HetsamInputError(
                    f"loss_fn(model, batch) must return a scalar tensor, got "
                    f"{type(loss).__name__}{'' if not isinstance(loss, Tensor) else f' of shape {tuple(loss.shape)}'}"
                )
            objective = loss if weight == 1.0 else loss * weight
            if loss_scale is not None:
                objective = objective * loss_scale
            objective.backward()
            part = loss.detach().float() * weight
            total = part if total is None else total + part
    if unscale and loss_scale is not None:
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, 1.0 / loss_scale)
    return total
