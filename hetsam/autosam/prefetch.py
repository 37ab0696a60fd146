"""Reading ahead: the loader wrapper that hands ``step`` its upcoming batches (for ``lookahead``)."""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterable, Iterator

__all__ = ["Prefetcher"]


class Prefetcher:
    """Iterates a loader ``ahead`` batches in advance and remembers, for the batch it yielded
    last, the batches after it (``upcoming_for(batch)``)."""

    def __init__(self) -> None:
        self._last: tuple[Any, list] | None = None

    def upcoming_for(self, batch: Any) -> list | None:
        """The batches after ``batch`` if it is the one yielded last, else None."""
        if self._last is not None and self._last[0] is batch:
            return self._last[1]
        return None

    def iterate(self, loader: Iterable[Any], ahead: int) -> Iterator[Any]:
        it = iter(loader)
        window = collections.deque(itertools.islice(it, ahead + 1))
        end = object()
        try:
            while window:
                batch = window.popleft()
                nxt = next(it, end)
                if nxt is not end:
                    window.append(nxt)
                self._last = (batch, list(window)[:ahead])
                yield batch
        finally:
            self._last = None
