"""What ``hetsam bench`` measured: per arrangement the raw step times, their median and spread,
the executor's counters, and the simulator's prediction (kept apart from what was measured).

The prediction's error relative to SGD is judged round by round: in round k the arrangement and
SGD ran side by side, so ``e_k = (m_k / m_k^SGD) / (predicted / predicted^SGD) − 1`` cancels the
machine's drift between rounds. The reported error is the median of the ``e_k`` with a
distribution-free 90% interval (``median_ci``; with 5 rounds, the range of the five). A row is
judged against the goal (``ERROR_GOAL``, ±5%) only when that interval is narrower than the goal
(half-width at most 5%): a wider one says the machine was too noisy to tell.

A plan on pools compared with SGD on the whole socket carries the ± that ``hetsam plan`` shows
for it (``hetsam.planning.objective.margin``: the profile's worst pool/socket deviation between
its rounds). ``within_stated`` says whether the row's error interval reaches into that ±: a check
of the uncertainty hetsam states, apart from the goal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hetsam.bench.arrangements import Arrangement
from hetsam.profiling.stats import Measurement, median, median_ci
from hetsam.strategies import SAM, SGD

__all__ = ["BenchResult", "BenchReport", "ERROR_GOAL", "ERROR_CONFIDENCE"]

ERROR_GOAL = 0.05  # |error relative to SGD| a row must meet; judged only with an interval this narrow
ERROR_CONFIDENCE = 0.90  # of the interval of the per-round errors


@dataclass
class BenchResult:
    """Measurements of one arrangement; seconds throughout."""

    arrangement: Arrangement
    step_seconds: list[float]  # every timed step, all rounds, in order
    step_kinds: list[str] | None  # mixed strategies: "plain" or "ascent" per timed step; None for the others
    round_medians: list[float]
    wait_seconds: float  # total descent wait over the timed steps
    inline_seconds: float  # total time the descent thread computed ascent jobs itself
    copy_seconds: float  # total time spent taking snapshots
    mode: str | None  # the executor's mode (worker, time-sliced), None without an executor
    predicted: dict | None = None  # the simulator's prediction (iteration_seconds, descent_wait_per_iteration)
    stated: float | None = None  # the ± hetsam states on this plan's ratio to SGD (planning.objective.margin), or None

    def _by_kind(self, fn, steps: list[float] | None = None, kinds: list[str] | None = None) -> float:
        """``fn`` of the steps (all, or the given ones); for a strategy of two kinds of steps (RST)
        with a share p of ascent steps: (1 − p)·fn(plain steps) + p·fn(ascent steps)."""
        steps = self.step_seconds if steps is None else steps
        kinds = self.step_kinds if kinds is None else kinds
        if self.step_kinds is None:
            return fn(steps)
        plan = self.arrangement.plan
        p = plan.spec.sam_fraction(plan)
        parts = {k: [t for t, kind in zip(steps, kinds) if kind == k] for k in ("plain", "ascent")}
        if not parts["plain"] or not parts["ascent"]:  # too few steps to see both kinds
            return fn(steps)
        return (1.0 - p) * fn(parts["plain"]) + p * fn(parts["ascent"])

    def per_round(self) -> list[float]:
        """The median step of each round (by kind for two kinds of steps, as :attr:`median`)."""
        n = len(self.round_medians)
        if n == 0 or len(self.step_seconds) % n:
            return list(self.round_medians)
        k = len(self.step_seconds) // n
        cut = lambda xs, r: None if xs is None else xs[r * k:(r + 1) * k]  # noqa: E731
        return [self._by_kind(median, cut(self.step_seconds, r), cut(self.step_kinds, r)) for r in range(n)]

    @property
    def median(self) -> float:
        return self._by_kind(median)

    @property
    def iqr(self) -> float:
        return self._by_kind(lambda xs: Measurement(xs).iqr if len(xs) > 1 else 0.0)

    @property
    def wait_per_step(self) -> float:
        return self.wait_seconds / len(self.step_seconds)

    @property
    def predicted_seconds(self) -> float | None:
        return None if self.predicted is None else self.predicted["iteration_seconds"]

    @property
    def relative_error(self) -> float | None:
        p = self.predicted_seconds
        return None if p is None else self.median / p - 1.0

    def error_vs(self, base: BenchResult | None) -> float | None:
        """The prediction's error on the ratio to ``base`` measured in the same run:
        ``(measured / measured_base) / (predicted / predicted_base) − 1`` (the machine's drift
        since profiling cancels)."""
        if base is None or self.relative_error is None or base.relative_error is None:
            return None
        return (1.0 + self.relative_error) / (1.0 + base.relative_error) - 1.0

    def error_vs_rounds(self, base: BenchResult | None) -> tuple[float, float, float] | None:
        """``(median, low, high)`` of the per-round errors relative to ``base`` (module docstring)."""
        if base is None or self.predicted_seconds is None or base.predicted_seconds is None:
            return None
        mine, theirs = self.per_round(), base.per_round()
        if not mine or len(mine) != len(theirs):
            return None
        predicted = self.predicted_seconds / base.predicted_seconds
        errors = [(m / b) / predicted - 1.0 for m, b in zip(mine, theirs)]
        return (median(errors), *median_ci(errors, ERROR_CONFIDENCE))

    def to_dict(self, sgd: float | None = None, sam: float | None = None, base: BenchResult | None = None) -> dict:
        p = self.arrangement.plan
        rounds = self.error_vs_rounds(base) if base is not self else None
        return {
            "strategy": p.strategy,
            "label": self.arrangement.label,
            "plan": p.to_dict(),
            "executor_mode": self.mode,
            "measured_iteration_seconds": self.median,
            "iqr_seconds": self.iqr,
            "round_medians": self.round_medians,
            "steps": len(self.step_seconds),
            "steps_by_kind": None if self.step_kinds is None else
            {k: sum(1 for kind in self.step_kinds if kind == k) for k in ("plain", "ascent")},
            "descent_wait_seconds": self.wait_per_step,
            "descent_wait_fraction": self.wait_per_step / self.median,
            "inline_ascent_seconds": self.inline_seconds / len(self.step_seconds),
            "snapshot_copy_seconds": self.copy_seconds / len(self.step_seconds),
            "throughput_vs_sgd": None if sgd is None else sgd / self.median,
            "throughput_vs_sam": None if sam is None else sam / self.median,
            "predicted_iteration_seconds": self.predicted_seconds,
            "predicted_descent_wait_seconds": None if self.predicted is None else self.predicted["descent_wait_per_iteration"],
            "relative_error": self.relative_error,
            "error_vs_sgd": self.error_vs(base),
            **_judged(rounds),
            **_within(self.stated, rounds),
        }


@dataclass
class BenchReport:
    """All results plus the conditions they were taken in."""

    results: list[BenchResult]
    model: str
    batch_size: int
    steps: int
    rounds: int
    other_load: list[float]  # per round: other processes' share of the usable CPUs
    profile_source: str | None = None
    notes: list[str] = field(default_factory=list)
    profile_used: dict | None = None  # the measurements the predictions came from (no provenance)

    def result(self, label: str) -> BenchResult | None:
        return next((r for r in self.results if r.arrangement.label == label), None)

    def _baseline(self, label: str) -> float | None:
        r = self.result(label)
        return None if r is None else r.median

    def to_dict(self) -> dict:
        sgd, sam, base = self._baseline(SGD), self._baseline(SAM), self.result(SGD)
        errors = [abs(r.relative_error) for r in self.results if r.relative_error is not None]
        ratio = [abs(e) for e in (r.error_vs(base) for r in self.results if r is not base) if e is not None]
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "steps_per_round": self.steps,
            "rounds": self.rounds,
            "other_load_per_round": self.other_load,
            "profile": self.profile_source,
            "profile_used": self.profile_used,
            "results": [r.to_dict(sgd, sam, base) for r in self.results],
            "simulator_error": None if not errors else {
                "median_abs": median(errors), "max_abs": max(errors),
                **({"vs_sgd_median_abs": median(ratio), "vs_sgd_max_abs": max(ratio)} if ratio else {}),
                **_judged_summary([r.to_dict(sgd, sam, base) for r in self.results if r is not base])},
            "notes": list(self.notes),
        }


def _judged(rounds: tuple[float, float, float] | None) -> dict:
    """The per-round error relative to SGD, its interval, and whether it can be judged (module docstring)."""
    if rounds is None:
        return {"error_vs_sgd_rounds": None, "error_vs_sgd_interval": None, "judged": None, "meets_goal": None}
    mid, low, high = rounds
    judged = (high - low) / 2.0 <= ERROR_GOAL
    return {"error_vs_sgd_rounds": mid, "error_vs_sgd_interval": [low, high], "judged": judged,
            "meets_goal": (abs(mid) <= ERROR_GOAL) if judged else None}


def _within(stated: float | None, rounds: tuple[float, float, float] | None) -> dict:
    """Whether the error's interval reaches into the ± hetsam states for the plan (``hetsam plan``'s,
    from the profile: a plan on pools against SGD on the socket); None where none is stated."""
    if stated is None:
        return {"stated_uncertainty_vs_sgd": None, "within_stated": None}
    within = None if rounds is None else (rounds[1] <= stated and rounds[2] >= -stated)
    return {"stated_uncertainty_vs_sgd": stated, "within_stated": within}


def _judged_summary(rows: list[dict]) -> dict:
    judged = [abs(r["error_vs_sgd_rounds"]) for r in rows if r["judged"]]
    stated = [r["within_stated"] for r in rows if r["within_stated"] is not None]
    return {"judged_rows": len(judged), "unjudged_rows": sum(1 for r in rows if r["judged"] is False),
            "judged_vs_sgd_median_abs": median(judged) if judged else None,
            "judged_vs_sgd_max_abs": max(judged) if judged else None, "goal": ERROR_GOAL,
            "stated_rows": len(stated), "within_stated_rows": sum(stated)}

