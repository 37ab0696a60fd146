"""``ThreadedExecutor`` (``executor="threads"``): the ascent runs while the descent runs.

Its ``mode`` (in ``describe()``) follows from the plan's :class:`~hetsam.execution.executor.Placement`:

``worker`` (the ascent and descent devices are disjoint: two core pools, a GPU and a CPU, two GPUs)
    A daemon thread bound to the ascent device (:mod:`.worker`) owns its own replica and runs
    the jobs FIFO from double-buffered snapshots (:mod:`.staging`). On a CPU pool it pins itself
    to the pool's CPUs before its first parallel region; on a GPU it runs on a stream of its own.
    Staleness is enforced by the rules (step t waits for the job of step t − τ and nothing newer).

``time-sliced``, ``measuring`` (the two roles share hardware)
    The share policy of :mod:`.share`: time-sliced on the calling thread, or measured A B A B
    against a worker on the same cores.

OpenMP: while a process has more OpenMP threads than CPUs, libgomp throttles the spin-waits of
every thread team, so even an *idle* worker team slows a multi-threaded descent (by 30-50% for
ResNet-20 on two cores here). :meth:`ThreadedExecutor.park` ends the thread between uses.

Faults: an exception in a job ends the worker; the next ``submit``/``wait`` raises
:class:`hetsam.WorkerFailure` with the original as ``__cause__`` and the job (its snapshot) as
``.job``, so a ``FallbackExecutor`` can recompute it elsewhere. Every blocking wait polls the
worker's liveness, so a dead worker never hangs the caller, and a wait longer than its
``timeout`` counts as a failure (the stuck job keeps its daemon thread until it ends).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch
from torch import Tensor, nn

from hetsam import _checks
from hetsam._warnings import warn_user
from hetsam.errors import WorkerFailure
from hetsam.execution.binding import pool_cpus
from hetsam.execution.executor import Executor, InlineExecutor, Placement
from hetsam.execution.jobs import GradJob, GradResult
from hetsam.execution.replica import Replica
from hetsam.execution.threads.share import CONCURRENT, SHARE_MODES, SLICED, ShareChooser
from hetsam.execution.threads.staging import Slot, Staging
from hetsam.execution.threads.worker import POLL_SECONDS, Worker
from hetsam.hardware.kinds import torch_device_name, torch_kind

__all__ = ["ThreadedExecutor"]


class ThreadedExecutor(Executor):
    """Runs the ascent jobs on a worker thread bound to the ascent device (module docstring).

    ``on_worker_failure``: ``"raise"`` or ``"degrade"`` (``make_executor`` adds the fallback);
    ``share``: ``"auto"`` (measure, :mod:`.share`), ``"time-slice"`` or ``"concurrent"``;
    ``join_seconds``: how long ``close()`` waits for the worker thread.
    """

    name = "threads"
    has_worker = True

    def __init__(self, *, on_worker_failure: str = "raise", share: str = "auto", join_seconds: float = 1.0) -> None:
        super().__init__(on_worker_failure=on_worker_failure)
        self.share = _checks.choice(share, "share", SHARE_MODES)
        self.join_seconds = _checks.number(join_seconds, "join_seconds", low=0.0, high=3600.0)
        self.mode = "unbound"  # worker (jobs on the worker thread), time-sliced, measuring
        self.placement: Placement | None = None
        self._sliced: InlineExecutor | None = None  # time-sliced jobs, on the ascent device
        self._sliced_pending: set[Future] = set()
        self._chooser: ShareChooser | None = None
        self._worker: Worker | None = None
        self._staging: Staging | None = None
        self._outstanding: dict[Future, tuple[GradJob, Slot]] = {}
        self._parked = False  # the worker thread has ended until the next job (park())
        self.timeout: float | None = None  # seconds a wait may take; None: derived (default_timeout)
        self.reference: Any = None  # a callable: seconds of the last descent pass, or None

    # ---- setup ------------------------------------------------------------------------------
    def bind(self, model: nn.Module, loss_fn: Callable, params: Sequence[Tensor], *, device: torch.device,
             threads: int | None, amp_dtype: torch.dtype | None, placement: Placement | None = None) -> None:
        out = params[0].device if params else device
        if placement is None:  # no names: torch devices only, no pinning
            placement = Placement(torch_device_name(out), torch_device_name(device), None)
        self.placement = placement
        shared = placement.shared
        if shared and self.share != "concurrent":
            self._sliced = InlineExecutor()
            self._sliced.stats = self.stats  # one set of counters
            self._sliced.bind(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype)
        if not shared or self.share != "time-slice":
            replica = Replica(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype)
            self._staging = Staging(device, out)
            self._launch(replica, pool_cpus(placement.ascent_device) if torch_kind(device).pools else None)
        if shared and self.share == "auto":
            self.mode = "measuring"
            self._chooser = ShareChooser()
        else:
            self.mode = SLICED if shared and self.share == "time-slice" else "worker"

    def _launch(self, replica: Replica, cpus, free_slots: Sequence[Slot] = ()) -> None:
        """Start a worker thread for ``replica`` (at bind, or again after :meth:`park`)."""
        w = Worker(replica, cpus, f"hetsam-ascent-{self.placement.ascent_device}", free_slots)
        self._worker = w.launch(self, self.join_seconds)

    # ---- jobs ---------------------------------------------------------------------------------
    def submit(self, job: GradJob) -> Future:
        if self.closed or self.mode == "unbound":
            raise RuntimeError("ThreadedExecutor.submit() before bind() or after close()")
        if self._arrangement() == SLICED:
            future = self._sliced.submit(job)
            self._sliced_pending.add(future)
            return future
        if self._parked:
            self._unpark()
        w = self._worker
        if not w.alive():
            raise self._failure(job, w.failure)
        start = time.perf_counter()
        slot = self._staging.stage(job, w.take_free_slot())
        staged = dataclasses.replace(job, params=slot.params, buffers=slot.buffers)
        future: Future = Future()
        self._outstanding[future] = (staged, slot)
        w.put(staged, slot, future)
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

    def wait(self, future: Future, timeout: float | None = None) -> GradResult:
        if future in self._sliced_pending:
            self._sliced_pending.discard(future)
            result = self._sliced.wait(future)
            self._retire()
            return result
        entry = self._outstanding.get(future)
        if entry is None:
            if future.cancelled():
                raise WorkerFailure("the executor was closed before this ascent job finished")
            if future.done():  # e.g. a pending result restored from a checkpoint
                return future.result()
            raise RuntimeError("ThreadedExecutor.wait() on a job it does not hold")
        if not future.done():
            self._block(future, timeout if timeout is not None else self.default_timeout())
        if not future.done() or future.cancelled() or future.exception() is not None:
            del self._outstanding[future]
            cause = self._worker.failure if self._worker.failure is not None else (
                None if future.cancelled() or not future.done() else future.exception())
            raise self._failure(entry[0], cause)
        del self._outstanding[future]
        result = future.result()
        if isinstance(result, tuple):  # (result, CUDA event on the result's device)
            result, done = result
            stream = torch_kind(_result_device(result)).current_stream(_result_device(result))
            stream.wait_event(done)
            for g in result.grads:
                if g is not None:
                    g.record_stream(stream)  # the caller's stream uses memory the worker allocated
        self.stats.jobs += 1
        self.stats.job_seconds += result.seconds
        self._retire()
        return result

    def default_timeout(self) -> float:
        """``timeout`` if set, else 20 × the longer of the last descent pass and the mean ascent
        job so far, at least 30 s (300 s before either was measured)."""
        if self.timeout is not None:
            return self.timeout
        seen = [s for s in (self.reference() if self.reference else None,
                            self.stats.job_seconds / self.stats.jobs if self.stats.jobs else None) if s]
        return max(30.0, 20.0 * max(seen)) if seen else 300.0

    def _block(self, future: Future, timeout: float | None) -> None:
        """Wait for ``future``, polling the worker's liveness; a timeout marks the worker failed."""
        start = time.perf_counter()
        while not future.done():
            try:
                future.exception(timeout=POLL_SECONDS)
            except TimeoutError:
                if not self._worker.alive() and not future.done():
                    break
                if timeout is not None and time.perf_counter() - start > timeout and not future.done():
                    self._worker.failure = TimeoutError(
                        f"the ascent job took longer than ascent_timeout={timeout:g} s; the worker is taken as failed "
                        "(its thread ends when the job does)")
                    break
        self.stats.waits += 1
        self.stats.wait_seconds += time.perf_counter() - start

    def _failure(self, job: GradJob, cause: BaseException | None) -> WorkerFailure:
        if self.closed:
            exc = WorkerFailure("the executor was closed before this ascent job finished")
        else:
            exc = WorkerFailure(f"the ascent worker on {self.placement.ascent_device} failed: "
                                f"{type(cause).__name__}: {cause}")
        exc.job = job  # the snapshot taken at submit, for a fallback to recompute
        exc.__cause__ = cause
        return exc

    def park(self) -> None:
        """Let the worker finish its queued jobs, then end its thread until the next job.

        The results stay available to ``wait``; the next ``submit`` starts a fresh thread on the
        same replica and staging slots. Why: an idle worker still owns its OpenMP thread team,
        and while a process has more OpenMP threads than CPUs libgomp throttles the spin-waits
        of *every* team (module docstring). The measuring mode parks the worker before each
        time-sliced block; ``hetsam bench`` parks each arrangement's worker between turns.
        """
        w = self._worker
        if w is None or self._parked or self.closed:
            return
        for future in list(self._outstanding):
            while not future.done() and w.alive():
                try:
                    future.exception(timeout=POLL_SECONDS)
                except TimeoutError:
                    pass
        if w.failure is not None:
            return  # the next submit or wait reports it
        w.stop()
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
            self._worker.stop()
            self._worker = None
            self._staging.clear()
        elif self.mode == "worker" and self._sliced is not None and not self._sliced_pending:
            self._sliced.close()
            self._sliced = None

    # ---- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker; a job inside a kernel cannot be interrupted: its daemon thread ends
        when the job does (with a warning when that takes longer than ``join_seconds``)."""
        if self.closed:
            return
        self.closed = True
        if self._worker is not None:
            self._worker.stop()
            if self._worker.thread.is_alive():
                warn_user(f"hetsam: the ascent worker is still finishing a job after {self.join_seconds:g} s; "
                          "it ends when that job does")
            with self._worker.lock:
                self._worker.free_slots.clear()
        for future in self._outstanding:
            future.cancel()
        self._outstanding.clear()
        self._sliced_pending.clear()
        if self._sliced is not None:
            self._sliced.close()
        if self._staging is not None:
            self._staging.clear()

    def held_tensors(self) -> list[Tensor]:
        out: list[Tensor] = []
        if self._worker is not None:
            out += self._worker.replica.held_tensors()
        if self._staging is not None:
            out += self._staging.held_tensors()
        if self._sliced is not None:
            out += self._sliced.held_tensors()
        return out

    @property
    def worker_thread(self):
        """The worker thread (None when there is none)."""
        return self._worker.thread if self._worker is not None else None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["mode"] = self.mode
        out["share"] = self.share
        if self.placement is not None:
            out["descent_device"] = self.placement.descent_device
            out["ascent_device"] = self.placement.ascent_device
        out["staging_slots"] = len(self._staging.slots) if self._staging is not None else 0
        if self._chooser is not None:
            out["share_choice"] = self._chooser.describe()
        return out


def _result_device(result: GradResult) -> torch.device:
    for g in result.grads:
        if g is not None:
            return g.device
    return torch.device("cpu")
