"""The threaded executor (``executor="threads"``): the ascent runs while the descent runs.

:class:`ThreadedExecutor` implements the executor contract of :mod:`hetsam.execution.executor`; its
``mode`` (in ``describe()``) follows from the plan's :class:`~hetsam.execution.executor.Placement`:

``worker`` (the ascent and descent devices are disjoint: two core pools, a GPU and a CPU, two GPUs)
    A daemon thread bound to the ascent device owns its own :class:`~hetsam.execution.executor.Replica`.
    On a CPU pool it pins itself (``os.sched_setaffinity`` on its own thread) to the pool's OS
    CPUs (:func:`hetsam.hardware.detect.cpus_of`) *before* its first parallel region, so the OpenMP
    team it creates inherits the mask, then sets its own ``torch.set_num_threads`` (per thread
    under the OpenMP backend); the descent thread keeps its own count (AutoSAM binds it to the
    descent pool around each step with :func:`~hetsam.execution.executor.role_binding`). On a GPU it
    selects the device and runs on a CUDA stream of its own.

    Snapshots are double-buffered: ``submit`` copies θ and the buffers into a free staging
    slot on the ascent device and returns; the worker loads the slot into its replica and runs
    the job. A slot is free again once its job has completed, so with exact staleness τ at most
    τ slots exist (one for τ = 1: step t submits only after it has waited for job t). With a
    GPU on either side the copy is ``non_blocking`` on a dedicated copy stream, ordered by CUDA
    events: after the training stream, before the training stream changes θ again, and before
    the worker reads the slot. Jobs run one at a time, first in, first out; staleness is
    enforced by the strategies (step t waits for the job of step t − τ and nothing newer).

``time-sliced``, ``measuring`` (the two roles share hardware, e.g. both ``"cpu"``, or one GPU)
    Two thread teams on the same cores oversubscribe them (and libgomp throttles its
    spin-waits once there are more OpenMP threads than CPUs), so by default the jobs run on
    the calling thread with all the pool's threads, one gradient after the other, exactly as
    :class:`~hetsam.execution.executor.InlineExecutor` runs them (``time-sliced``). Small gradients
    scale poorly over many threads, though, and running them beside the descent can fill
    cores the descent leaves idle, so with ``share="auto"`` (the default) the executor
    *measures*: its first jobs alternate between the two arrangements in blocks (``measuring``
    mode; :class:`_ShareChooser`), then it keeps the time-sliced one unless the concurrent
    one (a worker thread on the same cores: mode ``worker``) gave shorter steps by more than
    3%, and releases the other. Both compute the same numbers. ``share="time-slice"`` or
    ``"concurrent"`` fixes the choice (``hetsam bench`` measures each).

``degraded`` (after a worker failure with ``on_worker_failure="degrade"``)
    The failed job and every job after it run synchronously on the descent device (an inline
    executor with a replica there, under the descent's thread count), from the snapshots
    already taken, so no step loses its ascent gradient and the update rule is unchanged.
    One warning says so.

OpenMP: while a process has more OpenMP threads than CPUs, libgomp throttles the spin-waits
of every thread team, so even an *idle* worker team slows a multi-threaded descent (by 30-50%
for ResNet-20 on two cores here). A worker therefore only ever runs beside the descent on
cores of its own, or while the measured choice says it pays; :meth:`ThreadedExecutor.park`
ends the thread (and its team) between uses.

Faults: an exception in a job ends the worker; the next ``submit``/``wait`` raises
:class:`hetsam.WorkerFailure` with the original as ``__cause__`` (policy ``"raise"``). Every
blocking wait polls the worker's liveness, so a dead worker never hangs the caller.
``close()``, the context manager of AutoSAM and garbage collection (``weakref.finalize``)
stop the worker and join it within ``join_seconds`` (1 s); a job already inside a kernel
finishes first (a daemon thread, it never blocks the interpreter's exit).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import statistics
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from hetsam._warnings import warn_user
from hetsam.execution.jobs import GradJob, GradResult
from hetsam.errors import HetsamInputError, WorkerFailure
from hetsam.execution.executor import EXECUTORS, Executor, InlineExecutor, Placement, Replica, pool_cpus, torch_device

__all__ = ["ThreadedExecutor", "SHARE_MODES"]

SHARE_MODES = ("auto", "time-slice", "concurrent")
SLICED, CONCURRENT = "time-sliced", "concurrent"  # the two arrangements of a shared device
_POLL_SECONDS = 0.05  # liveness check period of a blocking wait
_STOP = object()  # queue sentinel


class _Slot:
    """One staging copy of θ and the buffers on the ascent device (plus its CUDA events)."""

    __slots__ = ("params", "buffers", "ready", "free")

    def __init__(self, params: list[Tensor], buffers: list[Tensor]):
        self.params = params
        self.buffers = buffers
        self.ready: Any = None  # CUDA event: the copy into the slot is done
        self.free: Any = None  # CUDA event: the worker has read the slot (GPU ascent)


class _Worker:
    """State shared by the caller and the worker thread; it holds no reference to the executor,
    so the executor can be garbage collected (its finalizer stops the thread)."""

    def __init__(self, replica: Replica, cpus: Sequence[int] | None, name: str):
        self.replica = replica
        self.cpus = cpus
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.started = threading.Event()
        self.start_error: BaseException | None = None
        self.failure: BaseException | None = None  # the first job error; the worker has ended
        self.free_slots: list[_Slot] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=_worker_main, args=(self,), name=name, daemon=True)

    def release(self, slot: _Slot) -> None:
        with self.lock:
            self.free_slots.append(slot)


def _enter_device(w: _Worker) -> None:
    """Bind the (fresh) worker thread to the ascent device: affinity first, then threads."""
    rep = w.replica
    if rep.device.type == "cpu":
        if w.cpus is not None:
            os.sched_setaffinity(0, w.cpus)  # before the first parallel region: the team inherits it
        torch.get_num_threads()  # the per-thread lazy init first, so it cannot undo the next line
        if rep.threads is not None:
            torch.set_num_threads(rep.threads)
    else:
        torch.cuda.set_device(rep.device)
        torch.cuda.set_stream(torch.cuda.Stream(rep.device))


def _worker_main(w: _Worker) -> None:
    try:
        _enter_device(w)
    except BaseException as exc:  # noqa: BLE001 - reported by bind()
        w.start_error = exc
        w.started.set()
        return
    w.started.set()
    rep = w.replica
    cuda = rep.device.type == "cuda"
    while True:
        item = w.jobs.get()
        if item is _STOP or w.stop.is_set():
            break
        job, slot, future = item
        if not future.set_running_or_notify_cancel():
            w.release(slot)
            continue
        try:
            if slot.ready is not None:  # the snapshot copy, issued on the copy stream
                if cuda:
                    torch.cuda.current_stream(rep.device).wait_event(slot.ready)
                else:
                    slot.ready.synchronize()
            rep.load(job)
            if cuda:
                slot.free = torch.cuda.Event()
                slot.free.record(torch.cuda.current_stream(rep.device))
            result = rep.run(job)
            if rep.out_device.type == "cuda":  # results on a GPU: the caller's stream waits for them
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(rep.out_device))
                result = (result, done)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            w.failure = exc
            future.set_exception(exc)
            _fail_queued(w, exc)
            return
        w.release(slot)  # before the result: the caller's next submit finds the slot free
        future.set_result(result)


def _fail_queued(w: _Worker, exc: BaseException) -> None:
    """After a failure the worker ends: the queued jobs get the same error."""
    while True:
        try:
            item = w.jobs.get_nowait()
        except queue.Empty:
            return
        if item is not _STOP and item[2].set_running_or_notify_cancel():
            item[2].set_exception(exc)


def _shutdown(w: _Worker, join_seconds: float) -> None:
    """Stop and join the worker thread (the finalizer of a ThreadedExecutor)."""
    w.stop.set()
    w.jobs.put(_STOP)
    if w.thread.is_alive() and w.thread is not threading.current_thread():
        w.thread.join(join_seconds)


class _ShareChooser:
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


class ThreadedExecutor(Executor):
    """Runs the ascent jobs on a worker thread bound to the ascent device (module docstring).

    Args:
        on_worker_failure: ``"raise"`` (default) or ``"degrade"``.
        share: what to do when the two roles share hardware: ``"auto"`` (default) times both
            arrangements on the first steps (:class:`_ShareChooser`, about 36 jobs) and keeps
            the time-sliced one unless the concurrent one is measurably faster;
            ``"time-slice"`` and ``"concurrent"`` fix the choice. Both arrangements compute
            the same numbers (the same replica code and thread counts).
        join_seconds: how long ``close()`` waits for the worker thread.
    """

    name = "threads"

    def __init__(self, *, on_worker_failure: str = "raise", share: str = "auto", join_seconds: float = 1.0) -> None:
        super().__init__(on_worker_failure=on_worker_failure)
        if share not in SHARE_MODES:
            raise HetsamInputError(f"share={share!r} must be one of {', '.join(map(repr, SHARE_MODES))}")
        self.share = share
        self.join_seconds = float(join_seconds)
        self.mode = "unbound"  # worker (jobs on the worker thread), time-sliced, measuring, degraded
        self.placement: Placement | None = None
        self._sliced: InlineExecutor | None = None  # time-sliced jobs, on the ascent device
        self._sliced_pending: set[Future] = set()
        self._fallback: InlineExecutor | None = None  # degraded jobs, on the descent device
        self._chooser: _ShareChooser | None = None
        self._worker: _Worker | None = None
        self._finalizer: weakref.finalize | None = None
        self._outstanding: dict[Future, tuple[GradJob, _Slot]] = {}
        self._slots: list[_Slot] = []
        self._copy_stream = None
        self._bound: tuple | None = None  # (model, loss_fn, params, amp_dtype) for degrade
        self._parked = False  # the worker thread has ended until the next job (park())

    # ---- setup ------------------------------------------------------------------------------
    def bind(self, model: nn.Module, loss_fn: Callable, params: Sequence[Tensor], *, device: torch.device,
             threads: int | None, amp_dtype: torch.dtype | None, placement: Placement | None = None) -> None:
        out = params[0].device if params else device
        if placement is None:  # no names: torch devices only, no pinning
            name = lambda d: "cpu" if d.type == "cpu" else f"cuda:{d.index or 0}"  # noqa: E731
            placement = Placement(name(out), name(device), None)
        self.placement = placement
        self._bound = (model, loss_fn, list(params), amp_dtype)
        shared = placement.shared
        if shared and self.share != "concurrent":
            self._sliced = InlineExecutor()
            self._sliced.stats = self.stats  # one set of counters
            self._sliced.bind(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype)
        if not shared or self.share != "time-slice":
            self._start_worker(model, loss_fn, params, device, threads, amp_dtype, out)
        if shared and self.share == "auto":
            self.mode = "measuring"
            self._chooser = _ShareChooser()
        else:
            self.mode = SLICED if shared and self.share == "time-slice" else "worker"

    def _start_worker(self, model, loss_fn, params, device, threads, amp_dtype, out) -> None:
        placement = self.placement
        cpus = pool_cpus(placement.ascent_device) if device.type == "cpu" else None
        replica = Replica(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype)
        if device.type == "cuda" or out.type == "cuda":
            self._copy_stream = torch.cuda.Stream(out if out.type == "cuda" else device)
        self._launch(replica, cpus)

    def _launch(self, replica: Replica, cpus: Sequence[int] | None, free_slots: Sequence[_Slot] = ()) -> None:
        """Start a worker thread for ``replica`` (at bind, or again after :meth:`park`)."""
        placement = self.placement
        w = _Worker(replica, cpus, f"hetsam-ascent-{placement.ascent_device}")
        w.free_slots.extend(free_slots)
        w.thread.start()
        w.started.wait()
        if w.start_error is not None:
            w.thread.join()
            raise WorkerFailure(f"the ascent worker could not bind to {placement.ascent_device}: {w.start_error}") \
                from w.start_error
        self._worker = w
        self._finalizer = weakref.finalize(self, _shutdown, w, self.join_seconds)

    # ---- jobs ---------------------------------------------------------------------------------
    def submit(self, job: GradJob) -> Future:
        if self.closed or self.mode == "unbound":
            raise RuntimeError("ThreadedExecutor.submit() before bind() or after close()")
        if self.mode == "degraded":
            return self._fallback.submit(job)
        if self._arrangement() == SLICED:
            future = self._sliced.submit(job)
            self._sliced_pending.add(future)
            return future
        if self._parked:
            self._unpark()
        if not self._alive():
            self._failed(None)  # raises, or switches to degraded mode
            return self._fallback.submit(job)
        w = self._worker
        start = time.perf_counter()
        slot = self._take_slot(job)
        staged = dataclasses.replace(job, params=slot.params, buffers=slot.buffers)
        future: Future = Future()
        self._outstanding[future] = (staged, slot)
        w.jobs.put((staged, slot, future))
        self.stats.copy_seconds += time.perf_counter() - start
        return future

    def _arrangement(self) -> str:
        """Where the next job runs: SLICED (calling thread) or the worker."""
        if self.mode == "measuring":
            choice = self._chooser.next(time.perf_counter())
            if self._chooser.chosen is not None:
                self.mode = SLICED if choice == SLICED else "worker"
            elif choice == SLICED and self._worker is not None and not self._parked:
                self.park()  # no idle OpenMP team beside the time-sliced blocks
            return choice
        return SLICED if self.mode == SLICED else CONCURRENT

    def wait(self, future: Future) -> GradResult:
        if future in self._sliced_pending:
            self._sliced_pending.discard(future)
            result = self._sliced.wait(future)
            self._retire()
            return result
        entry = self._outstanding.get(future)
        if entry is None:
            if future.cancelled():
                raise WorkerFailure("the executor was closed before this ascent job finished")
            if self._fallback is not None and not future.done():
                return self._fallback.wait(future)
            if future.done():  # e.g. a pending result restored from a checkpoint
                return future.result()
            raise RuntimeError("ThreadedExecutor.wait() on a job it does not hold")
        if not future.done():
            start = time.perf_counter()
            while not future.done():
                try:
                    future.exception(timeout=_POLL_SECONDS)
                except TimeoutError:
                    if not self._alive() and not future.done():
                        break
            self.stats.waits += 1
            self.stats.wait_seconds += time.perf_counter() - start
        if not future.done() or future.cancelled() or future.exception() is not None:
            return self._failed(future)
        del self._outstanding[future]
        result = future.result()
        if isinstance(result, tuple):  # (result, CUDA event on the result's device)
            result, done = result
            stream = torch.cuda.current_stream(_result_device(result))
            stream.wait_event(done)
            for g in result.grads:
                if g is not None:
                    g.record_stream(stream)  # the caller's stream uses memory the worker allocated
        self.stats.jobs += 1
        self.stats.job_seconds += result.seconds
        self._retire()
        return result

    def park(self) -> None:
        """Let the worker finish its queued jobs, then end its thread until the next job.

        The results stay available to ``wait``; the next ``submit`` starts a fresh thread on the
        same replica and staging slots. Why: an idle worker still owns its OpenMP thread team,
        and while a process has more OpenMP threads than CPUs libgomp throttles the spin-waits
        of *every* team, so an idle two-thread worker team beside a two-thread descent on two
        cores made the descent 30-50% slower here. The measuring mode parks the worker before
        each time-sliced block; ``hetsam bench`` parks each arrangement's worker between turns.
        """
        w = self._worker
        if w is None or self._parked or self.closed or self.mode == "degraded":
            return
        for future in list(self._outstanding):
            while not future.done() and self._alive():
                try:
                    future.exception(timeout=_POLL_SECONDS)
                except TimeoutError:
                    pass
        if w.failure is not None:
            return  # the next submit or wait reports it
        self._stop_worker()
        self._parked = True

    def _unpark(self) -> None:
        old = self._worker
        with old.lock:
            free = list(old.free_slots)
        self._parked = False
        self._launch(old.replica, old.cpus, free)

    def _retire(self) -> None:
        """Once the measured choice is made, release the other arrangement when its jobs are done."""
        if self.mode == SLICED and self._worker is not None and not self._outstanding and self._chooser is not None:
            self._stop_worker()
            self._worker = None
            self._slots.clear()
        elif self.mode == "worker" and self._sliced is not None and not self._sliced_pending:
            self._sliced.close()
            self._sliced = None

    # ---- snapshots ------------------------------------------------------------------------------
    def _take_slot(self, job: GradJob) -> _Slot:
        w = self._worker
        with w.lock:
            slot = w.free_slots.pop() if w.free_slots else None
        if slot is None:
            slot = self._new_slot(job)
            self._slots.append(slot)
        if self._copy_stream is None:
            with torch.no_grad():
                torch._foreach_copy_(slot.params, list(job.params))
                if slot.buffers:
                    torch._foreach_copy_(slot.buffers, list(job.buffers))
            slot.ready = None
            return slot
        self._copy_cuda(job, slot)
        return slot

    def _new_slot(self, job: GradJob) -> _Slot:
        dev = self._worker.replica.device
        pin = dev.type == "cpu" and self._copy_stream is not None  # GPU -> CPU: page-locked for async copies

        def like(t: Tensor) -> Tensor:
            return torch.empty(t.shape, dtype=t.dtype, device=dev, pin_memory=pin)

        return _Slot([like(p) for p in job.params], [like(b) for b in job.buffers])

    def _copy_cuda(self, job: GradJob, slot: _Slot) -> None:
        """θ → slot on the copy stream, between the training stream and the worker."""
        src = job.params[0].device if job.params else self._worker.replica.device
        caller = torch.cuda.current_stream(src) if src.type == "cuda" else None
        stream = self._copy_stream
        with torch.cuda.stream(stream), torch.no_grad():
            if caller is not None:
                stream.wait_stream(caller)  # θ as the training stream left it
            if slot.free is not None:
                stream.wait_event(slot.free)  # the worker has finished reading the slot
            torch._foreach_copy_(slot.params, list(job.params), non_blocking=True)
            if slot.buffers:
                torch._foreach_copy_(slot.buffers, list(job.buffers), non_blocking=True)
            slot.ready = torch.cuda.Event()
            slot.ready.record(stream)
        if caller is not None:
            caller.wait_event(slot.ready)  # the training stream may change θ only after the copy read it
            for t in (*job.params, *job.buffers):
                t.record_stream(stream)

    # ---- failures -------------------------------------------------------------------------------
    def _alive(self) -> bool:
        """Whether the worker can still run jobs; a thread that ended records why it is gone."""
        w = self._worker
        if w.failure is None and not w.thread.is_alive():
            w.failure = RuntimeError("the ascent worker thread ended without finishing its jobs")
        return w.failure is None

    def _failed(self, future: Future | None) -> GradResult | None:
        """Raise WorkerFailure, or (degrade) switch to the descent device and compute ``future``'s job."""
        w = self._worker
        cause = w.failure
        if cause is None and future is not None and not future.cancelled() and future.done():
            cause = future.exception()
        if self.closed:
            raise WorkerFailure("the executor was closed before this ascent job finished") from cause
        if self.on_worker_failure != "degrade":
            raise WorkerFailure(
                f"the ascent worker on {self.placement.ascent_device} failed: {type(cause).__name__}: {cause}"
            ) from cause
        if self._fallback is None:
            self._degrade(cause)
        if future is None:
            return None
        job, slot = self._outstanding.pop(future)
        result = self._fallback.wait(self._fallback.submit(job))  # from the snapshot taken at submit
        w.release(slot)
        return result

    def _degrade(self, cause: BaseException | None) -> None:
        model, loss_fn, params, amp_dtype = self._bound
        descent = self.placement.descent_device
        warn_user(
            f"hetsam: the ascent worker on {self.placement.ascent_device} failed ({type(cause).__name__}: {cause}); "
            f"on_worker_failure='degrade': the ascent gradients now run synchronously on the descent device "
            f"{descent} (no step is lost; the ascent no longer overlaps the descent)"
        )
        self._stop_worker()
        fallback = InlineExecutor()
        fallback.stats = self.stats
        fallback.bind(model, loss_fn, params, device=torch_device(descent), threads=self.placement.descent_threads,
                      amp_dtype=amp_dtype)
        self._fallback = fallback
        self.mode = "degraded"

    def _stop_worker(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # once: stop, wake, join

    # ---- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_worker()
        if self._worker is not None and self._worker.thread.is_alive():
            warn_user(f"hetsam: the ascent worker is still finishing a job after {self.join_seconds:g} s; "
                      "it ends when that job does")
        for future in self._outstanding:
            future.cancel()
        self._outstanding.clear()
        self._sliced_pending.clear()
        for ex in (self._sliced, self._fallback):
            if ex is not None:
                ex.close()
        self._slots.clear()
        if self._worker is not None:
            with self._worker.lock:
                self._worker.free_slots.clear()

    def held_tensors(self) -> list[Tensor]:
        out: list[Tensor] = []
        if self._worker is not None and self.mode != "degraded":
            out += self._worker.replica.held_tensors()
        for slot in self._slots:
            out += slot.params + slot.buffers
        for ex in (self._sliced, self._fallback):
            if ex is not None:
                out += ex.held_tensors()
        return out

    @property
    def worker_thread(self) -> threading.Thread | None:
        """The worker thread (None when there is none)."""
        return self._worker.thread if self._worker is not None else None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["mode"] = self.mode
        out["share"] = self.share
        if self.placement is not None:
            out["descent_device"] = self.placement.descent_device
            out["ascent_device"] = self.placement.ascent_device
        out["staging_slots"] = len(self._slots)
        if self._chooser is not None:
            out["share_choice"] = self._chooser.describe()
        return out


EXECUTORS["threads"] = ThreadedExecutor


def _result_device(result: GradResult) -> torch.device:
    for g in result.grads:
        if g is not None:
            return g.device
    return torch.device("cpu")
