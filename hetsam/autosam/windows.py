"""The controller's measurements: windows of step periods and the gaps between steps
(:class:`StepWindow`), and what a calibration learned, in words (:func:`calibrated_text`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hetsam.profiling.stats import median, median_ci

__all__ = ["StepWindow", "calibrated_text"]


@dataclass
class StepWindow:
    """Windows of measured step periods: ``observe`` returns ``(median, low, high, gaps)`` once
    every ``window`` steps after the first ``warmup`` (the interval at ``confidence``; ``gaps``:
    the window's timed gaps between steps, the loop's own work)."""

    window: int = 30
    warmup: int = 5
    confidence: float = 0.95
    _seen: int = 0
    _times: list = field(default_factory=list)
    _gaps: list = field(default_factory=list)

    def observe(self, seconds: float, gap: float | None = None) -> tuple[float, float, float, list] | None:
        self._seen += 1
        if self._seen <= self.warmup:
            return None
        self._times.append(seconds)
        if gap is not None:
            self._gaps.append(gap)
        if len(self._times) < self.window:
            return None
        (times, self._times), (gaps, self._gaps) = (self._times, []), (self._gaps, [])
        low, high = median_ci(times, self.confidence)
        return median(times), low, high, gaps


def calibrated_text(entry: dict) -> str:
    """What a calibration learned, in words (the first one is logged)."""
    loop = entry["loop_seconds"]
    if not entry["loop_timed"]:
        return f"fitted the loop's own work to {loop * 1e3:.2f} ms/step"
    low, high = entry["loop_interval"]
    return (f"the loop's own work between steps is {loop * 1e3:.2f} ms/step (timed; {low * 1e3:.2f}-{high * 1e3:.2f}), "
            f"and the passes ran {entry['pass_drift']:+.0%} against the profile")

