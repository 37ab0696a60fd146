"""Reading ahead, so that AsyncSAM's ``lookahead`` policy knows the batches of the next steps.

:class:`Prefetcher` iterates a loader ``ahead`` batches in advance. Each batch it yields goes into
a first-in-first-out queue with its sample count and the batches after it; each ``step`` takes
the oldest entry. So the k-th batch the loader yields is the batch of the k-th step whatever the
training loop does to the object in between (unpacks it, repacks it, moves it with ``.to``,
converts its dtypes), and a framework that fetches one batch early (Lightning does) stays
aligned. A step whose batch has another sample count than the entry it takes is refused: the
loop skipped or repeated a batch, and lookahead would perturb with the wrong samples.

:class:`LookaheadLoader` is that wrapper as an object a framework can treat as its data loader:
it iterates the loader afresh each epoch, and ``len()``, ``sampler``, ``set_epoch`` and every
other attribute pass through to it.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hetsam.errors import HetsamInputError
from hetsam.execution.batches import samples

__all__ = ["Prefetcher", "LookaheadLoader"]


class Prefetcher:
    """The queue between a loader wrapper and ``AutoSAM.step`` (module docstring)."""

    def __init__(self) -> None:
        self._queue: collections.deque = collections.deque()  # (samples, upcoming) per yielded batch
        self._yielded = self._taken = 0
        self.taken_this_pass = 0  # steps taken from the current pass over a loader

    @property
    def active(self) -> bool:
        """Whether a wrapper has yielded batches that no step has taken yet."""
        return bool(self._queue)

    def take(self, batch: Any) -> list | None:
        """The batches after the oldest yielded one, checked against ``batch``'s sample count;
        None when no wrapper is in use."""
        if not self._queue:
            return None
        expected, upcoming = self._queue.popleft()
        self._taken += 1
        self.taken_this_pass += 1
        got = samples(batch)
        if expected is not None and got is not None and got != expected:
            raise HetsamInputError(
                f"step() got a batch of {got} samples, but the loader's batch for this step (number "
                f"{self._taken}) has {expected}: pass the k-th batch the prefetching loader yields to the k-th "
                "step (moving, unpacking or converting it is fine; skipping or repeating one is not)"
            )
        return upcoming

    def iterate(self, loader: Iterable[Any], ahead: int) -> Iterator[Any]:
        it = iter(loader)
        self.taken_this_pass = 0
        window = collections.deque(itertools.islice(it, ahead + 1))
        end = object()
        try:
            while window:
                batch = window.popleft()
                nxt = next(it, end)
                if nxt is not end:
                    window.append(nxt)
                self._queue.append((samples(batch), list(window)[:ahead]))
                self._yielded += 1
                yield batch
        except GeneratorExit:  # the loop left early: what it did not step is not coming
            self._queue.clear()
            raise


class LookaheadLoader:
    """A loader that reads ahead for ``lookahead`` and otherwise looks like the loader it wraps."""

    def __init__(self, loader: Iterable[Any], prefetcher: Prefetcher, ahead: Callable[[], int]):
        self.loader = loader
        self._prefetcher = prefetcher
        self._ahead = ahead

    def __iter__(self) -> Iterator[Any]:
        return self._prefetcher.iterate(self.loader, self._ahead())

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not yet set (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)
