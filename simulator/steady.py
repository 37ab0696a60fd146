"""Steady-state detection for the mean iteration time: batch means with a confidence interval.

Consecutive iteration times are autocorrelated (a late ascent delays the next step, which
delays the next snapshot, ...), so their sample variance understates the error of the mean.
The method of *batch means* (Law & Kelton, *Simulation Modeling and Analysis*, ch. 9) groups
the observations after a warm-up into ``k`` batches of ``m`` consecutive values; for ``m``
much longer than the correlation time the batch means are nearly independent and normal, so

    half-width = t_{k-1, 0.975} · s_k / sqrt(k),   s_k = standard deviation of the batch means.

The run stops when ``half-width <= rel_tol · mean`` (0.5% by default) with at least
``MIN_BATCHES`` batches of at least ``min_batch`` iterations each. Batches start at
``min_batch`` iterations; when ``2 · MIN_BATCHES`` batches are full, neighbours are merged
pairwise (the batch size doubles), so memory stays O(MIN_BATCHES) however long the run.

Pure Python, no numpy/scipy (importing scipy.stats alone costs ~0.5 s).
"""

from __future__ import annotations

import math

__all__ = ["BatchMeans", "t_quantile_975", "MIN_BATCHES"]

MIN_BATCHES = 32


def t_quantile_975(df: int) -> float:
    """Student-t 0.975 quantile, Cornish-Fisher expansion (error < 1e-4 for df >= 8)."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    z = 1.959963984540054
    z3, z5, z7 = z**3, z**5, z**7
    return (z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df**2)
            + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * df**3))


class BatchMeans:
    """Accumulates iteration times after ``warmup`` and says when the mean has converged."""

    def __init__(self, warmup: int, min_batch: int, rel_tol: float = 0.005):
        if warmup < 0 or min_batch < 1 or not rel_tol > 0:
            raise ValueError("warmup >= 0, min_batch >= 1 and rel_tol > 0 are required")
        self.warmup = warmup
        self.batch = min_batch  # current batch size m
        self.rel_tol = rel_tol
        self.seen = 0  # every value, warm-up included
        self.count = 0  # values after warm-up
        self.total = 0.0  # their sum
        self.means: list[float] = []  # full batches
        self._acc = 0.0
        self._n = 0
        self.halfwidth = math.inf

    def add(self, x: float) -> bool:
        """Add one iteration time; return True once the mean has converged."""
        self.seen += 1
        if self.seen <= self.warmup:
            return False
        self.count += 1
        self.total += x
        self._acc += x
        self._n += 1
        if self._n < self.batch:
            return False
        self.means.append(self._acc / self._n)
        self._acc, self._n = 0.0, 0
        if len(self.means) == 2 * MIN_BATCHES:
            m = self.means
            self.means = [(m[i] + m[i + 1]) / 2 for i in range(0, len(m), 2)]
            self.batch *= 2
        return self._check()

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def _check(self) -> bool:
        k = len(self.means)
        if k < MIN_BATCHES:
            return False
        mean = sum(self.means) / k
        var = sum((v - mean) ** 2 for v in self.means) / (k - 1)
        self.halfwidth = t_quantile_975(k - 1) * math.sqrt(var / k)
        return self.halfwidth <= self.rel_tol * abs(mean)

    def summary(self) -> dict:
        mean = self.mean
        return {
            "mean": mean,
            "ci95_halfwidth": self.halfwidth if math.isfinite(self.halfwidth) else None,
            "relative_halfwidth": (self.halfwidth / mean) if self.count and math.isfinite(self.halfwidth) and mean else None,
            "warmup_iterations": min(self.warmup, self.seen),
            "batch_size": self.batch,
            "batches": len(self.means),
            "rel_tol": self.rel_tol,
        }
