"""Contention: how much slower each of two pools of one socket computes while the other does too.

Measured the way AutoSAM runs two pools: the descent's side of a step on pool ``a`` in a thread
pinned there (the climb to θ + e, the gradient pass, the restore and the update, through the
rules' ``Runtime``: ``hetsam.profiling.ladder.DescentWork``), and the ascent as a job of the
threaded executor itself (:class:`hetsam.execution.threads.ThreadedExecutor`: its worker thread
pinned to pool ``b``, its staging copies and hand-off), one job submitted at the start of each
step and waited for at its end, in lock-step as a step of AsyncSAM or SAMPa does. The climb and
the update are parameter-sized, memory-bound passes that the other pool's job slows more than
the gradient pass (MLP at b = 64: the climb took 0.60 ms in AutoSAM's AsyncSAM step on two
pools against 0.35 ms in the profile of that machine), so they are measured inside the
contention, as the simulator slows the whole descent task.

The slowdowns are those of the simulator's model, fitted from the medians alone and together
(:func:`hetsam.profiling.pairs.fit_slowdowns`). The profiler fits them with the job at the
profile's batch n and at n/4 (:func:`contention_pair`'s ``job_batch``): a small job is slowed
more (``hetsam/profiling/pairs.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from hetsam._progress import Progress
from hetsam.execution.batches import detach_to, slice_batch
from hetsam.execution.executor import Placement
from hetsam.execution.jobs import ASCENT, GradJob
from hetsam.execution.threads import ThreadedExecutor
from hetsam.profiling.budget import Settings
from hetsam.profiling.ladder import DescentWork, TimedReplica
from hetsam.profiling.pairs import fit_slowdowns
from hetsam.profiling.stats import median
from hetsam.profiling.targets import Target, run_threads

__all__ = ["PairFit", "contention_pair"]

_CONTENTION_ROUNDS = 6  # rounds of (descent alone, job alone, both), the order reversed every other round


@dataclass(frozen=True)
class PairFit:
    """What :func:`contention_pair` measured: the slowdowns, the hand-off, the medians (alone:
    ``descent``, ``job``; in lock-step: ``descent_together``, ``job_together``), a lone job's round
    trip beyond its pass (``round_trip_seconds``) and a note."""

    slowdowns: tuple[float, float]
    handoff_seconds: float
    descent: float
    job: float
    descent_together: float
    job_together: float
    note: str
    round_trip_seconds: float


def contention_pair(model, loss_fn, batch, a: Target, b: Target, n: int, settings: Settings,
                    allot: float, progress: Progress, *, job_batch: int | None = None) -> PairFit:
    """Slowdowns of pool ``a`` (the descent's side of a step at batch ``n``) and pool ``b`` (the ascent
    job, at ``job_batch``, by default ``n`` as the profiler fits it), and the hand-off: what a
    lock-step step costs beyond ``max(D', J')`` (submit, wait, both threads' Python), taken step by
    step (``step − max(its descent pass, its job)``) so the passes' noise cancels: from medians of
    different steps, a ResNet-20 profile once measured 7.6 ms where 1.3–1.9 ms was usual. Also a
    lone job's round trip beyond its pass (submit to result, less the job's own seconds: staging,
    the worker's wake-up and load, the return), the latency on the job's path.

    Side by side, in rounds (descent alone, job alone, both; the next round in the opposite
    order), each a few seconds long; each round gives its own fit (:func:`fit_slowdowns`) from
    its medians, and the slowdown is the median over the rounds: the machine's drift over minutes
    then cancels within a round instead of biasing a ratio of two distant phases.
    """
    per_phase = allot / (3 * _CONTENTION_ROUNDS + 0.5) if math.isfinite(allot) else math.inf
    cap = settings.repeats if settings.repeats is not None else 15
    params = [p for p in model.parameters() if p.requires_grad]
    executor = ThreadedExecutor()
    executor.bind(model, loss_fn, params, device=torch.device(b.torch_device), threads=b.threads or 1, amp_dtype=None,
                  placement=Placement(a.id, b.id, a.threads))
    job_n = n if job_batch is None else job_batch
    job_data = slice_batch(detach_to(batch, torch.device(b.torch_device)), 0, job_n)
    buffers, training = list(model.buffers()), tuple(m.training for m in model.modules())

    def job(key: int) -> GradJob:
        return GradJob(key, ASCENT, job_data, params=params, buffers=buffers, training=training)

    state: dict = {"count": None, "key": 0}

    def phase(kind: str):
        def body():
            rep = state.get("rep")
            if rep is None:  # built in a's thread, warmed with the job's worker
                rep = state["rep"] = TimedReplica(model, loss_fn, batch, a)
                state["work"] = DescentWork(rep)
                state["ghat"] = [g.detach().clone() for g in rep.step(n).grads]
                for _ in range(max(1, settings.warmup)):
                    side(rep, state["work"], fresh_ghat())
                    executor.wait(executor.submit(job(-1)))
            work = state["work"]
            if state["count"] is None:
                ghat = fresh_ghat()
                t_est = rep.timed(lambda: side(rep, work, ghat))
                want = min(settings.wanted(t_est), cap)
                state["count"] = max(1, min(want, math.floor(per_phase / max(t_est, 1e-9)))) if math.isfinite(per_phase) else want
            d, j, trip = [], [], []
            for _ in range(state["count"]):
                state["key"] += 1
                ghat = fresh_ghat()  # untimed: in a step, ĝ is the worker's result
                if kind == "descent":
                    d.append(rep.timed(lambda: side(rep, work, ghat)))
                    continue
                start = time.perf_counter()
                future = executor.submit(job(state["key"]))
                if kind == "both":
                    d.append(rep.timed(lambda: side(rep, work, ghat)))
                j.append(executor.wait(future).seconds)
                trip.append(time.perf_counter() - start)  # submit to result, as the descent thread sees it
            return d, j, trip

        def fresh_ghat():  # a copy of ĝ for the climb to overwrite
            return [g.clone() for g in state["ghat"]]

        def side(rep, work, ghat):  # the descent's side of a step: climb, pass, restore, update
            grads = work.climb(ghat, lambda: rep.step(n).grads)
            work.update(grads)

        return run_threads([(a, body)])[0]

    fits, raw = [], []
    try:
        for r in range(_CONTENTION_ROUNDS):
            progress.step(f"contention {a.id} + {b.id}: round {r + 1}")
            order = ("descent", "job", "both") if r % 2 == 0 else ("both", "job", "descent")
            got = {kind: phase(kind) for kind in order}
            d, j = median(got["descent"][0]), median(got["job"][1])
            d2, j2 = median(got["both"][0]), median(got["both"][1])
            # beyond the compute, step by step (a step's own pass times cancel its noise): a lone job's
            # round trip, and a lock-step step over max(D', J')
            both = got["both"]
            raw.append((d, j, d2, j2, median([t - x for x, t in zip(got["job"][1], got["job"][2])]),
                        median([t - max(x, y) for x, y, t in zip(*both)])))
            fits.append(fit_slowdowns(d, j, d2, j2))
    finally:
        executor.close()
        rep = state.get("rep")
        if rep is not None:
            state["work"].clear()
            rep.release()
    sa, sb = median([f[0] for f in fits]), median([f[1] for f in fits])
    d, j, d2, j2, trip, handoff = (median([x[i] for x in raw]) for i in range(6))
    at = f"batch {n}" if job_n == n else f"batch {n} (the job at {job_n})"
    note = (f"contention {a.id}+{b.id} at {at}, as the threaded executor runs them (the descent's climb, pass and update on {a.id}, "
            f"ascent job on {b.id}'s worker, in lock-step): slowdowns {sa:.3f}, {sb:.3f} (medians of {len(fits)} rounds' "
            f"fits, {min(f[0] for f in fits):.3f}-{max(f[0] for f in fits):.3f} and {min(f[1] for f in fits):.3f}-"
            f"{max(f[1] for f in fits):.3f}); medians alone {d * 1e3:.2f}/{j * 1e3:.2f} ms, together {d2 * 1e3:.2f}/"
            f"{j2 * 1e3:.2f} ms; a lone job's round trip beyond its compute {trip * 1e3:.3f} ms; the hand-off (a lock-step step "
            f"beyond max(D', J')) {handoff * 1e3:.3f} ms; {state['count']} steps per phase")
    return PairFit((sa, sb), max(0.0, handoff), d, j, d2, j2, note, max(0.0, trip))
