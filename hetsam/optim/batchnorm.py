"""Normalisation layers and the one-pass-per-step rule for their running statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ["norm_layers", "frozen_running_stats"]


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
