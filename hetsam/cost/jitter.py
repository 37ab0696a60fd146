"""Jitter of gradient times: lognormal draws matched to a measured median and spread.

Every gradient time is drawn from a lognormal with the measured median ``m`` and interquartile
range ``IQR`` matched exactly: ``σ = asinh(IQR / (2m)) / z_0.75`` (for small spreads
σ ≈ IQR / (1.349·m)). With n data-parallel ranks a step waits for the slowest, so its draw is the
maximum of n lognormals (:class:`MaxDraw`), and a closed form uses that maximum's median
(:func:`slowest_median`). Pure Python (``statistics.NormalDist``), no numpy or scipy.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

__all__ = ["lognormal_sigma", "slowest_median", "Draw", "MaxDraw"]

_Z75 = 0.6744897501960817  # standard normal 0.75 quantile
_NORMAL = NormalDist()


def lognormal_sigma(median: float, iqr: float) -> float:
    """σ of the lognormal whose median is ``median`` and interquartile range is ``iqr``.

    The quartiles of ``m·exp(σZ)`` are ``m·exp(±σ·z_0.75)``, so ``IQR = 2m·sinh(σ·z_0.75)``.
    """
    if median <= 0 or iqr < 0:
        raise ValueError("median must be > 0 and iqr >= 0")
    return math.asinh(iqr / (2.0 * median)) / _Z75


def slowest_median(median: float, iqr: float, n: int) -> float:
    """Median of the slowest of ``n`` ranks' draws: ``m·exp(σ·Φ⁻¹(0.5^{1/n}))`` (see :class:`MaxDraw`)."""
    if n <= 1 or iqr <= 0:
        return median
    return median * math.exp(lognormal_sigma(median, iqr) * _NORMAL.inv_cdf(0.5 ** (1.0 / n)))


class Draw:
    """Seconds of one gradient: the median, or a lognormal draw around it when jittering."""

    __slots__ = ("median", "sigma", "_gauss")

    def __init__(self, median: float, iqr: float, rng: random.Random | None):
        self.median = median
        self.sigma = lognormal_sigma(median, iqr) if rng is not None else 0.0
        self._gauss = rng.gauss if rng is not None else None

    def __call__(self) -> float:
        if self.sigma == 0.0:
            return self.median
        return self.median * math.exp(self.sigma * self._gauss(0.0, 1.0))


class MaxDraw(Draw):
    """Seconds of the slowest of ``n`` ranks' gradients: the maximum of n lognormal draws.

    ``P(max <= m·e^{σz}) = Φ(z)^n``, so ``max = m·exp(σ·Φ⁻¹(U^{1/n}))`` with U uniform: one
    draw per step whatever n. ``Φ⁻¹(U^{1/n})`` is taken as ``−Φ⁻¹(1 − U^{1/n})`` with
    ``1 − U^{1/n} = −expm1(ln U / n)``, which stays accurate when ``U^{1/n}`` rounds to 1.
    """

    __slots__ = ("inv_n", "_random")

    def __init__(self, median: float, iqr: float, rng: random.Random | None, n: int):
        super().__init__(median, iqr, rng)
        self.inv_n = 1.0 / n
        self._random = rng.random if rng is not None else None

    def __call__(self) -> float:
        if self.sigma == 0.0:
            return self.median
        u = self._random()
        while u == 0.0:  # log(0); probability 2^-53
            u = self._random()
        tail = -math.expm1(math.log(u) * self.inv_n)  # 1 − U^{1/n}
        return self.median * math.exp(-self.sigma * _NORMAL.inv_cdf(tail))
