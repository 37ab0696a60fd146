"""The machine around a benchmark: other processes' load, and the allocator's page faults."""

from __future__ import annotations

import os
import time

__all__ = ["LoadMeter", "wait_quiet", "retain_freed_memory"]


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


def retain_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory in the process (returns False elsewhere).

    ``mallopt``: ``M_MMAP_THRESHOLD`` 32 MiB (blocks below it come from the heap, not from a
    fresh ``mmap`` that the kernel must fault in and zero again after every ``munmap``; setting
    it also stops glibc's dynamic threshold), ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD``
    256 MiB (the heap is not shrunk after each step). Freed memory then serves the next step's
    tensors without page faults; the cost is a resident set that stays at its peak. Process
    wide; the environment variables ``MALLOC_MMAP_THRESHOLD_`` etc. do the same at start-up.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(k, v) == 1 for k, v in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30),
                                               (m_top_pad, 256 << 20)))
