"""The share policy: what the threaded executor does when both roles share hardware.

Two thread teams on the same cores oversubscribe them (and libgomp throttles its spin-waits
once there are more OpenMP threads than CPUs), so by default the jobs run on the calling thread
with all the pool's threads, one gradient after the other, exactly as the inline executor runs
them (*time-sliced*). Small gradients scale poorly over many threads, though, and running them
beside the descent can fill cores the descent leaves idle, so with ``share="auto"`` (the
default) the executor *measures*: its first jobs alternate between the two arrangements in
blocks (:class:`ShareChooser`), then it keeps the time-sliced one unless the concurrent one (a
worker thread on the same cores) gave shorter steps by more than 3%, and releases the other.
Both compute the same numbers. ``share="time-slice"`` or ``"concurrent"`` fixes the choice.
"""

from __future__ import annotations

import statistics

__all__ = ["SHARE_MODES", "SLICED", "CONCURRENT", "ShareChooser"]

SHARE_MODES = ("auto", "time-slice", "concurrent")
SLICED, CONCURRENT = "time-sliced", "concurrent"  # the two arrangements of a shared device


class ShareChooser:
    """Times the two arrangements of a shared device on the user's own steps, A B A B.

    Job i runs in ``schedule[i]``: a warm-up block of each arrangement, then ``blocks`` blocks
    of each, alternating. The interval from one submit to the next covers the job submitted at
    its start and the step around it, so it is attributed to that job's arrangement; the first
    ``skip`` intervals of a block (the switch) are left out. Once the schedule is done the
    concurrent arrangement is chosen only if its median step is shorter than the time-sliced
    one's by more than ``margin``.
    """

    def __init__(self, block: int = 6, skip: int = 2, blocks: int = 2, margin: float = 0.03):
        pair = [SLICED] * block + [CONCURRENT] * block
        self.schedule = pair * (blocks + 1)
        self.block, self.skip, self.warm, self.margin = block, skip, 2 * block, margin
        self.samples: dict[str, list[float]] = {SLICED: [], CONCURRENT: []}
        self._i = 0
        self._last: float | None = None
        self.chosen: str | None = None

    def next(self, now: float) -> str:
        """The arrangement of the next job (records the interval the previous one closed)."""
        i = self._i
        if self._last is not None:
            prev = i - 1
            if prev >= self.warm and prev % self.block >= self.skip:
                self.samples[self.schedule[prev]].append(now - self._last)
        self._last = now
        if i >= len(self.schedule):
            t, c = (statistics.median(self.samples[k]) for k in (SLICED, CONCURRENT))
            self.chosen = CONCURRENT if c < (1.0 - self.margin) * t else SLICED
            return self.chosen
        self._i += 1
        return self.schedule[i]

    def describe(self) -> dict:
        out = {"chosen": self.chosen, "jobs_measured": self._i}
        for k, v in self.samples.items():
            out[f"{k}_step_seconds"] = statistics.median(v) if v else None
        return out
