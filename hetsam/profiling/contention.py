"""Contention: how much slower each of two pools of one socket computes while the other does too."""

from __future__ import annotations

import math
import threading

from hetsam._progress import Progress
from hetsam.profiling.budget import Settings
from hetsam.profiling.ladder import TimedReplica
from hetsam.profiling.stats import Measurement
from hetsam.profiling.targets import Target, run_threads

__all__ = ["contention_pair"]

_CONTENTION_ROUNDS = 2  # rounds of (a alone, b alone, both)


def contention_pair(model, loss_fn, batch, a: Target, b: Target, n: int, settings: Settings,
                     allot: float, progress: Progress) -> tuple[float, float, str]:
    """Slowdowns of a and b while both compute: ``median(together) / median(alone)``.

    Side by side, in rounds (a alone, b alone, both together) x 2, so slow drifts of the
    machine affect both sides alike. A step that was still running when the other side
    stopped is dropped: it overlapped only in part.
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

    alone_a, alone_b, tog_a, tog_b = [], [], [], []
    for r in range(_CONTENTION_ROUNDS):
        progress.step(f"contention {a.id} + {b.id}: round {r + 1}")
        xa = run_threads([(a, alone(a))])[0]
        xb = run_threads([(b, alone(b))])[0]
        ya, yb = together(max(len(xa), len(xb)))
        alone_a += xa
        alone_b += xb
        tog_a += ya
        tog_b += yb
    for rep in replicas.values():
        rep.release()
    if not tog_a or not tog_b:
        return 1.0, 1.0, f"contention {a.id}+{b.id}: too few overlapping steps; 1.0 recorded"
    ra = Measurement(tog_a).median / Measurement(alone_a).median
    rb = Measurement(tog_b).median / Measurement(alone_b).median
    note = (f"contention {a.id}+{b.id} at batch {n}: raw slowdowns {ra:.3f}, {rb:.3f} "
            f"({len(tog_a)}/{len(tog_b)} overlapping steps in {_CONTENTION_ROUNDS} rounds; values below 1 recorded as 1)")
    return max(1.0, ra), max(1.0, rb), note
