"""Flat buffers for collectives: many tensors in one, and back (views, no copies on the way out)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["flatten", "unflatten", "common_dtype"]


def flatten(tensors: Sequence[Tensor | None], sizes: Sequence[int], dtype: torch.dtype, device,
            out: Tensor | None = None, offset: int = 0) -> Tensor:
    """Copy ``tensors`` into one flat buffer (``out`` from ``offset``, or a new one); None
    entries stay zero. ``sizes`` are the element counts of the slots."""
    if out is None:
        out = torch.zeros(offset + sum(sizes), dtype=dtype, device=device)
    for t, n in zip(tensors, sizes):
        if t is not None:
            out[offset:offset + n].copy_(t.reshape(-1))
        offset += n
    return out


def unflatten(flat: Tensor, like: Sequence[Tensor], offset: int = 0) -> list[Tensor]:
    """Views of ``flat`` from ``offset`` shaped like ``like`` (same dtype as ``flat``)."""
    out = []
    for t in like:
        n = t.numel()
        out.append(flat[offset:offset + n].view(t.shape))
        offset += n
    return out


def common_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """A floating dtype that holds every tensor of ``tensors`` exactly (at least float32)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
