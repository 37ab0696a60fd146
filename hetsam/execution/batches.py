"""Batches as nested containers of tensors: size, slicing, micro-batches, device moves.

A batch is whatever the user's ``loss_fn(model, batch)`` takes: a tensor, or a tuple, list,
named tuple or dict of tensors (nested freely), with other leaves (ints, strings) passed through
unchanged. Every tensor leaf with at least one dimension is indexed by sample along dim 0.
"""

from __future__ import annotations

from typing import Any

import torch

from hetsam.errors import HetsamInputError

__all__ = ["map_tensors", "leaves", "batch_size", "samples", "slice_batch", "split_batch", "batch_to", "detach_to", "signature"]


def map_tensors(batch: Any, fn) -> Any:
    """Apply ``fn`` to every tensor leaf, rebuilding the containers."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return type(batch)((k, map_tensors(v, fn)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # named tuple
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def leaves(batch: Any):
    """Every tensor leaf, depth first."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict):
        for v in batch.values():
            yield from leaves(v)
    elif isinstance(batch, (tuple, list)):
        for v in batch:
            yield from leaves(v)


def batch_size(batch: Any) -> int:
    """Number of samples: the common dim-0 size of the tensor leaves."""
    sizes = {t.shape[0] for t in leaves(batch) if t.dim() > 0}
    if not sizes:
        raise HetsamInputError(
            f"cannot find the batch size of a {type(batch).__name__}: a batch must be a tensor or a "
            "tuple/list/dict of tensors whose first dimension indexes samples"
        )
    if len(sizes) > 1:
        raise HetsamInputError(
            f"batch tensors disagree on the number of samples (dim 0 sizes {sorted(sizes)}); "
            "every tensor in a batch must have the samples along dim 0"
        )
    return sizes.pop()


def samples(batch: Any) -> int | None:
    """The number of samples, or None when the batch has no sized tensor (or disagrees): the
    cheap check for an empty batch, for any batch ``loss_fn`` accepts."""
    sizes = {t.shape[0] for t in leaves(batch) if t.dim() > 0}
    return sizes.pop() if len(sizes) == 1 else None


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of every tensor leaf (views, no copy)."""
    return map_tensors(batch, lambda t: t[start:stop] if t.dim() > 0 else t)


def split_batch(batch: Any, parts: int) -> list[tuple[Any, float]]:
    """Split into ``min(parts, n)`` contiguous micro-batches, as evenly as possible.

    Returns ``(micro_batch, weight)`` pairs with ``weight = n_i / n``, so that
    ``Σ_i weight_i · mean_loss(micro_batch_i)`` is the mean loss of the whole batch and the
    accumulated gradient is the whole-batch gradient.
    """
    if parts == 1:
        return [(batch, 1.0)]
    n = batch_size(batch)
    parts = min(parts, n)
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append((slice_batch(batch, start, start + size), size / n))
        start += size
    return out


def batch_to(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor leaf to ``device`` (no copy for leaves already there)."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def detach_to(batch: Any, device) -> Any:
    """A detached copy of every tensor leaf on ``device`` (the profiler's sample batches)."""
    return map_tensors(batch, lambda t: t.detach().to(device))


def signature(batch: Any) -> Any:
    """Shapes and dtypes of the tensor leaves, in the batch's structure (a cache key part)."""
    if isinstance(batch, torch.Tensor):
        return [list(batch.shape), str(batch.dtype)]
    if isinstance(batch, dict):
        return [[str(k), signature(v)] for k, v in sorted(batch.items(), key=lambda kv: str(kv[0]))]
    if isinstance(batch, (tuple, list)):
        return [signature(v) for v in batch]
    return [type(batch).__name__]
