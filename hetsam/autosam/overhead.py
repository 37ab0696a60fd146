"""AutoSAM's own work per step, beyond what a profile prices (docs/architecture.md, "Step costs").

A profile prices a step from its passes and from the descent's fixed work measured through the
:class:`~hetsam.execution.runtime.Runtime` (the update ``u`` with its non-finite check, the climb
``c``) and the executor (its hand-off ``h``). ``AutoSAM.step`` does more on the calling thread:
its argument checks and step hooks, the prefetcher, the rule's bookkeeping, the thread binding of
a pool, and for a guarded strategy the divergence guard. Measured on the MLP at b = 64 (steps of
about 2 ms), that was 0.29 ms a step for SGD and SAM alike, and 0.28 ms more for a step that
hands its ascent to the executor: without them the model put SAM at 1.91x SGD's step where it
ran at 1.75x.

:func:`with_step_overheads` runs ``AutoSAM`` itself (the class is passed in: this module sits below
``hetsam.autosam.optimizer``, which hands it to the controller) on a copy of the model on each
CPU device of a profile, at the profile's smallest batch (the work is per step, not per sample): SGD, then
AsyncSAM with its ascent time-sliced on the same device. Inside each step it times the parts the
profile prices (the runtime's passes, update and climb; the executor's submit and wait), so
``step − parts`` is free of the machine's drift between the profile and this stage:

- ``step_overhead_seconds`` ``o`` = median of ``step − parts`` over the SGD steps;
- ``job_overhead_seconds`` ``j`` = median over the AsyncSAM steps, minus ``o`` (at least 0).

The cost model adds ``o`` to every step and ``j`` to the hand-off of a strategy that uses the
executor. GPU descents are not measured: there this host work overlaps the device's queue. Nor
is a CPU device whose smallest profiled pass takes over 0.25 s (the own work is noise beside it),
or anything in a process of a distributed job (each rank would time its own copy while the others
run); those keep none, which the cost model reads as 0.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable

import torch

from hetsam._progress import Progress
from hetsam.execution.batches import batch_size, detach_to, slice_batch
from hetsam.execution.threads import ThreadedExecutor
from hetsam.hardware.kinds import kind_of
from hetsam.profiling.schema import Profile
from hetsam.profiling.stats import median
from hetsam.strategies.plan import Plan
from hetsam.strategies.registry import ASYNC_SAM, SGD

__all__ = ["with_step_overheads", "measure_overheads"]

_WARMUP = 5  # untimed steps: the worker, the thread team and the allocator settle
_MIN_STEPS, _MAX_STEPS = 10, 60
_SECONDS = 0.5  # timed seconds per arrangement, within the step counts above
_LONGEST_PASS = 0.25  # seconds: a device whose smallest profiled pass takes longer is not timed
_PRICED = {"runtime": ("gradient", "apply", "save", "climb", "restore"), "executor": ("submit", "wait")}


def with_step_overheads(profile: Profile, model, loss_fn, sample_batch, *, optimizer, progress: bool = False,
                        log: Callable[[str], None] | None = None) -> Profile:
    """``profile`` with ``step_overhead_seconds`` and ``job_overhead_seconds`` measured by
    ``optimizer`` (the ``AutoSAM`` class) on each of its CPU devices (module docstring); a device
    where the measurement fails keeps none, with a line to ``log``."""
    devices = [d for d in profile.devices if kind_of(d.id).pools]
    if not devices or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return profile
    n = min(d.grad_seconds.batch_sizes[0] for d in devices)  # the ladders ascend
    # beside passes this long the own work (a fraction of a millisecond) is noise, and timing it would take minutes
    devices = [d for d in devices if d.grad_seconds.median[0] <= _LONGEST_PASS]
    batch = slice_batch(sample_batch, 0, min(n, batch_size(sample_batch)))
    bar = Progress(progress, len(devices))
    out, notes = [], []
    try:
        for d in profile.devices:
            if d not in devices:
                out.append(d)
                continue
            bar.step(f"AutoSAM's own work on {d.id}")
            try:
                o, j = measure_overheads(optimizer, model, loss_fn, batch, d.id)
            except Exception as exc:  # noqa: BLE001 - a failed stage leaves the profile as measured
                notes.append(f"AutoSAM's own work on {d.id} not measured ({type(exc).__name__}: {exc})")
                out.append(d)
                continue
            out.append(dataclasses.replace(d, step_overhead_seconds=o, job_overhead_seconds=j))
    finally:
        bar.close()
    for line in notes:
        (log or (lambda _: None))(f"hetsam: {line}")
    result = dataclasses.replace(profile, devices=tuple(out))
    return Profile.from_dict(result.to_dict(), where="profile with AutoSAM's own work")


def measure_overheads(optimizer, model, loss_fn, batch, device: str) -> tuple[float, float]:
    """``(o, j)`` in seconds with the descent on CPU ``device``, measured by ``optimizer`` (the
    ``AutoSAM`` class) on a copy of ``model`` at ``batch`` (module docstring)."""
    cpu = torch.device("cpu")  # a model that lives on a GPU is measured on a CPU copy, as the profiler does
    batch, n = detach_to(batch, cpu), batch_size(batch)
    plans = (Plan(SGD, descent_device=device, batch_size=n),
             Plan(ASYNC_SAM, descent_device=device, ascent_device=device, batch_size=n,
                  options={"ascent_batch_size": n, "staleness": 1}))
    residuals = []
    for plan in plans:
        opt = optimizer(copy.deepcopy(model).to(cpu), loss_fn, torch.optim.SGD, plan=plan, lr=1e-4, momentum=0.9,
                      executor=ThreadedExecutor(share="time-slice"), log=lambda _: None)
        try:
            batches = opt.prefetch(itertools.repeat(batch))
            for _ in range(_WARMUP):
                opt.step(next(batches))
            residuals.append(median(_timed_residuals(opt, batches)))
        finally:
            opt.close()
    o = max(0.0, residuals[0])
    return o, max(0.0, residuals[1] - o)


def _timed_residuals(opt, batches) -> list[float]:
    """Per step: its wall time minus the priced parts timed inside it."""
    inside = [0.0]
    owners = {"runtime": opt._parts.runtime, "executor": opt.executor}
    for role, names in _PRICED.items():
        for name in names if owners[role] is not None else ():
            setattr(owners[role], name, _timing(getattr(owners[role], name), inside))  # on this instance only
    out: list[float] = []
    begin = time.perf_counter()
    while len(out) < _MAX_STEPS and (len(out) < _MIN_STEPS or time.perf_counter() - begin < _SECONDS):
        inside[0] = 0.0
        start = time.perf_counter()
        opt.step(next(batches))
        out.append(time.perf_counter() - start - inside[0])
    return out


def _timing(fn, total: list[float]):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start

    return timed
