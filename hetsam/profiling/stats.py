"""Measurement statistics, defined once: raw timings with their median and spread (torch-free).

As ``torch.utils.benchmark.Measurement`` does, a :class:`Measurement` keeps every raw time; its
median and interquartile range use one quantile definition everywhere in hetsam (linear
interpolation between order statistics, numpy's default), and it flags a spread wider than a
threshold, which on a shared machine usually means other processes were running. The profiler,
the benchmark harness, the merge of profiles and the simulator's percentiles all use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["quantile", "median", "median_ci", "ratio_repeatability", "unstable_speedup_note", "Measurement",
           "WIDE_SPREAD", "UNSTABLE_POOL_RATIO"]

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

    def merge(self, *others: Measurement) -> Measurement:
        """All times of this and ``others`` together (same quantity, several runs)."""
        return Measurement(self.times + tuple(t for o in others for t in o.times))

    def __len__(self) -> int:
        return len(self.times)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics ``x_(k)`` and
    ``x_(n−k+1)`` with ``P(k ≤ Binomial(n, ½) ≤ n−k) ≥ confidence`` (no normality assumed; step
    times are skewed). With too few values for that confidence it is the full range."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_ci of no values")
    # largest k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2, exact in integers
    tail, k, acc = (1.0 - confidence) / 2.0, 0, 0.0
    total = 2.0 ** n if n < 1000 else math.inf
    if total == math.inf:  # normal approximation for long windows
        k = max(0, int(math.floor(n / 2 - 1.959964 * math.sqrt(n) / 2)))
    else:
        coef = 1
        for j in range(n + 1):
            if acc + coef / total > tail:
                break
            acc += coef / total
            k = j + 1
            coef = coef * (n - j) // (j + 1)
    if k == 0:
        return xs[0], xs[-1]
    return xs[k - 1], xs[n - k]


def ratio_repeatability(round_medians: dict[str, list[dict[int, float]]]) -> dict:
    """How repeatable the ratios the planner uses were across a profile's rounds.

    ``round_medians``: per device id, per round, batch size -> median seconds. For every device
    the ratios t(b)/t(B) (B its largest batch), and for every pool of a socket whose whole was
    measured too t(pool)/t(socket) at the largest common batch, are formed per round; the
    result holds the median and the largest relative deviation of a round's ratio from the
    median ratio over the rounds, as fractions."""
    from hetsam.hardware.names import parse_device

    batch_dev: list[float] = []
    for rounds in round_medians.values():
        if len(rounds) < 2:
            continue
        top = max(rounds[0])
        for b in rounds[0]:
            if b == top or any(b not in r or top not in r for r in rounds):
                continue
            ratios = [r[b] / r[top] for r in rounds]
            mid = median(ratios)
            batch_dev += [abs(x / mid - 1.0) for x in ratios]
    pool_dev: list[float] = []
    for dev_id, rounds in round_medians.items():
        dev = parse_device(dev_id)
        whole = round_medians.get(dev.socket_id)
        if dev.positions is None or not whole or len(rounds) != len(whole) or len(rounds) < 2:
            continue
        common = set(rounds[0]) & set(whole[0])
        if not common:
            continue
        b = max(common)
        ratios = [p[b] / w[b] for p, w in zip(rounds, whole) if b in p and b in w]
        if len(ratios) >= 2:
            mid = median(ratios)
            pool_dev += [abs(x / mid - 1.0) for x in ratios]
    out: dict = {"rounds": max((len(r) for r in round_medians.values()), default=0)}
    if batch_dev:
        out["batch_ratio"] = {"median_deviation": round(median(batch_dev), 5), "max_deviation": round(max(batch_dev), 5)}
    if pool_dev:
        out["pool_ratio"] = {"median_deviation": round(median(pool_dev), 5), "max_deviation": round(max(pool_dev), 5)}
    return out if len(out) > 1 else {}


UNSTABLE_POOL_RATIO = 0.05  # median deviation of t(pool)/t(socket) across rounds above which a profile warns


def unstable_speedup_note(repeatability: dict) -> str | None:
    """A warning when t(pool)/t(socket) moved between a profile's rounds by more than
    :data:`UNSTABLE_POOL_RATIO` (median deviation; ``ratio_repeatability``'s ``pool_ratio``).

    On a shared virtual machine the speed-up of a whole socket over one of its pools can change
    within a minute: two MLP profiles taken one after the other on the 2-vCPU machine gave a
    1-core pool 2.04x and then 1.08x the socket's time at b = 512 (deviations 5.1% and 9.8%,
    worst 21.6% and 64.3%; quiet profiles: about 1-2%). Every prediction that compares a pool with
    its socket (AsyncSAM or SAMPa on pools against SGD on the socket) is then uncertain by as much."""
    pool = (repeatability or {}).get("pool_ratio")
    if not pool or pool["median_deviation"] <= UNSTABLE_POOL_RATIO:
        return None
    return (f"t(pool)/t(socket) varied by {pool['median_deviation']:.1%} (worst {pool['max_deviation']:.1%}) between the "
            "profile's rounds: this machine's parallel speed-up is unstable, so predictions that compare a pool with its "
            "socket are uncertain by as much; the machine may be busy (a shared host); re-profile when it is quiet, or "
            "compare side by side (hetsam bench --interleave-profile)")
