"""Other processes' share of this machine's CPUs: the profiler marks a stage measured under load
(and measures it again), the bench discards a noisy round, and the cache re-measures a busy
profile once the machine is quiet. psutil reads the machine's CPU times (``/proc/stat``) and this
process's own; a missing probe only loses the load figure (None), never the measurement."""

from __future__ import annotations

import os
import time

__all__ = ["LoadMeter", "wait_quiet", "other_load", "busy_note", "BUSY_SHARE"]

BUSY_SHARE = 0.25  # other processes' share of the usable CPUs above which a measurement is taken as busy


def busy_note(share: float, stage: str, measured_twice: bool) -> str:
    """The profile's note for a stage measured while other processes used ``share`` of the CPUs."""
    again = " (measured twice)" if measured_twice else ""
    return (f"other processes used {share:.0%} of the CPUs while the {stage} stage was measured{again}: the machine "
            "may be busy; re-profile when it is quiet")


class LoadMeter:
    """Other processes' share of the usable CPUs between ``start`` and ``stop``."""

    def __init__(self) -> None:
        try:
            import psutil

            self._psutil = psutil
            self._me = psutil.Process()
        except Exception:  # noqa: BLE001 - a missing probe only loses the load column
            self._psutil = None
        self._cpus = len(os.sched_getaffinity(0))

    def _sample(self):
        if self._psutil is None:
            return None
        t = self._psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        mine = self._me.cpu_times()
        return time.perf_counter(), busy, mine.user + mine.system

    def start(self) -> None:
        self._t0 = self._sample()

    def wait_quiet(self, limit: float, threshold: float = 0.05, window: float = 1.0) -> bool:
        """Wait (up to ``limit`` seconds) for a ``window`` in which other processes use less
        than ``threshold`` of the CPUs; returns whether one came."""
        deadline = time.perf_counter() + limit
        while True:
            self.start()
            time.sleep(window)
            share = self.stop()
            if share is None or share < threshold:
                return True
            if time.perf_counter() >= deadline:
                return False

    def stop(self) -> float | None:
        t1 = self._sample()
        if self._t0 is None or t1 is None:
            return None
        wall = t1[0] - self._t0[0]
        machine = os.cpu_count() or self._cpus
        other = (t1[1] - self._t0[1]) - (t1[2] - self._t0[2])
        return max(0.0, other) / (wall * min(machine, self._cpus)) if wall > 0 else None


def wait_quiet(limit: float) -> bool:
    """Wait up to ``limit`` seconds for a second in which other processes use < 5% of the CPUs."""
    return LoadMeter().wait_quiet(limit)


def other_load(window: float = 0.5) -> float | None:
    """Other processes' share of the usable CPUs over the next ``window`` seconds (None: no probe)."""
    meter = LoadMeter()
    meter.start()
    time.sleep(window)
    return meter.stop()

