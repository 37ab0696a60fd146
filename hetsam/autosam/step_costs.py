"""A step's fixed costs as AutoSAM runs them (docs/architecture.md, "Step costs").

The profiler times the descent's parameter-sized work through the
:class:`~hetsam.execution.runtime.Runtime` in a harness: the update ``u`` with its non-finite check
and the climb ``c``. ``AutoSAM.step`` does more on the calling thread: its argument checks and step
hooks, the prefetcher, the rule's bookkeeping, the thread binding of a pool, and for a guarded
strategy the divergence guard; and its update runs on gradients a backward pass has just written.
On the MLP at b = 64 the profiler's ``u`` came out 0.02–0.22 ms above the update inside an SGD
step (four rounds side by side) while AutoSAM's own work around it took 0.10–0.14 ms, and a step
that hands its ascent to the executor did 0.10–0.15 ms more: the model, built from ``u`` and ``c``
alone, put SGD about right by accident and the executor's strategies 7–12% too fast.

:func:`with_step_costs` therefore times AutoSAM itself (the class is passed in: this module
sits below ``hetsam.autosam.optimizer``, which hands it to the controller) on a copy of the model
on each CPU device of a profile, at the profile's batch (after a larger pass less of the
parameters is left in the caches: on the MLP a SAM step's fixed costs were 0.70–0.88 ms timed at
b = 16 and 0.75–0.96 ms at 64, three rounds on two devices): SGD, SAM, then AsyncSAM with its
ascent time-sliced on the same device, side by side in rounds, with the user's base optimizer when
AutoSAM runs it (an AdamW step's fixed costs were 0.70–1.11 ms on the MLP, SGD's 0.38–0.40 ms).
A step's wall time less its gradient passes (and, for AsyncSAM, the executor's submit and wait,
which the profile prices as the ascent pass and the hand-off) is free of the machine's drift
between the profile and this stage:

- ``plain_fixed_seconds`` = its median over the SGD steps, ``perturbed_fixed_seconds`` over the
  SAM steps: the cost model's fixed costs of a step, in place of ``u`` and ``u + c``;
- ``job_overhead_seconds`` ``j`` = AutoSAM's own work (the fixed costs less the runtime's update
  and climb) in the AsyncSAM steps minus that in the SAM steps (at least 0), which the cost model
  adds to the executor's hand-off.

Like the profiler's stages (``hetsam.profiling.measure``), this one runs beside the load meter:
timed again once when other processes used over ``BUSY_SHARE`` of the CPUs, and if they still
did, the profile is marked busy with a note. GPU descents are not timed: there this host work
overlaps the device's queue. Nor is a CPU device whose pass at that batch takes over 50 ms (these
costs are a few percent of its step at most, and timing them would take tens of seconds), or
anything in a process of a distributed job (each rank would time its own copy while the others
run); those keep the profiler's ``u`` and ``c``.
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
from hetsam.profiling.load import BUSY_SHARE, LoadMeter, busy_note
from hetsam.profiling.measure import REMEASURE
from hetsam.profiling.schema import Profile
from hetsam.profiling.stats import median
from hetsam.strategies.plan import Plan
from hetsam.strategies.registry import ASYNC_SAM, SAM, SGD

__all__ = ["with_step_costs", "time_fixed_costs"]

_WARMUP = 5  # untimed steps: the worker, the thread team and the allocator settle
_MIN_STEPS, _MAX_STEPS = 10, 60
_SECONDS = 0.5  # timed seconds per arrangement, within the step counts above
_LR = 1e-6  # the base optimizer's learning rate while timing: the copies' parameters barely move
_LONGEST_PASS = 0.05  # seconds: a device whose pass at the profile's batch takes longer is not timed
_TURN_WARMUP, _ROUND_STEPS = 2, 5  # untimed and timed steps of each arrangement per round
# what each step times inside: its passes (the profile prices them, and the executor's hand-off,
# apart) and the runtime's parameter-sized work (the update and the climb)
_TIMED = {"runtime": (("gradient", "passes"), ("apply", "work"), ("save", "work"), ("climb", "work"), ("restore", "work")),
          "executor": (("submit", "passes"), ("wait", "passes"))}


def with_step_costs(profile: Profile, model, loss_fn, sample_batch, *, optimizer, base=None, progress: bool = False,
                    log: Callable[[str], None] | None = None) -> Profile:
    """``profile`` with a step's fixed costs timed by ``optimizer`` (the ``AutoSAM`` class) on each of
    its CPU devices (module docstring), with ``base`` = ``(base_optimizer, its keyword arguments)``
    (None: SGD with momentum); a device where that fails keeps the profiler's, with a line to ``log``."""
    devices = [d for d in profile.devices if kind_of(d.id).pools]
    if not devices or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return profile
    n = min(profile.batch_size, batch_size(sample_batch))
    # beside passes this long the fixed costs are a few percent at most, and timing them would take minutes
    devices = [d for d in devices if _pass_seconds(d, n) <= _LONGEST_PASS]
    if not devices:  # nothing to time (a cached profile of a large model comes back here on every read)
        return profile
    batch = slice_batch(sample_batch, 0, n)
    bar = Progress(progress, len(devices))
    out, notes, loads = [], [], []
    try:
        for d in profile.devices:
            if d not in devices:
                out.append(d)
                continue
            bar.step(f"step costs in AutoSAM's own steps on {d.id}")
            try:
                (plain, perturbed, job), share = _beside_the_load(lambda: time_fixed_costs(
                    optimizer, model, loss_fn, batch, d.id, base))  # noqa: B023 - called at once
            except Exception as exc:  # noqa: BLE001 - a failed stage leaves the profile as measured
                notes.append(f"step costs on {d.id} not timed in AutoSAM's own steps ({type(exc).__name__}: {exc}); "
                             "the profiler's update and climb stand in")
                out.append(d)
                continue
            loads.append(share)
            out.append(dataclasses.replace(d, plain_fixed_seconds=plain, perturbed_fixed_seconds=perturbed,
                                           job_overhead_seconds=job))
    finally:
        bar.close()
    for line in notes:
        (log or (lambda _: None))(f"hetsam: {line}")
    result = dataclasses.replace(profile, devices=tuple(out), provenance=_with_load(profile.provenance, loads))
    return Profile.from_dict(result.to_dict(), where="profile with step costs timed in AutoSAM's own steps")


def _beside_the_load(measure):
    """``(what measure() returns, other processes' share of the CPUs meanwhile)``, measured again once
    when that share was over ``BUSY_SHARE``, as the profiler's stages are (``hetsam.profiling.measure``)."""
    meter = LoadMeter()

    def once():
        meter.start()
        got = measure()
        return got, meter.stop()

    for _ in range(REMEASURE):
        got, share = once()
        if share is None or share <= BUSY_SHARE:
            return got, share
    return once()


def _with_load(provenance: dict, loads: list) -> dict:
    """``provenance`` with the stage's load: ``other_load["step costs"]`` (the largest of the devices'),
    and, when it was over ``BUSY_SHARE``, the profile marked busy with a note, as the profiler does."""
    shares = [x for x in loads if x is not None]
    if not shares:
        return provenance
    prov, share = dict(provenance), max(shares)
    prov["other_load"] = {**(prov.get("other_load") or {}), "step costs": round(share, 3)}
    if share > BUSY_SHARE:
        prov["busy"] = True
        note = busy_note(share, "step costs", REMEASURE > 0)
        notes = prov.get("notes")
        prov["notes"] = " | ".join([*(notes if isinstance(notes, list) else [notes] if notes else []), note])
    return prov


def _pass_seconds(device, n: int) -> float:
    """The profiled pass at the ladder's batch nearest ``n`` from above (the largest when none is)."""
    table = device.grad_seconds
    return next((t for b, t in zip(table.batch_sizes, table.median) if b >= n), table.median[-1])


def time_fixed_costs(optimizer, model, loss_fn, batch, device: str, base=None) -> tuple[float, float, float]:
    """``(plain, perturbed, job)`` fixed costs in seconds with the descent on CPU ``device``, timed by
    ``optimizer`` (the ``AutoSAM`` class) on copies of ``model`` at ``batch`` (module docstring),
    the three side by side in rounds (SGD, SAM, AsyncSAM, SGD, ...) so the machine's drift hits
    them alike. ``base``: ``(base_optimizer, its keyword arguments)``, the user's (an Adam update
    costs more than SGD's); its learning rate is made tiny, so that the copies barely move."""
    base_optimizer, kwargs = base or (torch.optim.SGD, {"momentum": 0.9})
    kwargs = {**kwargs, "lr": _LR} if "lr" in kwargs or base is None else dict(kwargs)
    cpu = torch.device("cpu")  # a model that lives on a GPU is timed on a CPU copy, as the profiler does
    batch, n = detach_to(batch, cpu), batch_size(batch)
    plans = (Plan(SGD, descent_device=device, batch_size=n), Plan(SAM, descent_device=device, batch_size=n),
             Plan(ASYNC_SAM, descent_device=device, ascent_device=device, batch_size=n,
                  options={"ascent_batch_size": n, "staleness": 1}))
    timers = []
    try:
        for plan in plans:
            opt = optimizer(copy.deepcopy(model).to(cpu), loss_fn, base_optimizer, plan=plan,
                            executor=ThreadedExecutor(share="time-slice"), log=lambda _: None, **kwargs)
            timers.append(_StepTimer(opt, opt.prefetch(itertools.repeat(batch))))
            timers[-1].run(_WARMUP, timed=False)
        begin = time.perf_counter()
        while any(len(t.fixed) < _MIN_STEPS for t in timers) or (
                time.perf_counter() - begin < _SECONDS * len(timers) and len(timers[0].fixed) < _MAX_STEPS):
            for t in timers:
                t.run(_TURN_WARMUP, timed=False)  # the caches hold another copy's parameters at a turn's start
                t.run(_ROUND_STEPS)
    finally:
        for t in timers:
            t.opt.close()
    plain, perturbed, job = timers
    return median(plain.fixed), median(perturbed.fixed), max(0.0, median(job.own) - median(perturbed.own))


class _StepTimer:
    """Steps of one AutoSAM with, per step, its fixed costs (wall time less its passes and the
    executor's submit and wait) and AutoSAM's own work (less the runtime's update and climb too)."""

    def __init__(self, opt, batches):
        self.opt, self.batches = opt, batches
        self.fixed: list[float] = []
        self.own: list[float] = []
        self._spent = {"passes": 0.0, "work": 0.0}
        opt.step(next(batches))  # builds the runtime and the executor
        owners = {"runtime": opt._parts.runtime, "executor": opt.executor}
        for role, names in _TIMED.items():
            for name, kind in names:
                if owners[role] is not None:  # on this instance only
                    setattr(owners[role], name, _timing(getattr(owners[role], name), self._spent, kind))

    def run(self, steps: int, timed: bool = True) -> None:
        for _ in range(steps):
            if not timed:
                self.opt.step(next(self.batches))
                continue
            self._spent["passes"] = self._spent["work"] = 0.0
            start = time.perf_counter()
            self.opt.step(next(self.batches))
            fixed = time.perf_counter() - start - self._spent["passes"]
            self.fixed.append(max(0.0, fixed))
            self.own.append(max(0.0, fixed - self._spent["work"]))


def _timing(fn, spent: dict, kind: str):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[kind] += time.perf_counter() - start

    return timed
