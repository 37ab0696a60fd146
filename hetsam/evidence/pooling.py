"""Random-effects pooling of shares of SAM's gain (pure Python; docs/architecture.md, "Evidence").

Each study setting i reports a share y_i with sampling variance v_i = se_i². Settings of one
strategy at one point of its axis (RST's p, MSAM's ρ, ...) form a *group* g; a new task's share
at that point is drawn around the group's mean μ_g with a between-task variance τ², the same for
every group of a strategy (a subgroup analysis with a common τ²):

- fixed-effect weights w_i = 1/v_i; group means ȳ_g = Σ w y / Σ w;
- DerSimonian-Laird with a common τ² (method of moments on the within-group Q):
  Q = Σ_g Σ_i w_i (y_i − ȳ_g)², df = Σ_g (k_g − 1), C = Σ_g (Σ w − Σ w² / Σ w),
  τ² = max(0, (Q − df) / C); with one group this is the plain DerSimonian-Laird estimator;
- random-effects weights w*_i = 1/(v_i + τ²); μ_g = Σ w* y / Σ w*, Var(μ_g) = 1 / Σ w*;
- the interval for a new task at level L: μ_g ± t_{df, (1+L)/2} · √(τ² + Var(μ_g)) (Higgins,
  Thompson and Spiegelhalter's prediction interval, with the df of the τ² estimate);
- a task with its own evidence (y_u, v_u) gets the empirical-Bayes estimate
  μ_g + B (y_u − μ_g), B = τ²/(τ² + v_u), so that its own evidence dominates as v_u → 0.

The t quantile is computed here (bisection on the regularized incomplete beta function):
importing scipy would cost the planner about 0.5 s. ``tests/test_evidence.py`` checks both
against statsmodels and scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Spread", "GroupEstimate", "common_tau2", "pool_group", "target_task", "t_quantile", "weighted_isotonic"]

_MIN_VARIANCE = 1e-6  # (0.1 percentage point of share)²: no setting counts as exact


@dataclass(frozen=True)
class Spread:
    """The between-task variance τ² of a strategy's shares, and what it was estimated from."""

    tau2: float
    df: int  # Σ (k_g − 1): the settings that inform τ² beyond their groups' means
    settings: int  # records behind the estimate


@dataclass(frozen=True)
class GroupEstimate:
    """A group's random-effects mean, its variance, and the interval for a new task."""

    mean: float
    var_mean: float
    tau2: float
    df: int
    k: int

    def predictive_sd(self) -> float:
        return math.sqrt(self.tau2 + self.var_mean)

    def interval(self, level: float) -> tuple[float, float]:
        half = t_quantile((1 + level) / 2, max(1, self.df)) * self.predictive_sd()
        return self.mean - half, self.mean + half


def _variance(se: float) -> float:
    return max(se * se, _MIN_VARIANCE)


def common_tau2(groups: list[list[tuple[float, float]]]) -> Spread:
    """τ² shared by ``groups`` (each a list of (share, se)), by DerSimonian-Laird on the
    within-group heterogeneity (module docstring). Groups of one setting add nothing to it."""
    q = c = 0.0
    df = n = 0
    for group in groups:
        n += len(group)
        if len(group) < 2:
            continue
        w = [1.0 / _variance(se) for _, se in group]
        sw = sum(w)
        mean = sum(wi * y for wi, (y, _) in zip(w, group)) / sw
        q += sum(wi * (y - mean) ** 2 for wi, (y, _) in zip(w, group))
        c += sw - sum(wi * wi for wi in w) / sw
        df += len(group) - 1
    tau2 = max(0.0, (q - df) / c) if df > 0 and c > 0 else 0.0
    return Spread(tau2, df, n)


def pool_group(group: list[tuple[float, float]], spread: Spread) -> GroupEstimate:
    """The random-effects mean of one group (a list of (share, se)) given the common τ²."""
    w = [1.0 / (_variance(se) + spread.tau2) for _, se in group]
    sw = sum(w)
    return GroupEstimate(sum(wi * y for wi, (y, _) in zip(w, group)) / sw, 1.0 / sw, spread.tau2, spread.df,
                         len(group))


def target_task(prior: GroupEstimate, own: list[tuple[float, float]]) -> GroupEstimate:
    """The estimate for the task that ``own`` (its (share, se) records) measured: the
    empirical-Bayes shrinkage of its inverse-variance mean towards the prior's mean. Its
    variance is B·v + (1 − B)²·Var(μ), with no further between-task term (the task is known)."""
    w = [1.0 / _variance(se) for _, se in own]
    y = sum(wi * s for wi, (s, _) in zip(w, own)) / sum(w)
    v = 1.0 / sum(w)
    b = prior.tau2 / (prior.tau2 + v) if prior.tau2 + v > 0 else 1.0
    mean = prior.mean + b * (y - prior.mean)
    var = b * v + (1 - b) ** 2 * prior.var_mean
    return GroupEstimate(mean, var, 0.0, prior.df, prior.k)


def weighted_isotonic(values: list[float], weights: list[float]) -> list[float]:
    """Weighted least-squares non-decreasing fit (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    out: list[float] = []
    for mean, _, count in blocks:
        out.extend([mean] * int(count))
    return out


# ---- Student's t quantile ----------------------------------------------------------------------
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (0 < p < 1, df > 0)."""
    if not (0.0 < p < 1.0) or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def _t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for t ≥ 0: 1 − I_x(df/2, 1/2)/2 with x = df/(df + t²)."""
    x = df / (df + t * t)
    return 1.0 - 0.5 * _betainc(df / 2.0, 0.5, x)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast on the other side
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / (c if abs(c) > tiny else tiny)
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a
