"""Building blocks of the strategies' closed-form step times (``docs/architecture.md``, "Planning").

Pure Python: the strategies' specs and the planner use these without torch.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["descent_step", "largest_fitting", "SlowestRank"]


def descent_step(cm, scale, descent: str, compute: float, perturbed: bool = False) -> float:
    """A descent step of ``compute`` seconds on ``descent``: ``compute + s`` with ``s`` the step's
    fixed costs (``CostModel.step_seconds``: update, loop, and the climb when ``perturbed``); with
    a ``scale`` (a Cluster of n > 1 ranks) DDP's ``max(t, e_K) + s`` (``hetsam.cost.cluster``)."""
    fixed = cm.step_seconds(descent, perturbed)
    if scale is None:
        return compute + fixed
    return scale.step_seconds(descent, compute, fixed, cm.parameter_bytes)


def largest_fitting(fits: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Largest integer x in [lo, hi] with ``fits(x)``, for a monotone (true-then-false)
    predicate; None when even ``lo`` does not fit. An exact integer bisection: importing
    scipy.optimize alone takes 0.5-0.7 s here, over the planner's budget."""
    if not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class SlowestRank:
    """A cost model whose gradient times are those of the slowest of ``n`` ranks (the median of
    the maximum of n lognormal draws; ``hetsam.simulator.draws.slowest_median``)."""

    def __init__(self, cm, n: int):
        from hetsam.cost.jitter import slowest_median

        self._cm, self._n, self._slowest = cm, n, slowest_median

    def __getattr__(self, name):
        return getattr(self._cm, name)

    def grad_seconds(self, device, batch) -> float:
        return self._slowest(self._cm.grad_seconds(device, batch), self._cm.grad_spread(device, batch), self._n)
