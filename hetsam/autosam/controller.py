"""What ``AutoSAM(plan="auto")`` does: profile the user's model (cached), plan, and watch for drift.

- :func:`plan_for_model` profiles ``model`` on this machine with the first batch as the sample
  (through :mod:`hetsam.profiling.cache`, so a second run of the same setup measures nothing),
  then asks :func:`hetsam.planning.search.plan`, keeping the descent on the device the model lives on.
- :class:`DriftMonitor` compares measured step times with the plan's prediction: after
  ``warmup`` steps it takes the median of each ``window`` steps, and reports drift when that
  median is more than ``tolerance`` (15%) away from the prediction.
- :class:`PlanController` ties them together for one AutoSAM: the first plan, drift, re-plans
  (at most ``max_replans``), and what happened, for ``AutoSAM.stats()``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from hetsam.planning.options import PlannerOptions

__all__ = ["PlannerOptions", "plan_for_model", "DriftMonitor", "describe_choice", "PlanController"]


def plan_for_model(model, loss_fn, sample_batch, options: PlannerOptions, *, refresh: bool = False, log=None):
    """Profile (cached) and plan for ``model``; returns the :class:`~hetsam.planning.report.PlanReport`."""
    from hetsam.planning.search import plan
    from hetsam.profiling.cache import cached_profile

    device = next((p.device for p in model.parameters()), None)
    kind = "gpu" if device is not None and device.type == "cuda" else "cpu"
    profile = cached_profile(model, loss_fn, sample_batch, devices=None if options.devices is None else list(options.devices),
                             budget_seconds=options.profile_budget_seconds, name=type(model).__name__,
                             progress=options.progress, refresh=refresh, log=log)
    return plan(profile, budget=options.budget, max_staleness=options.max_staleness,
                min_ascent_fraction=options.min_ascent_fraction, reserve_cores=options.reserve_cores,
                descent_kind=kind)


def describe_choice(report) -> str:
    """The chosen plan in one line, for the log."""
    pred = report.prediction
    line = (f"hetsam: plan {report.plan.describe()}; predicted {pred.iteration_seconds * 1e3:.1f} ms/step "
            f"({pred.overhead_vs_sgd:+.1%} vs SGD, {pred.speedup_vs_sam:.2f}x SAM's speed)")
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


class PlanController:
    """``plan="auto"`` for one AutoSAM: choose, watch, re-plan (see the module docstring).

    ``choose(batch)`` profiles and plans (``agree`` makes every DDP rank run rank 0's plan) and
    returns the Plan; ``observe(seconds)`` is called after every step and returns True when the
    caller should re-plan with ``choose(batch, refresh=True)``; ``history`` records every choice.
    """

    def __init__(self, options: PlannerOptions, log: Callable[[str], None], *, agree: Callable = None,
                 watch: bool = True):
        self.options = options
        self.log = log
        self.agree = agree or (lambda plan: plan)
        self.watch = watch  # False under DDP: ranks would decide a re-plan at different steps
        self.report = None
        self.replans = 0
        self.history: list[dict] = []
        self._drift: DriftMonitor | None = None

    def choose(self, model, loss_fn, batch, *, refresh: bool = False):
        report = plan_for_model(model, loss_fn, batch, self.options, refresh=refresh, log=self.log)
        chosen = self.agree(report.plan)
        self.report = report
        self.log(describe_choice(report))
        predicted = report.prediction.iteration_seconds
        o = self.options
        self._drift = DriftMonitor(predicted, o.drift_tolerance, o.drift_window, o.drift_warmup) if self.watch else None
        self.history.append({"plan": chosen.describe(), "predicted_seconds": predicted, "refresh": refresh})
        return chosen

    def observe(self, seconds: float) -> bool:
        """Record a step; True when the caller should re-plan now."""
        drift = self._drift
        if drift is None or not drift.observe(seconds):
            return False
        self.log(f"hetsam: measured {drift.last_median * 1e3:.1f} ms/step, {drift.ratio - 1:+.0%} from the predicted "
                 f"{drift.predicted_seconds * 1e3:.1f} ms")
        if self.replans >= self.options.max_replans:
            self.log(f"hetsam: not re-planning: {self.options.max_replans} re-plan(s) already done")
            self._drift = None
            return False
        self.replans += 1
        return True

    def same_plan(self) -> None:
        """The fresh profile chose the plan already running: the gap is not in the profile (e.g.
        per-step overhead outside the gradient passes), so watching further would re-measure it."""
        self.log("hetsam: the fresh profile chose the same plan; keeping it and no longer watching for drift")
        self._drift = None

    def stats(self) -> dict[str, Any]:
        return {"replans": self.replans, "plans": list(self.history)}
