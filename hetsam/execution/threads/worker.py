"""The ascent worker's lifecycle: a daemon thread bound to the ascent device, running jobs FIFO.

State shared by the caller and the worker thread lives in :class:`Worker`; it holds no reference
to the executor, so the executor can be garbage collected (its finalizer stops the thread).
An exception in a job ends the worker: the job's future gets it, and so does every job queued
behind it. :meth:`Worker.stop` stops and joins it within ``join_seconds``; a job already inside
a kernel finishes first (a daemon thread, it never blocks the interpreter's exit).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from hetsam.errors import WorkerFailure
from hetsam.execution.binding import enter_device
from hetsam.execution.replica import Replica
from hetsam.hardware.kinds import torch_kind

__all__ = ["Worker", "POLL_SECONDS"]

POLL_SECONDS = 0.05  # liveness check period of a blocking wait
_STOP = object()  # queue sentinel


class Worker:
    """One worker thread for ``replica`` (pinned to ``cpus`` on a CPU pool); start with :meth:`launch`."""

    def __init__(self, replica: Replica, cpus: Sequence[int] | None, name: str, free_slots: Sequence[Any] = ()):
        self.replica = replica
        self.cpus = cpus
        self.name = name
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.started = threading.Event()
        self.stopping = threading.Event()
        self.start_error: BaseException | None = None
        self.failure: BaseException | None = None  # the first job error; the worker has ended
        self.free_slots: list[Any] = list(free_slots)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=_main, args=(self,), name=name, daemon=True)
        self._finalizer: weakref.finalize | None = None

    def launch(self, owner, join_seconds: float) -> Worker:
        """Start the thread and wait until it is bound; stopped when ``owner`` is collected."""
        self.thread.start()
        self.started.wait()
        if self.start_error is not None:
            self.thread.join()
            raise WorkerFailure(f"the ascent worker could not bind to its device ({self.name}): {self.start_error}") \
                from self.start_error
        self._finalizer = weakref.finalize(owner, _shutdown, self, join_seconds)
        return self

    def put(self, job, slot, future: Future) -> None:
        self.jobs.put((job, slot, future))

    def release(self, slot) -> None:
        with self.lock:
            self.free_slots.append(slot)

    def take_free_slot(self):
        with self.lock:
            return self.free_slots.pop() if self.free_slots else None

    def alive(self) -> bool:
        """Whether it can still run jobs; a thread that ended records why it is gone."""
        if self.failure is None and self.thread.ident is not None and not self.thread.is_alive():
            self.failure = RuntimeError("the ascent worker thread ended without finishing its jobs")
        return self.failure is None

    def stop(self) -> None:
        """Stop and join the thread (once; within ``join_seconds``)."""
        if self._finalizer is not None:
            self._finalizer()


def _shutdown(w: Worker, join_seconds: float) -> None:
    w.stopping.set()
    w.jobs.put(_STOP)
    if w.thread.is_alive() and w.thread is not threading.current_thread():
        w.thread.join(join_seconds)


def _main(w: Worker) -> None:
    rep = w.replica
    try:
        enter_device(rep.device, rep.threads, w.cpus, stream=True)
    except BaseException as exc:  # noqa: BLE001 - reported by launch()
        w.start_error = exc
        w.started.set()
        return
    w.started.set()
    kind, out_kind = torch_kind(rep.device), torch_kind(rep.out_device)
    while True:
        item = w.jobs.get()
        if item is _STOP or w.stopping.is_set():
            break
        job, slot, future = item
        if not future.set_running_or_notify_cancel():
            w.release(slot)
            continue
        try:
            if slot.ready is not None:  # the snapshot copy, issued on the copy stream
                if kind.streams:
                    kind.current_stream(rep.device).wait_event(slot.ready)
                else:
                    slot.ready.synchronize()
            rep.load(job)
            if kind.streams:
                slot.free = kind.new_event()
                slot.free.record(kind.current_stream(rep.device))
            result = rep.run(job)
            if out_kind.streams:  # results on a GPU: the caller's stream waits for them
                done = out_kind.new_event()
                done.record(out_kind.current_stream(rep.out_device))
                result = (result, done)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            w.failure = exc
            future.set_exception(exc)
            _fail_queued(w, exc)
            return
        w.release(slot)  # before the result: the caller's next submit finds the slot free
        future.set_result(result)


def _fail_queued(w: Worker, exc: BaseException) -> None:
    """After a failure the worker ends: the queued jobs get the same error."""
    while True:
        try:
            item = w.jobs.get_nowait()
        except queue.Empty:
            return
        if item is not _STOP and item[2].set_running_or_notify_cancel():
            item[2].set_exception(exc)
