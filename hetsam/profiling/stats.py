"""Measurement statistics, defined once: raw timings with their median and spread (torch-free).

As ``torch.utils.benchmark.Measurement`` does, a :class:`Measurement` keeps every raw time; its
median and interquartile range use one quantile definition everywhere in hetsam (linear
interpolation between order statistics, numpy's default), and it flags a spread wider than a
threshold, which on a shared machine usually means other processes were running. The profiler,
the benchmark harness, the merge of profiles and the simulator's percentiles all use it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["quantile", "median", "Measurement", "WIDE_SPREAD"]

WIDE_SPREAD = 0.25  # IQR / median above which a measurement is flagged as noisy


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an already sorted sequence, linearly interpolated."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    pos = (len(sorted_values) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def median(values: Iterable[float]) -> float:
    return quantile(sorted(values), 0.5)


class Measurement:
    """Raw times (seconds) of one quantity, in the order they were taken (read-only)."""

    __slots__ = ("times",)

    def __init__(self, times: Iterable[float]):
        object.__setattr__(self, "times", tuple(float(t) for t in times))
        if not self.times:
            raise ValueError("a Measurement needs at least one time")

    def __setattr__(self, name, value):
        raise AttributeError("a Measurement is read-only")

    def __eq__(self, other) -> bool:
        return isinstance(other, Measurement) and self.times == other.times

    def __hash__(self) -> int:
        return hash(self.times)

    def __repr__(self) -> str:
        return f"Measurement(n={len(self.times)}, median={self.median:.6g}, iqr={self.iqr:.3g})"

    @property
    def _sorted(self) -> list[float]:
        return sorted(self.times)

    @property
    def median(self) -> float:
        return quantile(self._sorted, 0.5)

    @property
    def iqr(self) -> float:
        """Interquartile range q75 − q25 (0 for a single time)."""
        xs = self._sorted
        return quantile(xs, 0.75) - quantile(xs, 0.25)

    @property
    def relative_spread(self) -> float:
        m = self.median
        return self.iqr / m if m > 0 else 0.0

    def wide(self, threshold: float = WIDE_SPREAD) -> bool:
        """Whether the spread is wider than ``threshold`` of the median."""
        return self.relative_spread > threshold

    def merge(self, *others: "Measurement") -> "Measurement":
        """All times of this and ``others`` together (same quantity, several runs)."""
        return Measurement(self.times + tuple(t for o in others for t in o.times))

    def __len__(self) -> int:
        return len(self.times)
