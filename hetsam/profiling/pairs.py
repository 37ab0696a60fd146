"""Two devices computing together: the profile's record (``contention`` in
``hetsam.profiling.schema``) and the simulator's model of it, its fit and its inverse.

``slowdown``: how much slower each device computes while the other computes too (1.0: no effect),
with the second device's job at the profile's batch; ``by_job_batch``: the same with the job at
each of these batches (ascending); ``handoff_seconds``: what a step of the threaded executor on
the pair costs beyond its two overlapped passes.

The model (``simulator/engine.py``): while both compute, device ``a`` progresses at ``1/s_a``
and ``b`` at ``1/s_b``; whichever finishes first leaves the other alone for the rest. The
profiler fits ``(s_a, s_b)`` from a lock-step of the descent's side of a step on ``a`` and an
ascent job on ``b`` (``hetsam/profiling/contention.py``), with the job at the profile's batch n
and at n/4: the slowdowns depend on the job's batch. A small job is mostly per-operation work
that the other thread's work delays in full (measured on the MLP at b = 64: the job's slowdown
1.70 at b' = 4, 1.50 at 16 and 1.20 at 64; ``examples/bench_contention.py``). Between measured
batches the factors are interpolated in log(batch); beyond them, the nearest is used
(docs/architecture.md, "Measuring and step costs"). Pure Python: the cost model reads it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hetsam.profiling.checker import BATCH, SECONDS
from hetsam.profiling.checker import Checker as _Checker

__all__ = ["Contention", "MAX_SLOWDOWN", "fit_slowdowns", "lockstep_seconds", "at_job_batch"]

MAX_SLOWDOWN = 8.0  # a fit beyond this (or a non-positive denominator) is noise; recorded as this


def fit_slowdowns(d: float, j: float, d2: float, j2: float) -> tuple[float, float]:
    """``(s_a, s_b)`` from the medians alone (``d``: descent, ``j``: job) and together (``d2``,
    ``j2``), each at least 1 and at most :data:`MAX_SLOWDOWN`. When the job ends first
    (``j2 <= d2``) it was overlapped throughout, so ``s_b = j2/j``, and the descent did ``j2/s_a``
    of its work in the overlap and the rest alone: ``d2 = j2 + d − j2/s_a``; symmetrically when
    the descent ends first."""

    def bounded(x: float) -> float:
        return min(MAX_SLOWDOWN, max(1.0, x)) if math.isfinite(x) else MAX_SLOWDOWN

    if j2 <= d2:
        rest = j2 + d - d2
        return bounded(j2 / rest if rest > 0 else math.inf), bounded(j2 / j)
    rest = d2 + j - j2
    return bounded(d2 / d), bounded(d2 / rest if rest > 0 else math.inf)


def lockstep_seconds(d: float, j: float, s_a: float, s_b: float) -> tuple[float, float]:
    """``(d2, j2)``: the times together of work ``d`` and ``j`` (alone) that start at once (the
    inverse of :func:`fit_slowdowns`)."""
    if j * s_b <= d * s_a:  # the job ends first, at j2 = s_b·j, with j2/s_a of the descent done
        j2 = j * s_b
        return j2 + d - j2 / s_a, j2
    d2 = d * s_a
    return d2, d2 + j - d2 / s_b


def at_job_batch(points: Sequence[tuple[int, float]], batch: int) -> float:
    """A slowdown measured with the job at each of ``points``' batches (ascending), at ``batch``:
    linear in log(batch) between two of them, the nearest beyond them."""
    batches = [m for m, _ in points]
    i = bisect.bisect_left(batches, batch)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (m0, s0), (m1, s1) = points[i - 1], points[i]
    w = (math.log(batch) - math.log(m0)) / (math.log(m1) - math.log(m0))
    return s0 + w * (s1 - s0)


@dataclass(frozen=True)
class Contention:
    devices: tuple[str, str]
    slowdown: tuple[float, float]
    handoff_seconds: float | None = None  # a worker step's cost beyond its overlapped passes (None: not measured)
    by_job_batch: tuple[tuple[int, tuple[float, float]], ...] = ()  # (job batch, slowdowns), ascending
    round_trip_seconds: float | None = None  # a lone job's submit-to-result time beyond its pass (None: not measured)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"devices": list(self.devices), "slowdown": list(self.slowdown)}
        if self.handoff_seconds is not None:
            d["handoff_seconds"] = self.handoff_seconds
        if self.round_trip_seconds is not None:
            d["round_trip_seconds"] = self.round_trip_seconds
        if self.by_job_batch:
            d["by_job_batch"] = [{"batch": m, "slowdown": list(s)} for m, s in self.by_job_batch]
        return d

    @classmethod
    def parse(cls, value, path: str, chk: _Checker) -> Contention:
        chk.obj(value, path, {"devices", "slowdown"}, {"handoff_seconds", "by_job_batch", "round_trip_seconds"})
        devs = chk.array(value["devices"], f"{path}.devices")
        if len(devs) != 2:
            chk.fail(f"{path}.devices", "must name exactly two devices")
        ids = tuple(chk.device_id(d, f"{path}.devices[{i}]") for i, d in enumerate(devs))
        handoff, trip = (value.get(k) for k in ("handoff_seconds", "round_trip_seconds"))
        if handoff is not None:
            handoff = float(chk.num(handoff, f"{path}.handoff_seconds", nonneg=True, high=SECONDS[1]))
        if trip is not None:
            trip = float(chk.num(trip, f"{path}.round_trip_seconds", nonneg=True, high=SECONDS[1]))
        points = []
        for i, x in enumerate(chk.array(value.get("by_job_batch", []), f"{path}.by_job_batch", nonempty=False, most=64)):
            chk.obj(x, f"{path}.by_job_batch[{i}]", {"batch", "slowdown"}, set())
            m = chk.num(x["batch"], f"{path}.by_job_batch[{i}].batch", positive=True, integer=True, high=BATCH)
            points.append((int(m), _factors(x["slowdown"], f"{path}.by_job_batch[{i}].slowdown", chk)))
        if any(a[0] >= b[0] for a, b in zip(points, points[1:])):
            chk.fail(f"{path}.by_job_batch", f"batches must be strictly ascending, got {[m for m, _ in points]}")
        return cls(ids, _factors(value["slowdown"], f"{path}.slowdown", chk), handoff, tuple(points), trip)  # type: ignore[arg-type]


def _factors(value, path: str, chk: _Checker) -> tuple[float, float]:
    slow = chk.array(value, path)
    if len(slow) != 2:
        chk.fail(path, "must hold exactly two slowdown factors")
    return tuple(float(chk.num(s, f"{path}[{i}]", positive=True, low=0.01, high=100.0)) for i, s in enumerate(slow))  # type: ignore[return-value]
