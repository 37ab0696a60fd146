"""The profiler: measure one model's training costs on each device of this machine.

``profile(model, loss_fn, sample_batch, devices=None, ...) -> Profile`` measures

- ``grad_seconds``: one forward+backward, ``loss_fn(model, batch[:b]).backward()``, at each
  batch size ``b`` of a ladder up to ``B = len(sample_batch)``: warm-up runs, then repeats
  taken in rounds that interleave the points and the devices (:mod:`hetsam.profiling.rounds`);
  the median and the interquartile spread (q75 − q25) are kept, as torch.utils.benchmark's
  ``Measurement`` does. Repeats adapt to the step time (about ``target_seconds`` per point,
  between ``min_repeats`` and ``max_repeats``) unless ``repeats`` fixes them.
- ``update_seconds``, ``climb_seconds`` and ``auxiliary_seconds``: one base-optimizer update (SGD
  with momentum 0.9), one climb of a perturbed step, and SAMPa's auxiliary work, through the
  descent runtime (:mod:`hetsam.profiling.ladder`).
- ``links``: ``latency + bytes / bandwidth`` of a copy between each pair of hardware units
  (socket–socket, socket–GPU both ways, GPU–GPU), fitted from a one-element copy (latency)
  and a parameter-sized copy (bandwidth); plus the same-socket memcpy link ``cpu:S -> cpu:S``.
- ``contention``: two disjoint pools of one socket (by default ``cpu:S[0]`` and ``cpu:S[1]``) as
  AutoSAM runs them: a descent pass on one and a threaded-executor job on the other, alone and in
  lock-step, in rounds; the slowdowns invert the simulator's model (:mod:`hetsam.profiling.contention`).

Each stage (the devices' ladders, the contention pairs, the copy links) is timed beside a meter of
other processes' share of the CPUs (:mod:`hetsam.profiling.load`). A stage during which they used
more than ``BUSY_SHARE`` (25%) is measured again once, if the time budget has room for it; a stage
still measured under load marks the profile busy (``provenance.busy``, ``provenance.other_load``,
and a warning that every display repeats with the command that measures again).

The allocator policy in force (:mod:`hetsam.execution.allocator`, the same for AutoSAM and the
bench) and the repeatability of the ratios across rounds go into the provenance.

Each pool (and each GPU) runs in its own Python thread. That thread sets its own intra-op
thread count with ``torch.set_num_threads`` (per thread under the OpenMP backend) and, for a
pool, pins itself with ``os.sched_setaffinity`` on its native thread id before its first
parallel region, so its OpenMP team inherits the mask. A CPU device that spans the whole
process (``cpu:0`` on a one-socket machine) runs in the calling thread instead, as the descent
does in the executor (see ``_run_threads``). The calling thread's affinity is never changed,
and its thread count is restored at the end. GPUs are timed with CUDA events around the step;
copies with ``torch.cuda.synchronize``.

Each device is timed through the executors' own replica and gradient pass
(:mod:`hetsam.profiling.ladder`), so what is profiled is what runs. Every measurement runs on a
deep copy of the model, so the caller's parameters and BatchNorm
statistics are untouched. A batch that does not fit (``torch.OutOfMemoryError`` or an
allocator "out of memory") ends that device's ladder; ``max_batch_size`` records the largest
batch that fit (it is left out when everything up to ``B`` fit).

``budget_seconds`` bounds the wall time of the measurements (torch's import and the FLOP
count before them, about 2 s on first use, are not counted). Each phase gets a share of what
is left, a ladder point a share proportional to its batch size; repeats are cut first, then
the remaining ladder points, and at least one point per device is always measured. Every cut
is written to ``provenance.budget``.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (forward FLOPs per sample in
``model.flops_per_sample``; null where it fails). ``provenance.workload`` holds what spec
scaling (:mod:`hetsam.cost.specscale`) needs: training FLOPs per sample, the bytes the kernels read and
write per sample and per step, and the number of kernels per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from hetsam import _checks
from hetsam._progress import Progress
from hetsam.errors import HetsamInputError
from hetsam.execution.allocator import apply_policy as apply_allocator_policy
from hetsam.execution.batches import batch_size
from hetsam.hardware.detect import Device, detect
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import parse_device
from hetsam.profiling.budget import (
    DEFAULT_MAX_REPEATS,
    DEFAULT_MIN_REPEATS,
    DEFAULT_TARGET_SECONDS,
    DEFAULT_WARMUP,
    W_DEVICE,
    W_LINKS,
    W_PAIR,
    Clock,
    Settings,
)
from hetsam.profiling.contention import contention_pair
from hetsam.profiling.links import measure_links
from hetsam.profiling.load import BUSY_SHARE, LoadMeter, busy_note
from hetsam.profiling.provenance import load_average, provenance
from hetsam.profiling.rounds import measure_in_rounds
from hetsam.profiling.schema import (
    Contention,
    DeviceProfile,
    GradTable,
    ModelInfo,
    Profile,
)
from hetsam.profiling.stats import WIDE_SPREAD, ratio_repeatability, unstable_speedup_note
from hetsam.profiling.targets import (
    Target,
    auto_pairs,
    default_devices,
    resolve_targets,
)
from hetsam.profiling.workload import workload

__all__ = ["profile", "default_ladder", "default_devices", "workload", "MAX_SAMPLE_BATCH"]

MAX_SAMPLE_BATCH = 1 << 20  # the largest sample batch (and ladder point) a profile measures


def default_ladder(batch_size: int) -> list[int]:
    """Powers of two from ``max(1, B // 8)`` below ``B``, then ``B`` itself.

    ``B // 8`` is the planner's default floor for the ascent batch ``b'``, so the ladder
    covers every batch a plan may use without extrapolating (64 -> 8, 16, 32, 64).
    """
    lo = max(1, batch_size // 8)
    p = 1 << max(0, (lo - 1).bit_length())  # smallest power of two >= lo
    ladder = []
    while p < batch_size:
        ladder.append(p)
        p *= 2
    return ladder + [batch_size]


@dataclass
class _Run:
    """One profiling run: what to measure, and what has been measured so far."""

    model: Any
    loss_fn: Any
    sample_batch: Any
    ladder: list[int]
    settings: Settings
    targets: list[Target]
    pairs: list[tuple[Target, Target]]
    links: bool
    clock: Clock
    bar: Progress
    notes: list[str]
    devices: list[DeviceProfile] = field(default_factory=list)
    contention: list[Contention] = field(default_factory=list)
    link_list: list = field(default_factory=list)
    remaining: float = 0.0  # budget weight of the phases still to run
    load: dict = field(default_factory=dict)  # stage -> other processes' CPU share while it ran (last try)
    busy: list = field(default_factory=list)  # stages still measured under load
    remeasured: list = field(default_factory=list)  # stages measured again because of load
    repeatability: dict | None = None  # spread of the per-round ratios (hetsam.profiling.rounds)

    def share(self, weight: float) -> float:
        allot = self.clock.share(weight, self.remaining)
        self.remaining -= weight
        return allot


def profile(
    model,
    loss_fn,
    sample_batch,
    devices=None,
    *,
    batch_sizes=None,
    budget_seconds: float | None = None,
    warmup: int = DEFAULT_WARMUP,
    repeats: int | None = None,
    min_repeats: int = DEFAULT_MIN_REPEATS,
    max_repeats: int = DEFAULT_MAX_REPEATS,
    target_seconds: float = DEFAULT_TARGET_SECONDS,
    contention=None,
    links: bool = True,
    name: str | None = None,
    progress: bool = True,
) -> Profile:
    """Measure ``model``'s forward+backward (and update, copies, contention) on each device.

    Args:
        model: a ``torch.nn.Module``; it is deep-copied per device and never modified.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        sample_batch: a batch of ``B`` samples (a tensor, or a tuple/list/dict of tensors
            whose first dimension is the batch); the ladder goes up to ``B``.
        devices: device names (``hetsam.hardware.names``); None: every socket, its one-core pool
            ``cpu:S[0]`` and every GPU.
        batch_sizes: the ladder (ascending, each <= B); None: :func:`default_ladder`.
        budget_seconds: a bound on the measuring time (see the module docstring).
        warmup, repeats, min_repeats, max_repeats, target_seconds: warm-up runs per point, and
            either a fixed repeat count or adaptive repeats of about ``target_seconds``.
        contention: None (auto), False (skip) or a list of ``(pool, pool)`` pairs.
        links: measure copy links (False: none).
        name: the model's name in the profile (default: its class name).
        progress: show a progress bar on stderr.
    """
    settings, ladder = _check_arguments(model, loss_fn, sample_batch, batch_sizes, budget_seconds, warmup, repeats,
                                        min_repeats, max_repeats, target_seconds)
    allocator = apply_allocator_policy()  # what AutoSAM and the bench run under
    detection = detect(probe_torch=True)
    targets, pairs = _targets(devices, contention, detection.devices)
    load_before = load_average()
    main_threads = torch.get_num_threads()
    bar = Progress(progress, len(targets) * len(ladder))
    run = None
    try:
        bar.step("counting FLOPs")
        t_work = time.perf_counter()
        work = workload(model, loss_fn, sample_batch)  # outside the budget: mostly torch's own imports
        t_work = time.perf_counter() - t_work
        run = _Run(model, loss_fn, sample_batch, ladder, settings, targets, pairs, links, Clock(budget_seconds), bar,
                   list(detection.notes))
        run.remaining = len(targets) * W_DEVICE + len(pairs) * W_PAIR + (W_LINKS if links else 0.0)
        _stage(run, "devices", _measure_devices)
        _stage(run, "contention", _measure_contention, empty=not run.pairs)
        _stage(run, "links", _measure_copy_links, empty=not run.links)
    finally:
        bar.close()
        torch.set_num_threads(main_threads)
    prov = provenance(run, detection.devices, work, t_work, load_before, budget_seconds)
    prov["allocator"] = allocator
    if run.repeatability:
        prov["ratio_repeatability"] = run.repeatability
    params = list(model.parameters())
    info = ModelInfo(
        name=name or type(model).__name__, parameters=sum(p.numel() for p in params),
        parameter_bytes=sum(p.numel() * p.element_size() for p in params),
        flops_per_sample=work.get("forward_flops_per_sample") if work else None,
        sample_shape=_sample_shape(sample_batch),
    )
    result = Profile(info, batch_size(sample_batch), tuple(run.devices),
                     tuple(run.link_list), tuple(run.contention), prov)
    return Profile.from_dict(result.to_dict(), where="measured profile")  # validate what we produced


# ---- the stages ---------------------------------------------------------------------------------
REMEASURE = 1  # how many times a stage measured under load is measured again


def _stage(run: _Run, name: str, measure, empty: bool = False) -> None:
    """Run one stage beside the load meter; measure it again (at most ``REMEASURE`` times, and only
    when the budget has room for another try) while other processes used over ``BUSY_SHARE``. An
    ``empty`` stage (nothing to measure) is metered for the record but never measured again nor
    marks the profile busy: its instant sample says nothing of a measurement."""
    meter = LoadMeter()
    for attempt in range(REMEASURE + 1):
        before = (len(run.devices), len(run.contention), len(run.link_list), len(run.notes), run.remaining)
        start = time.perf_counter()
        meter.start()
        measure(run)
        share, took = meter.stop(), time.perf_counter() - start
        run.load[name] = share
        if empty or share is None or share <= BUSY_SHARE:
            return
        if attempt == REMEASURE or run.clock.left() < took:
            break
        del run.devices[before[0]:], run.contention[before[1]:], run.link_list[before[2]:], run.notes[before[3]:]
        run.remaining = before[4]
        run.remeasured.append(name)
    run.busy.append(name)
    run.notes.append(busy_note(share, name, name in run.remeasured))


def _check_arguments(model, loss_fn, sample_batch, batch_sizes, budget_seconds, warmup, repeats, min_repeats,
                     max_repeats, target_seconds) -> tuple[Settings, list[int]]:
    B = batch_size(sample_batch)
    _checks.integer(B, "sample batch size", low=1, high=MAX_SAMPLE_BATCH)
    ladder = _check_ladder(batch_sizes, B)
    _checks.integer(warmup, "warmup", low=0, high=1000)
    _checks.integer(min_repeats, "min_repeats", low=1, high=100_000)
    _checks.integer(max_repeats, "max_repeats", low=1, high=100_000)
    _checks.optional(_checks.integer, repeats, "repeats", low=1, high=100_000, hint="or None (adaptive)")
    _checks.optional(_checks.number, budget_seconds, "budget_seconds", low=0.0, high=86400.0, low_open=True,
                     hint="seconds, or None")
    _checks.number(target_seconds, "target_seconds", low=0.0, high=3600.0, low_open=True)
    if not callable(loss_fn):
        raise HetsamInputError("loss_fn must be callable as loss_fn(model, batch) -> scalar tensor")
    if not any(True for _ in model.parameters()):
        raise HetsamInputError("the model has no parameters; there is nothing to profile")
    return Settings(warmup, repeats, min_repeats, max_repeats, target_seconds), ladder


def _targets(devices, contention, detected: list[Device]) -> tuple[list[Target], list[tuple[Target, Target]]]:
    targets = resolve_targets(devices if devices is not None else default_devices(detected), detected)
    if contention is None:
        pair_names = auto_pairs(targets, detected, devices is not None)
    elif contention is False:
        pair_names = []
    else:
        pair_names = [tuple(p) for p in contention]
    pairs = [tuple(resolve_targets(list(p), detected)) for p in pair_names]
    for a, b in pairs:
        if a.unit != b.unit or not kind_of(a.id).pools or parse_device(a.id).overlaps(parse_device(b.id)):
            raise HetsamInputError(f"contention pair {a.id}, {b.id}: name two disjoint pools of one socket")
    return targets, pairs


def _measure_devices(run: _Run) -> None:
    """Every target's ladder, update and climb, in interleaved rounds (:mod:`hetsam.profiling.rounds`)."""
    allot = sum(run.share(W_DEVICE) for _ in run.targets)
    results = measure_in_rounds(run.model, run.loss_fn, run.sample_batch, run.targets, run.ladder, run.settings, allot,
                                run.clock, run.bar)
    run.repeatability = ratio_repeatability({t.id: r.round_medians for t, r in zip(run.targets, results)})
    unstable = unstable_speedup_note(run.repeatability)
    if unstable:
        run.notes.append(unstable)
    for target, res in zip(run.targets, results):
        run.notes += res.notes
        wide = [f"{b} ({s / m:.0%})" for b, m, s in zip(res.batch_sizes, res.medians, res.spreads) if s > WIDE_SPREAD * m]
        if wide:
            run.notes.append(f"{target.id}: wide spread (IQR/median) at batch {', '.join(wide)}: the machine may be busy; "
                             "re-profile when it is quiet")
        if not res.batch_sizes:
            run.notes.append(f"{target.id}: not even batch {run.ladder[0]} fit; left out of the profile")
            continue
        run.devices.append(DeviceProfile(
            id=target.id, kind=target.kind, name=target.name,
            grad_seconds=GradTable(tuple(res.batch_sizes), tuple(res.medians), tuple(res.spreads), min(res.repeats)),
            cores=target.cores, threads=target.threads, memory_bytes=target.memory_bytes,
            update_seconds=res.update_seconds, climb_seconds=res.climb_seconds, max_batch_size=res.max_batch_size,
            auxiliary_seconds=res.auxiliary_seconds, sliced_handoff_seconds=res.sliced_handoff_seconds,
        ))
    if not run.devices:
        raise HetsamInputError(f"batch {run.ladder[0]} fits on none of {', '.join(t.id for t in run.targets)}; "
                               "use a smaller --batch-size")


def _measure_contention(run: _Run) -> None:
    """Each pair of pools alone and together (at the largest batch n both fit), with the job at n/4
    and at n: a small job is slowed more (``hetsam/profiling/pairs.py``)."""
    measured = {d.id: d for d in run.devices}
    for a, b in run.pairs:
        allot = run.share(W_PAIR)
        fits = [measured[x.id].max_batch_size for x in (a, b) if x.id in measured and measured[x.id].max_batch_size]
        n = min([run.ladder[-1], *fits])
        jobs = sorted({max(1, n // 4), n})
        got = {m: contention_pair(run.model, run.loss_fn, run.sample_batch, a, b, n, run.settings, allot / len(jobs), run.bar,
                                  job_batch=m) for m in jobs}
        points = tuple((m, got[m].slowdowns) for m in jobs) if len(jobs) > 1 else ()
        run.contention.append(Contention((a.id, b.id), got[n].slowdowns, got[n].handoff_seconds, points,
                                         got[n].round_trip_seconds))
        run.notes += [got[m].note for m in jobs]


def _measure_copy_links(run: _Run) -> None:
    """A copy link between each pair of hardware units (one representative target each)."""
    if not run.links:
        return
    measured = {d.id for d in run.devices}
    by_unit: dict[str, Target] = {}
    for t in run.targets:  # one representative id per socket/GPU, preferring the whole socket
        if t.id in measured and (t.unit not in by_unit or t.id == t.unit):
            by_unit[t.unit] = t
    nbytes = sum(p.numel() * p.element_size() for p in run.model.parameters())
    run.link_list, notes = measure_links(by_unit, nbytes, run.share(W_LINKS), run.bar)
    run.notes += notes


def _check_ladder(batch_sizes, B: int) -> list[int]:
    if batch_sizes is None:
        return default_ladder(B)
    ladder = list(batch_sizes)
    if not ladder or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in ladder):
        raise HetsamInputError(f"batch_sizes={batch_sizes!r} must be positive integers")
    if any(b2 <= b1 for b1, b2 in zip(ladder, ladder[1:])):
        raise HetsamInputError(f"batch_sizes={batch_sizes!r} must be strictly ascending")
    if ladder[-1] > B:
        raise HetsamInputError(f"batch size {ladder[-1]} is larger than the sample batch ({B}); pass a larger sample batch")
    return ladder


def _sample_shape(batch) -> tuple[int, ...] | None:
    first = batch
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, torch.Tensor) and first.dim() >= 1:
        return tuple(int(s) for s in first.shape[1:]) or None
    return None
