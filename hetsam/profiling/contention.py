"""Contention: how much slower each of two pools of one socket computes while the other does too."""

from __future__ import annotations

import math
import threading

from hetsam._progress import Progress
from hetsam.profiling.budget import Settings
from hetsam.profiling.ladder import TimedReplica
from hetsam.profiling.stats import Measurement, median
from hetsam.profiling.targets import Target, run_threads

__all__ = ["contention_pair"]

_CONTENTION_ROUNDS = 6  # rounds of (a alone, b alone, both), the order reversed every other round


def contention_pair(model, loss_fn, batch, a: Target, b: Target, n: int, settings: Settings,
                     allot: float, progress: Progress) -> tuple[float, float, str]:
    """Slowdowns of a and b while both compute: ``median(together) / median(alone)``.

    Side by side, in rounds (a alone, b alone, both together; the next round in the opposite
    order), each a few seconds long. Each round gives its own ratio of medians, and the slowdown
    is the median over the rounds: the machine's drift over minutes (tens of percent on a shared
    machine) then cancels within a round instead of biasing a ratio of two distant phases. A step
    that was still running when the other side stopped is dropped: it overlapped only in part.
    """
    phases = 3 * _CONTENTION_ROUNDS
    per_phase = allot / (phases + 0.5) if math.isfinite(allot) else math.inf
    replicas: dict[str, TimedReplica] = {}
    cap = settings.repeats if settings.repeats is not None else 15

    def alone(target):
        def job():
            rep = replicas.get(target.id)
            warm = 1
            if rep is None:
                rep = replicas[target.id] = TimedReplica(model, loss_fn, batch, target)
                warm = max(1, settings.warmup)
            t_est = math.inf
            for _ in range(warm):
                t_est = rep.time_step(n)
            want = min(settings.wanted(t_est), cap)
            if math.isfinite(per_phase):
                want = max(1, min(want, math.floor(per_phase / max(t_est, 1e-9))))
            return [rep.time_step(n) for _ in range(want)]

        return job

    def together(want):
        barrier, stop, lock, done = threading.Barrier(2), threading.Event(), threading.Lock(), [False, False]

        def job_for(i, target):
            def job():
                rep = replicas[target.id]
                rep.time_step(n)  # warm in this thread
                barrier.wait()
                times = []
                while not stop.is_set():
                    t = rep.time_step(n)
                    if stop.is_set():
                        break
                    times.append(t)
                    if len(times) >= want:
                        with lock:
                            done[i] = True
                            if all(done):
                                stop.set()
                return times

            return job

        return run_threads([(a, job_for(0, a)), (b, job_for(1, b))])

    ratios_a, ratios_b, overlapping = [], [], [0, 0]
    for r in range(_CONTENTION_ROUNDS):
        progress.step(f"contention {a.id} + {b.id}: round {r + 1}")
        if r % 2 == 0:
            xa = run_threads([(a, alone(a))])[0]
            xb = run_threads([(b, alone(b))])[0]
            ya, yb = together(max(len(xa), len(xb)))
        else:
            ya, yb = together(max(len(xa), len(xb)))
            xb = run_threads([(b, alone(b))])[0]
            xa = run_threads([(a, alone(a))])[0]
        if ya and yb:
            ratios_a.append(Measurement(ya).median / Measurement(xa).median)
            ratios_b.append(Measurement(yb).median / Measurement(xb).median)
            overlapping[0] += len(ya)
            overlapping[1] += len(yb)
    for rep in replicas.values():
        rep.release()
    if not ratios_a:
        return 1.0, 1.0, f"contention {a.id}+{b.id}: too few overlapping steps; 1.0 recorded"
    ra, rb = median(ratios_a), median(ratios_b)
    note = (f"contention {a.id}+{b.id} at batch {n}: raw slowdowns {ra:.3f}, {rb:.3f} (medians of {len(ratios_a)} "
            f"rounds' ratios, {min(ratios_a):.3f}-{max(ratios_a):.3f} and {min(ratios_b):.3f}-{max(ratios_b):.3f}; "
            f"{overlapping[0]}/{overlapping[1]} overlapping steps; values below 1 recorded as 1)")
    return max(1.0, ra), max(1.0, rb), note
