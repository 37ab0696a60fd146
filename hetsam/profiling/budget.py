"""The profiler's time budget and repeat rules (``hetsam.profiling.measure``, module docstring)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

__all__ = ["Clock", "Settings", "DeviceResult", "DEFAULT_WARMUP", "DEFAULT_MIN_REPEATS", "DEFAULT_MAX_REPEATS",
           "DEFAULT_TARGET_SECONDS", "W_DEVICE", "W_PAIR", "W_LINKS"]

DEFAULT_WARMUP = 2
DEFAULT_MIN_REPEATS = 5
DEFAULT_MAX_REPEATS = 50
DEFAULT_TARGET_SECONDS = 1.0  # per ladder point, when repeats is not fixed
W_DEVICE, W_PAIR, W_LINKS = 1.0, 1.0, 0.1  # shares of the remaining budget per phase


class Clock:
    """The time budget: shares of what is left, handed to phases and ladder points."""

    def __init__(self, seconds: float | None):
        self.start = time.perf_counter()
        self.seconds = seconds
        self.notes: list[str] = []

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - self.start)

    def share(self, weight: float, remaining_weight: float) -> float:
        return max(0.0, self.left()) * weight / remaining_weight if self.seconds is not None else math.inf


@dataclass
class Settings:
    warmup: int
    repeats: int | None
    min_repeats: int
    max_repeats: int
    target: float

    def wanted(self, t_est: float) -> int:
        if self.repeats is not None:
            return self.repeats
        want = math.ceil(self.target / max(t_est, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, want))


@dataclass
class DeviceResult:
    batch_sizes: list[int] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    max_batch_size: int | None = None
    update_seconds: float | None = None
    climb_seconds: float | None = None
    auxiliary_seconds: float | None = None
    sliced_handoff_seconds: float | None = None
    round_medians: list[dict[int, float]] = field(default_factory=list)  # per timed round: b -> median
    notes: list[str] = field(default_factory=list)
