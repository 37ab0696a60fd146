"""What ``AutoSAM(plan="auto")`` does: profile the user's model (cached), plan, and watch for drift.

- :func:`plan_for_model` profiles ``model`` on this machine with the first batch as the sample
  (through :mod:`hetsam.profiling.cache`, so a second run of the same setup measures nothing),
  then asks :func:`hetsam.planning.search.plan`, keeping the descent on the device the model lives on.
- :class:`DriftMonitor` compares measured step times with the plan's prediction: after
  ``warmup`` steps it takes the median of each ``window`` steps, and reports drift when that
  median is more than ``tolerance`` (15%) away from the prediction.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from hetsam.errors import HetsamInputError

__all__ = ["PlannerOptions", "plan_for_model", "DriftMonitor", "describe_choice"]


@dataclass
class PlannerOptions:
    """Options of ``plan="auto"`` (``AutoSAM(..., planner_options=...)`` takes these keys)."""

    budget: float = 1.05
    max_staleness: int = 1
    min_ascent_fraction: float = 0.125
    reserve_cores: int = 0
    profile_budget_seconds: float | None = 60.0
    devices: list | None = None  # devices to profile (None: every socket, its 1-core pool, every GPU)
    drift_tolerance: float = 0.15
    drift_window: int = 20
    drift_warmup: int = 3
    max_replans: int = 1
    progress: bool = True

    @classmethod
    def from_value(cls, value) -> "PlannerOptions":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise HetsamInputError(f"planner_options must be a dict or PlannerOptions, got {type(value).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise HetsamInputError(f"planner_options has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**value)


def plan_for_model(model, loss_fn, sample_batch, options: PlannerOptions, *, refresh: bool = False, log=None):
    """Profile (cached) and plan for ``model``; returns the :class:`~hetsam.planning.search.PlanReport`."""
    from hetsam.planning.search import plan
    from hetsam.profiling.cache import cached_profile

    device = next((p.device for p in model.parameters()), None)
    kind = "gpu" if device is not None and device.type == "cuda" else "cpu"
    profile = cached_profile(model, loss_fn, sample_batch, devices=options.devices,
                             budget_seconds=options.profile_budget_seconds, name=type(model).__name__,
                             progress=options.progress, refresh=refresh, log=log)
    return plan(profile, budget=options.budget, max_staleness=options.max_staleness,
                min_ascent_fraction=options.min_ascent_fraction, reserve_cores=options.reserve_cores,
                descent_kind=kind)


def describe_choice(report) -> str:
    """The chosen plan in one line, for the log."""
    p = report.plan
    pred = p.predicted
    line = (f"hetsam: plan {p.describe()}; predicted {pred['iteration_seconds'] * 1e3:.1f} ms/step "
            f"({pred['overhead_vs_sgd']:+.1%} vs SGD, {pred['speedup_vs_sam']:.2f}x SAM's speed)")
    if not report.budget_met:
        line += f"; budget {report.budget:g}x SGD not met"
    return line


@dataclass
class DriftMonitor:
    """Flags when the measured step time drifts from the predicted one by more than ``tolerance``."""

    predicted_seconds: float
    tolerance: float = 0.15
    window: int = 20
    warmup: int = 3
    _seen: int = 0
    _times: list = field(default_factory=list)
    last_median: float | None = None

    def observe(self, seconds: float) -> bool:
        """Record one step; True when a full window's median drifted past the tolerance."""
        self._seen += 1
        if self._seen <= self.warmup:
            return False
        self._times.append(seconds)
        if len(self._times) < self.window:
            return False
        self.last_median = statistics.median(self._times)
        self._times.clear()
        return abs(self.last_median / self.predicted_seconds - 1.0) > self.tolerance

    @property
    def ratio(self) -> float | None:
        return None if self.last_median is None else self.last_median / self.predicted_seconds
