"""The profiler: measure one model's training costs on each device of this machine.

``profile(model, loss_fn, sample_batch, devices=None, ...) -> Profile`` measures

- ``grad_seconds``: one forward+backward, ``loss_fn(model, batch[:b]).backward()``, at each
  batch size ``b`` of a ladder up to ``B = len(sample_batch)``: warm-up runs, then repeats;
  the median and the interquartile spread (q75 − q25) are kept, as torch.utils.benchmark's
  ``Measurement`` does. Repeats adapt to the step time (about ``target_seconds`` per point,
  between ``min_repeats`` and ``max_repeats``) unless ``repeats`` fixes them.
- ``update_seconds``: one base-optimizer update (SGD with momentum 0.9) over the parameters.
- ``links``: ``latency + bytes / bandwidth`` of a copy between each pair of hardware units
  (socket–socket, socket–GPU both ways, GPU–GPU), fitted from a one-element copy (latency)
  and a parameter-sized copy (bandwidth); plus the same-socket memcpy link ``cpu:S -> cpu:S``.
- ``contention``: two disjoint pools of one socket (by default ``cpu:S[0]`` and ``cpu:S[1]``),
  each alone and then both at once; the slowdown is ``median(together) / median(alone)``.

Each pool (and each GPU) runs in its own Python thread. That thread sets its own intra-op
thread count with ``torch.set_num_threads`` (per thread under the OpenMP backend) and, for a
pool, pins itself with ``os.sched_setaffinity`` on its native thread id before its first
parallel region, so its OpenMP team inherits the mask. A CPU device that spans the whole
process (``cpu:0`` on a one-socket machine) runs in the calling thread instead, as the descent
does in the executor (see ``_run_threads``). The calling thread's affinity is never changed,
and its thread count is restored at the end. GPUs are timed with CUDA events around the step;
copies with ``torch.cuda.synchronize``.

Every measurement runs on a deep copy of the model, so the caller's parameters and BatchNorm
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

import copy
import datetime as _dt
import math
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from hetsam.hardware.detect import Device, cpus_of, detect
from hetsam.hardware.names import parse_device
from hetsam.errors import HetsamInputError
from hetsam.profiling.schema import Contention, DeviceProfile, GradTable, Link, ModelInfo, Profile

__all__ = ["profile", "default_ladder", "default_devices", "workload"]

DEFAULT_WARMUP = 2
DEFAULT_MIN_REPEATS = 5
DEFAULT_MAX_REPEATS = 50
DEFAULT_TARGET_SECONDS = 1.0  # per ladder point, when repeats is not fixed
_OOM_TYPES = tuple({getattr(torch, "OutOfMemoryError", RuntimeError), getattr(torch.cuda, "OutOfMemoryError", RuntimeError)} - {RuntimeError})
# shares of the remaining budget per phase
_W_DEVICE, _W_PAIR, _W_LINKS = 1.0, 0.5, 0.1
_WIDE_SPREAD = 0.25  # note a point whose IQR exceeds this fraction of its median


# ---------------------------------------------------------------------------------------
# batches
def _batch_size(batch) -> int:
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            raise HetsamInputError("the sample batch is a 0-d tensor; give a batch whose first dimension is the batch size")
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        try:
            return _batch_size(item)
        except HetsamInputError:
            continue
    raise HetsamInputError("the sample batch holds no tensor; give a tensor, or a tuple/list/dict of tensors")


def _map(batch, fn):
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: _map(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        out = [_map(v, fn) for v in batch]
        return type(batch)(out) if not hasattr(batch, "_fields") else type(batch)(*out)
    return batch


def _take(batch, n: int):
    return _map(batch, lambda t: t[:n] if t.dim() > 0 else t)


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


# ---------------------------------------------------------------------------------------
# where each measurement runs
@dataclass
class _Target:
    id: str
    kind: str
    name: str
    cores: int | None = None
    threads: int | None = None
    cpus: tuple[int, ...] | None = None  # pin to these (None: leave the affinity alone)
    memory_bytes: int | None = None
    index: int | None = None  # CUDA index
    unit: str = ""  # the hardware it lives on: its socket or its GPU

    @property
    def torch_device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def default_devices(detected: list[Device]) -> list[str]:
    """Each socket whole, plus its one-core pool ``cpu:S[0]`` (for Amdahl), and every GPU."""
    out = []
    for d in detected:
        out.append(d.id)
        if d.kind == "cpu" and isinstance(d.cores, int) and d.cores >= 2:
            out.append(f"{d.id}[0]")
    return out


def _resolve(names, detected: list[Device]) -> list[_Target]:
    sockets = {d.id: d for d in detected if d.kind == "cpu"}
    gpus = {d.id: d for d in detected if d.kind == "gpu"}
    try:
        process = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        process = None
    targets: list[_Target] = []
    for raw in names:
        dev = parse_device(raw)
        if dev.kind == "cpu":
            if dev.index is None and dev.positions is None:
                if len(sockets) != 1:
                    raise HetsamInputError(f"'cpu' is ambiguous on a machine with sockets {', '.join(sockets)}; name one, e.g. cpu:0")
                dev = parse_device(next(iter(sockets)))
            dev = dev.canonical()
            cpus = cpus_of(str(dev), list(sockets.values()))  # raises for a missing socket/position
            socket = sockets[dev.socket_id]
            mem = socket.memory_bytes if isinstance(socket.memory_bytes, int) else None
            if dev.positions is None:
                cores = socket.cores if isinstance(socket.cores, int) else len(cpus)
                name = socket.name
            else:
                cores = len(cpus)
                name = f"{socket.name} ({cores} of {socket.cores} cores)"
            pin = None if process is not None and set(cpus) == process else cpus
            targets.append(_Target(str(dev), "cpu", name, cores, cores, pin, mem, unit=dev.socket_id))
        else:
            index = dev.index if dev.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
            gid = f"cuda:{index}"
            if gid not in gpus:
                raise HetsamInputError(f"device {raw!r} is not here (GPUs: {', '.join(gpus) or 'none'}); see 'hetsam devices'")
            g = gpus[gid]
            mem = g.memory_bytes if isinstance(g.memory_bytes, int) else None
            targets.append(_Target(gid, "gpu", g.name, None, None, None, mem, index, gid))
    ids = [t.id for t in targets]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HetsamInputError(f"device(s) {', '.join(dupes)} named twice; name each device once")
    if not targets:
        raise HetsamInputError("no device to profile; name at least one (e.g. --devices cpu:0)")
    return targets


def _enter(target: _Target) -> None:
    """Configure the calling (fresh) thread for ``target``."""
    if target.kind == "cpu":
        if target.cpus is not None:
            os.sched_setaffinity(threading.get_native_id(), target.cpus)
        torch.get_num_threads()  # the per-thread lazy init first, so it cannot undo the next line
        torch.set_num_threads(target.threads or 1)
    else:
        torch.cuda.set_device(target.index)


def _run_threads(jobs: list[tuple[_Target, Callable[[], Any]]]) -> list[Any]:
    """Run each ``fn`` in its own thread configured for its target; return results in order.

    A lone CPU job that spans the whole process (no pinning) runs in the calling thread, as
    the descent does in the executor: libgomp throttles its spin-waits once more OpenMP
    threads exist than CPUs, so a second multi-threaded team (a worker thread's, beside the
    caller's) runs small kernels several times slower than the caller's own team does.
    """
    if len(jobs) == 1 and jobs[0][0].kind == "cpu" and jobs[0][0].cpus is None:
        target, fn = jobs[0]
        torch.set_num_threads(target.threads or 1)  # the caller restores its own count
        return [fn()]
    results: list[dict] = [{} for _ in jobs]

    def body(i, target, fn):
        try:
            _enter(target)
            results[i]["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            results[i]["error"] = exc

    threads = [threading.Thread(target=body, args=(i, t, f), name=f"hetsam-profile-{t.id}", daemon=True) for i, (t, f) in enumerate(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in results:
        if "error" in r:
            raise r["error"]
    return [r["value"] for r in results]


# ---------------------------------------------------------------------------------------
class _Replica:
    """A copy of the model on one device, created inside that device's thread."""

    def __init__(self, model, loss_fn, batch, target: _Target):
        self.device = torch.device(target.torch_device)
        self.cuda = target.kind == "gpu"
        self.model = copy.deepcopy(model).to(self.device).train()
        self.loss_fn = loss_fn
        self.batch = _map(batch, lambda t: t.to(self.device))

    def step(self, n: int) -> None:
        self.model.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, _take(self.batch, n))
        loss.backward()

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
        del self.model, self.batch
        if self.cuda:
            torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    if _OOM_TYPES and isinstance(exc, _OOM_TYPES):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _stats(times: list[float]) -> tuple[float, float]:
    """Median and interquartile spread (linear-interpolated quantiles)."""
    xs = sorted(times)

    def q(p):
        pos = p * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])

    return q(0.5), q(0.75) - q(0.25)


class _Clock:
    """The time budget: shares of what is left, handed to phases and ladder points."""

    def __init__(self, seconds: float | None):
        self.start = time.perf_counter()
        self.seconds = seconds
        self.notes: list[str] = []

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - self.start)

    def share(self, weight: float, remaining_weight: float) -> float:
        return max(0.0, self.left()) * weight / remaining_weight if self.seconds is not None else math.inf


@dataclass
class _Settings:
    warmup: int
    repeats: int | None
    min_repeats: int
    max_repeats: int
    target: float

    def wanted(self, t_est: float) -> int:
        if self.repeats is not None:
            return self.repeats
        want = math.ceil(self.target / max(t_est, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, want))


@dataclass
class _DeviceResult:
    batch_sizes: list[int] = field(default_factory=list)
    medians: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    max_batch_size: int | None = None
    update_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


class _Progress:
    """rich progress on stderr, or nothing when quiet."""

    def __init__(self, enabled: bool, total: int):
        self._bar = None
        if enabled:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
                self._task = self._bar.add_task("profiling", total=total)
                self._bar.start()
            except Exception:  # noqa: BLE001 - progress is cosmetic
                self._bar = None

    def step(self, description: str, advance: float = 0.0) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description, advance=advance)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _measure_ladder(replica: _Replica, target: _Target, ladder: list[int], settings: _Settings,
                    allot: float, clock: _Clock, progress: _Progress) -> _DeviceResult:
    res = _DeviceResult()
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
            if not _is_oom(exc):
                raise
            if replica.cuda:
                torch.cuda.empty_cache()
            res.max_batch_size = res.batch_sizes[-1] if res.batch_sizes else None
            res.notes.append(f"{target.id}: batch {b} did not fit in memory; ladder stops at {res.max_batch_size}")
            break
        if len(times) < want:
            clock.notes.append(f"{target.id}: batch {b}: {len(times)} of {want} repeats (time budget)")
        med, spread = _stats(times)
        res.batch_sizes.append(b)
        res.medians.append(med)
        res.spreads.append(spread)
        res.repeats.append(len(times))
        last = (b, med)
        progress.step(f"{target.id}: batch {b}", advance=1)
    return res


def _measure_update(replica: _Replica, n: int, allot: float) -> float | None:
    """One SGD-with-momentum update over the parameters (gradients of a batch of ``n``)."""
    params = [p for p in replica.model.parameters() if p.requires_grad]
    if not params:
        return None
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    replica.step(n)
    opt.step()  # creates the momentum buffers
    t_est = replica.timed(opt.step)
    reps = max(3, min(50, math.ceil(0.2 / max(t_est, 1e-9))))
    times, t0 = [], time.perf_counter()
    for _ in range(reps):
        times.append(replica.timed(opt.step))
        if time.perf_counter() - t0 > min(allot, 0.5):
            break
    return _stats(times)[0]


# ---------------------------------------------------------------------------------------
def _device_job(model, loss_fn, batch, target, ladder, settings, allot, clock, progress):
    def job():
        replica = _Replica(model, loss_fn, batch, target)
        try:
            res = _measure_ladder(replica, target, ladder, settings, allot * 0.95, clock, progress)
            if res.batch_sizes:
                res.update_seconds = _measure_update(replica, res.batch_sizes[0], allot * 0.05)
            return res
        finally:
            replica.release()

    return job


_CONTENTION_ROUNDS = 2


def _contention_pair(model, loss_fn, batch, a: _Target, b: _Target, n: int, settings: _Settings,
                     allot: float, progress: _Progress) -> tuple[float, float, str]:
    """Slowdowns of a and b while both compute: ``median(together) / median(alone)``.

    Side by side, in rounds (a alone, b alone, both together) x 2, so slow drifts of the
    machine affect both sides alike. A step that was still running when the other side
    stopped is dropped: it overlapped only in part.
    """
    phases = 3 * _CONTENTION_ROUNDS
    per_phase = allot / (phases + 0.5) if math.isfinite(allot) else math.inf
    replicas: dict[str, _Replica] = {}
    cap = settings.repeats if settings.repeats is not None else 15

    def alone(target):
        def job():
            rep = replicas.get(target.id)
            warm = 1
            if rep is None:
                rep = replicas[target.id] = _Replica(model, loss_fn, batch, target)
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

        return _run_threads([(a, job_for(0, a)), (b, job_for(1, b))])

    alone_a, alone_b, tog_a, tog_b = [], [], [], []
    for r in range(_CONTENTION_ROUNDS):
        progress.step(f"contention {a.id} + {b.id}: round {r + 1}")
        xa = _run_threads([(a, alone(a))])[0]
        xb = _run_threads([(b, alone(b))])[0]
        ya, yb = together(max(len(xa), len(xb)))
        alone_a += xa
        alone_b += xb
        tog_a += ya
        tog_b += yb
    for rep in replicas.values():
        rep.release()
    if not tog_a or not tog_b:
        return 1.0, 1.0, f"contention {a.id}+{b.id}: too few overlapping steps; 1.0 recorded"
    ra = _stats(tog_a)[0] / _stats(alone_a)[0]
    rb = _stats(tog_b)[0] / _stats(alone_b)[0]
    note = (f"contention {a.id}+{b.id} at batch {n}: raw slowdowns {ra:.3f}, {rb:.3f} "
            f"({len(tog_a)}/{len(tog_b)} overlapping steps in {_CONTENTION_ROUNDS} rounds; values below 1 recorded as 1)")
    return max(1.0, ra), max(1.0, rb), note


def _auto_pairs(targets: list[_Target], detected: list[Device], explicit_devices: bool) -> list[tuple[str, str]]:
    """One pair of disjoint pools per socket: two profiled ones, else ``cpu:S[0]`` + ``cpu:S[1]``."""
    pairs = []
    sockets = {d.id: d for d in detected if d.kind == "cpu"}
    for sid in dict.fromkeys(t.unit for t in targets if t.kind == "cpu"):
        pools = [t for t in targets if t.unit == sid and parse_device(t.id).positions is not None]
        found = next(((p.id, q.id) for i, p in enumerate(pools) for q in pools[i + 1:]
                      if not parse_device(p.id).overlaps(parse_device(q.id))), None)
        if found:
            pairs.append(found)
        elif isinstance(sockets[sid].cores, int) and sockets[sid].cores >= 2 and (pools or not explicit_devices):
            pairs.append((f"{sid}[0]", f"{sid}[1]"))
    return pairs


def _copy_fit(t_small: float, t_big: float, nbytes: int) -> tuple[float, float]:
    """Latency and bandwidth from a one-element and an ``nbytes`` copy: t = lat + n / bw."""
    latency = max(0.0, t_small)
    dt = t_big - latency
    bw = nbytes / dt if dt > 0 else nbytes / max(t_big, 1e-9)
    return bw, latency


def _measure_links(reps_by_unit: dict[str, _Target], nbytes: int, allot: float, progress: _Progress) -> tuple[list[Link], list[str]]:
    """A copy link between each pair of hardware units (both directions for a GPU), plus memcpy."""
    links, notes = [], []
    units = list(reps_by_unit.items())
    numel = max(1, nbytes // 4)
    pairs = [(u, u) for u, _ in units if u.startswith("cpu")]
    for i, (u, _) in enumerate(units):
        for v, _ in units[i + 1:]:
            pairs.append((u, v))
            if not (u.startswith("cpu") and v.startswith("cpu")):
                pairs.append((v, u))
    per_pair = allot / max(1, len(pairs)) if math.isfinite(allot) else 0.3
    for src_u, dst_u in pairs:
        src, dst = reps_by_unit[src_u], reps_by_unit[dst_u]
        progress.step(f"copy {src.id} -> {dst.id}")

        def job(src=src, dst=dst):
            sdev, ddev = torch.device(src.torch_device), torch.device(dst.torch_device)
            pin = sdev.type == "cpu" and ddev.type == "cuda" or sdev.type == "cuda" and ddev.type == "cpu"

            def alloc(n, dev):
                if dev.type == "cpu" and pin:
                    return torch.empty(n, pin_memory=True)
                return torch.empty(n, device=dev)

            def timed_copy(n):
                s, d = alloc(n, sdev).fill_(1.0), alloc(n, ddev)
                cuda = [x for x in (sdev, ddev) if x.type == "cuda"]

                def once():
                    for x in cuda:
                        torch.cuda.synchronize(x)
                    t0 = time.perf_counter()
                    d.copy_(s)
                    for x in cuda:
                        torch.cuda.synchronize(x)
                    return time.perf_counter() - t0

                once()
                t_est = once()
                reps = max(5, min(200, int(per_pair / 2 / max(t_est, 1e-9))))
                return _stats([once() for _ in range(reps)])[0]

            return _copy_fit(timed_copy(1), timed_copy(numel), numel * 4)

        try:
            bw, lat = _run_threads([(dst, job)])[0]
            links.append(Link(src.id, dst.id, float(bw), float(lat)))
        except Exception as exc:  # noqa: BLE001 - a failed copy probe is a note, not a crash
            if not _is_oom(exc) and not isinstance(exc, RuntimeError):
                raise
            notes.append(f"copy {src.id} -> {dst.id}: could not collect ({' '.join(str(exc).split())[:120]})")
    return links, notes


# ---------------------------------------------------------------------------------------
def workload(model, loss_fn, sample_batch) -> dict | None:
    """FLOPs, bytes and kernel counts of one training step, from two small CPU passes.

    ``bytes(n) = bytes_per_step + n · bytes_per_sample`` is fitted from batches of 2 and 4
    samples, counting every non-view ATen op's input and output tensor bytes (what its kernel
    reads and writes). ``kernels_per_step`` counts those ops. ``flops`` use FlopCounterMode.
    Returns None when the passes fail (e.g. a model that cannot run on the CPU).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class _Traffic(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                self.ops += 1
                for group in (args, (kwargs or {}).values(), out if isinstance(out, (list, tuple)) else (out,)):
                    for t in group:
                        if isinstance(t, torch.Tensor):
                            self.bytes += t.numel() * t.element_size()
            return out

    B = _batch_size(sample_batch)
    sizes = [2, 4] if B >= 4 else [B]
    try:
        replica = copy.deepcopy(model).to("cpu").train()
        batch = _map(sample_batch, lambda t: t.detach().to("cpu"))
        counts = {}
        for n in sizes:
            replica.zero_grad(set_to_none=True)
            with FlopCounterMode(display=False) as fc, _Traffic() as tr:
                loss_fn(replica, _take(batch, n)).backward()
            counts[n] = (fc.get_total_flops(), tr.bytes, tr.ops)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            loss_fn(replica, _take(batch, sizes[-1]))
        fwd = fc.get_total_flops() / sizes[-1]
    except Exception:  # noqa: BLE001 - FLOP/traffic counting is best effort
        return None
    n2 = sizes[-1]
    flops2, bytes2, ops2 = counts[n2]
    if len(sizes) == 2:
        flops1, bytes1, _ = counts[sizes[0]]
        per_sample = (bytes2 - bytes1) / (n2 - sizes[0])
        fixed = max(0.0, bytes2 - per_sample * n2)
    else:
        per_sample, fixed = bytes2 / n2, 0.0
    return {
        "forward_flops_per_sample": float(fwd) if fwd > 0 else None,
        "train_flops_per_sample": float(flops2 / n2) if flops2 > 0 else None,
        "bytes_per_sample": float(max(per_sample, 0.0)),
        "bytes_per_step": float(fixed),
        "kernels_per_step": int(ops2),
        "method": "FlopCounterMode; bytes = inputs+outputs of non-view ATen ops, fitted at batches " + "/".join(map(str, sizes)),
    }


def _machine(detected: list[Device]) -> str:
    parts = []
    for d in detected:
        if d.kind == "cpu":
            parts.append(f"{d.id} {d.name}, {d.cores} usable cores")
        else:
            parts.append(f"{d.id} {d.name}")
    return "; ".join(parts) or "unknown"


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
    B = _batch_size(sample_batch)
    ladder = _check_ladder(batch_sizes, B)
    for label, value, lo in (("warmup", warmup, 0), ("min_repeats", min_repeats, 1), ("max_repeats", max_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise HetsamInputError(f"{label}={value!r} must be an integer >= {lo}")
    if repeats is not None and (isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1):
        raise HetsamInputError(f"repeats={repeats!r} must be a positive integer or None (adaptive)")
    if budget_seconds is not None and (not isinstance(budget_seconds, (int, float)) or not budget_seconds > 0):
        raise HetsamInputError(f"budget_seconds={budget_seconds!r} must be a positive number of seconds or None")
    if not callable(loss_fn):
        raise HetsamInputError("loss_fn must be callable as loss_fn(model, batch) -> scalar tensor")
    params = [p for p in model.parameters()]
    if not params:
        raise HetsamInputError("the model has no parameters; there is nothing to profile")

    detection = detect(probe_torch=True)
    detected = detection.devices
    targets = _resolve(devices if devices is not None else default_devices(detected), detected)
    if contention is None:
        pair_names = _auto_pairs(targets, detected, devices is not None)
    elif contention is False:
        pair_names = []
    else:
        pair_names = [tuple(p) for p in contention]
    pairs = [tuple(_resolve(list(p), detected)) for p in pair_names]
    for a, b in pairs:
        if a.unit != b.unit or a.kind != "cpu" or parse_device(a.id).overlaps(parse_device(b.id)):
            raise HetsamInputError(f"contention pair {a.id}, {b.id}: name two disjoint pools of one socket")

    settings = _Settings(warmup, repeats, min_repeats, max_repeats, target_seconds)
    load_before = _load_average()
    bar = _Progress(progress, len(targets) * len(ladder))
    main_threads = torch.get_num_threads()
    dev_profiles, notes = [], list(detection.notes)
    contentions, link_list = [], []
    try:
        bar.step("counting FLOPs")
        t_work = time.perf_counter()
        work = workload(model, loss_fn, sample_batch)  # outside the budget: mostly torch's own imports
        t_work = time.perf_counter() - t_work
        clock = _Clock(budget_seconds)
        remaining = len(targets) * _W_DEVICE + len(pairs) * _W_PAIR + (_W_LINKS if links else 0.0)
        for target in targets:
            allot = clock.share(_W_DEVICE, remaining)
            remaining -= _W_DEVICE
            res = _run_threads([(target, _device_job(model, loss_fn, sample_batch, target, ladder, settings, allot, clock, bar))])[0]
            notes += res.notes
            wide = [f"{b} ({s / m:.0%})" for b, m, s in zip(res.batch_sizes, res.medians, res.spreads) if s > _WIDE_SPREAD * m]
            if wide:
                notes.append(f"{target.id}: wide spread (IQR/median) at batch {', '.join(wide)}: the machine may be busy; re-profile when it is quiet")
            if not res.batch_sizes:
                notes.append(f"{target.id}: not even batch {ladder[0]} fit; left out of the profile")
                continue
            dev_profiles.append(DeviceProfile(
                id=target.id, kind=target.kind, name=target.name,
                grad_seconds=GradTable(tuple(res.batch_sizes), tuple(res.medians), tuple(res.spreads), min(res.repeats)),
                cores=target.cores, threads=target.threads, memory_bytes=target.memory_bytes,
                update_seconds=res.update_seconds, max_batch_size=res.max_batch_size,
            ))
        if not dev_profiles:
            raise HetsamInputError(f"batch {ladder[0]} fits on none of {', '.join(t.id for t in targets)}; use a smaller --batch-size")
        measured = {d.id: d for d in dev_profiles}
        for a, b in pairs:
            allot = clock.share(_W_PAIR, remaining)
            remaining -= _W_PAIR
            fits = [measured[x.id].max_batch_size for x in (a, b) if x.id in measured and measured[x.id].max_batch_size]
            n = min([B, *fits])
            sa, sb, note = _contention_pair(model, loss_fn, sample_batch, a, b, n, settings, allot, bar)
            contentions.append(Contention((a.id, b.id), (sa, sb)))
            notes.append(note)
        if links:
            by_unit: dict[str, _Target] = {}
            for t in targets:  # one representative id per socket/GPU, preferring the whole socket
                if t.id in measured and (t.unit not in by_unit or t.id == t.unit):
                    by_unit[t.unit] = t
            nbytes = sum(p.numel() * p.element_size() for p in params)
            link_list, link_notes = _measure_links(by_unit, nbytes, clock.share(_W_LINKS, remaining), bar)
            notes += link_notes
    finally:
        bar.close()
        torch.set_num_threads(main_threads)

    prov: dict[str, Any] = {
        "kind": "measured",
        "machine": _machine(detected),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch": torch.__version__,
        "hetsam": _hetsam_version(),
        "python": platform.python_version(),
        "parallel_backend": _parallel_backend(),
        "method": (f"forward+backward of loss_fn at each batch size; {warmup} warm-up run(s), "
                   + (f"{repeats} repeats" if repeats else f"adaptive repeats ({min_repeats}-{max_repeats}, ~{target_seconds:g} s per point)")
                   + "; median and interquartile spread; CPU pools in their own thread with their own torch.set_num_threads and affinity; "
                   "update = SGD(momentum=0.9).step()"),
        "budget": (f"{budget_seconds:g} s; used {time.perf_counter() - clock.start:.1f} s" if budget_seconds is not None else "none")
        + (": " + "; ".join(clock.notes) if clock.notes else ""),
        "elapsed_seconds": round(time.perf_counter() - clock.start, 2),
        "flop_count_seconds": round(t_work, 2),
    }
    usable = sum(d.cores for d in detected if d.kind == "cpu" and isinstance(d.cores, int)) or 1
    load_after = _load_average()
    if load_before is not None and load_after is not None:
        prov["load_average"] = f"{load_before:.2f} at start, {load_after:.2f} at end (1-minute; {usable} usable cores)"
        if max(load_before, load_after - 1.0) > max(1.0, 0.5 * usable):
            notes.append("other processes were running (see load_average): timings may be inflated")
    if notes:
        prov["notes"] = " | ".join(notes)
    if work is not None:
        prov["workload"] = work
    nbytes = sum(p.numel() * p.element_size() for p in params)
    info = ModelInfo(
        name=name or type(model).__name__, parameters=sum(p.numel() for p in params), parameter_bytes=nbytes,
        flops_per_sample=work.get("forward_flops_per_sample") if work else None,
        sample_shape=_sample_shape(sample_batch),
    )
    result = Profile(info, B, tuple(dev_profiles), tuple(link_list), tuple(contentions), prov)
    return Profile.from_dict(result.to_dict(), where="measured profile")  # validate what we produced


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


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _parallel_backend() -> str:
    try:
        for line in torch.__config__.parallel_info().splitlines():
            if "parallel backend" in line:
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return "could not collect"


def _hetsam_version() -> str:
    from hetsam import __version__

    return __version__
