"""What ``hetsam bench`` measured: per arrangement the raw step times, their median and spread,
the executor's counters, and the simulator's prediction (kept apart from what was measured)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hetsam.bench.arrangements import Arrangement
from hetsam.profiling.stats import Measurement, median
from hetsam.strategies import SAM, SGD

__all__ = ["BenchResult", "BenchReport"]


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

    def _by_kind(self, fn) -> float:
        """``fn`` of the steps; for a strategy of two kinds of steps (RST) with a share p of
        ascent steps: (1 − p)·fn(plain steps) + p·fn(ascent steps)."""
        if self.step_kinds is None:
            return fn(self.step_seconds)
        plan = self.arrangement.plan
        p = plan.spec.sam_fraction(plan)
        parts = {k: [t for t, kind in zip(self.step_seconds, self.step_kinds) if kind == k] for k in ("plain", "ascent")}
        if not parts["plain"] or not parts["ascent"]:  # too few steps to see both kinds
            return fn(self.step_seconds)
        return (1.0 - p) * fn(parts["plain"]) + p * fn(parts["ascent"])

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

    def error_vs(self, base: "BenchResult | None") -> float | None:
        """The prediction's error on the ratio to ``base`` measured in the same run:
        ``(measured / measured_base) / (predicted / predicted_base) − 1`` (the machine's drift
        since profiling cancels)."""
        if base is None or self.relative_error is None or base.relative_error is None:
            return None
        return (1.0 + self.relative_error) / (1.0 + base.relative_error) - 1.0

    def to_dict(self, sgd: float | None = None, sam: float | None = None, base: "BenchResult | None" = None) -> dict:
        p = self.arrangement.plan
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
                **({"vs_sgd_median_abs": median(ratio), "vs_sgd_max_abs": max(ratio)} if ratio else {})},
            "notes": list(self.notes),
        }
