"""One device's measurements: forward+backward over the batch ladder, and the update.

The gradient pass timed here is the executors' own: a :class:`~hetsam.execution.replica.Replica`
and its ``run`` (``compute_gradient`` under the role's thread count), so what is profiled is what
runs. GPUs are timed with CUDA events around the pass. A batch that does not fit
(``torch.OutOfMemoryError`` or an allocator "out of memory") ends the device's ladder.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from hetsam._progress import Progress
from hetsam.execution.batches import detach_to, slice_batch
from hetsam.execution.jobs import GradJob
from hetsam.execution.replica import Replica
from hetsam.profiling.budget import Clock, DeviceResult, Settings
from hetsam.profiling.stats import Measurement
from hetsam.profiling.targets import Target

__all__ = ["TimedReplica", "measure_ladder", "measure_update", "device_job", "is_oom"]

_OOM_TYPES = tuple({getattr(torch, "OutOfMemoryError", RuntimeError),
                    getattr(torch.cuda, "OutOfMemoryError", RuntimeError)} - {RuntimeError})


class TimedReplica:
    """The executors' replica of the model on one device, built inside that device's thread,
    with the sample batch already there; ``time_step(n)`` times one gradient pass on n samples."""

    def __init__(self, model, loss_fn, batch, target: Target):
        self.device = torch.device(target.torch_device)
        self.cuda = target.kind == "gpu"
        params = [p for p in model.parameters() if p.requires_grad]
        self.replica = Replica(model, loss_fn, params, device=self.device, threads=target.threads, amp_dtype=None,
                               out_device=self.device)
        self.replica.module.train()
        self.batch = detach_to(batch, self.device)

    @property
    def params(self):
        return self.replica.params

    def step(self, n: int):
        """One gradient pass on the first ``n`` samples; returns its result."""
        return self.replica.run(GradJob(0, "profile", slice_batch(self.batch, 0, n), params=()))

    def timed(self, fn: Callable[[], None]) -> float:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def time_step(self, n: int) -> float:
        return self.timed(lambda: self.step(n))

    def release(self) -> None:
        del self.replica, self.batch
        if self.cuda:
            torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    if _OOM_TYPES and isinstance(exc, _OOM_TYPES):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def measure_ladder(replica: TimedReplica, target: Target, ladder: list[int], settings: Settings,
                    allot: float, clock: Clock, progress: Progress) -> DeviceResult:
    res = DeviceResult()
    t_dev = time.perf_counter()
    last: tuple[int, float] | None = None
    for i, b in enumerate(ladder):
        spent = time.perf_counter() - t_dev
        left = allot - spent
        point = left * b / sum(ladder[i:]) if math.isfinite(allot) else math.inf
        if i > 0 and last is not None and math.isfinite(allot):
            guess = last[1] * b / last[0] * (settings.warmup + 1)
            if guess > left:
                res.notes.append(f"{target.id}: skipped batch size(s) {', '.join(map(str, ladder[i:]))} (time budget)")
                clock.notes.append(res.notes[-1])
                break
        progress.step(f"{target.id}: batch {b}")
        t_point = time.perf_counter()
        try:
            t_est = math.inf
            for _ in range(max(1, settings.warmup)):
                t_est = replica.time_step(b)
            want = settings.wanted(t_est)
            times = []
            while len(times) < want:
                if times and time.perf_counter() - t_point + t_est > point:
                    break
                times.append(replica.time_step(b))
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            if replica.cuda:
                torch.cuda.empty_cache()
            res.max_batch_size = res.batch_sizes[-1] if res.batch_sizes else None
            res.notes.append(f"{target.id}: batch {b} did not fit in memory; ladder stops at {res.max_batch_size}")
            break
        if len(times) < want:
            clock.notes.append(f"{target.id}: batch {b}: {len(times)} of {want} repeats (time budget)")
        m = Measurement(times)
        med, spread = m.median, m.iqr
        res.batch_sizes.append(b)
        res.medians.append(med)
        res.spreads.append(spread)
        res.repeats.append(len(times))
        last = (b, med)
        progress.step(f"{target.id}: batch {b}", advance=1)
    return res


def measure_update(replica: TimedReplica, n: int, allot: float) -> float | None:
    """One SGD-with-momentum update over the parameters (gradients of a batch of ``n``)."""
    params = replica.params
    if not params:
        return None
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    for p, g in zip(params, replica.step(n).grads):
        p.grad = g
    opt.step()  # creates the momentum buffers
    t_est = replica.timed(opt.step)
    reps = max(3, min(50, math.ceil(0.2 / max(t_est, 1e-9))))
    times, t0 = [], time.perf_counter()
    for _ in range(reps):
        times.append(replica.timed(opt.step))
        if time.perf_counter() - t0 > min(allot, 0.5):
            break
    return Measurement(times).median


# ---------------------------------------------------------------------------------------
def device_job(model, loss_fn, batch, target, ladder, settings, allot, clock, progress):
    def job():
        replica = TimedReplica(model, loss_fn, batch, target)
        try:
            res = measure_ladder(replica, target, ladder, settings, allot * 0.95, clock, progress)
            if res.batch_sizes:
                res.update_seconds = measure_update(replica, res.batch_sizes[0], allot * 0.05)
            return res
        finally:
            replica.release()

    return job
