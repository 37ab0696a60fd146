"""A framework's gradient accumulation as one AutoSAM step (README, "Gradient accumulation").

Trainer ``gradient_accumulation_steps=k``, Lightning ``accumulate_grad_batches=k`` and Accelerate's
``gradient_accumulation_steps=k`` mean one optimizer step over k micro-batches. For AutoSAM that is
``step(concat(micro-batches), accumulate=k)``: one perturbation from the ascent over the k
micro-batches and one update with their n_i/n-weighted gradient (``hetsam.execution.batches.split_batch``
cuts the concatenation back into the same micro-batches when they are of equal size).

:class:`Groups` lets AutoSAM's lookahead read ahead by optimizer steps, not by micro-batches: it
yields each group of k micro-batches as one concatenated batch (the one AutoSAM's prefetcher queues
and AsyncSAM's ascent looks ahead to), keeping the micro-batches themselves for the framework.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from hetsam.errors import HetsamInputError

__all__ = ["concat", "Groups"]


def concat(batches: list) -> Any:
    """The micro-batches ``batches`` as one batch along dim 0 (the batch itself when there is one)."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(b.shape[1:]) for b in batches}
        if len(shapes) > 1 or first.dim() == 0:
            raise HetsamInputError(f"gradient accumulation: the micro-batches' tensors differ beyond the sample dimension "
                                   f"({sorted(shapes)}); pad every batch to one length (e.g. padding='max_length')")
        return torch.cat(batches)
    if isinstance(first, dict):
        return type(first)((k, concat([b[k] for b in batches])) for k in first)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(concat(list(parts)) for parts in zip(*batches)))
    if isinstance(first, (tuple, list)):
        return type(first)(concat(list(parts)) for parts in zip(*batches))
    return first  # a non-tensor leaf (a name, a flag): the first micro-batch's


class Groups:
    """``loader`` in groups of ``k`` micro-batches (the last of a pass may be shorter), each yielded
    as one concatenated batch; ``pending`` holds each yielded group's micro-batches, oldest first."""

    def __init__(self, loader: Iterable[Any], k: int):
        self.loader, self.k = loader, k
        self.pending: collections.deque = collections.deque()

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            group = list(itertools.islice(it, self.k))
            if not group:
                return
            self.pending.append(group)
            yield concat(group)

    def micro_batches(self, steps: Iterable[Any]) -> Iterator[Any]:
        """The micro-batches of each group that ``steps`` (a read-ahead of this) yields, one by one."""
        for _ in steps:
            yield from self.pending.popleft()
