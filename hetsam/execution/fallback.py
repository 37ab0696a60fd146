"""``on_worker_failure="degrade"``: carry on on the descent device when the ascent worker fails.

:class:`FallbackExecutor` wraps an executor that has a worker. While the worker is fine it only
passes jobs through. When a job fails (an exception on the worker, a dead worker, or a wait past
its timeout), it warns once, binds an inline executor on the *descent* device (under the
descent's thread count) and computes that job there from the snapshot taken at submit
(``WorkerFailure.job``), and every later job too: no step loses its ascent gradient and the
update rule is unchanged, only the overlap is gone. ``mode`` then reads ``"degraded"``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from hetsam._warnings import warn_user
from hetsam.errors import WorkerFailure
from hetsam.execution.binding import torch_device
from hetsam.execution.executor import Executor, InlineExecutor
from hetsam.execution.jobs import GradJob, GradResult

__all__ = ["FallbackExecutor"]


class FallbackExecutor(Executor):
    """``inner`` until its worker fails, then an inline executor on the descent device."""

    name = "fallback"
    has_worker = True

    def __init__(self, inner: Executor):
        super().__init__(on_worker_failure="degrade")
        self.inner = inner
        self.stats = inner.stats  # one set of counters
        self._bound: tuple | None = None
        self._fallback: InlineExecutor | None = None
        self._mine: set[Future] = set()

    @property
    def mode(self) -> str | None:
        return "degraded" if self._fallback is not None else getattr(self.inner, "mode", None)

    def bind(self, model, loss_fn, params, *, device, threads, amp_dtype, placement=None) -> None:
        self._bound = (model, loss_fn, list(params), amp_dtype, placement)
        self.inner.bind(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype,
                        placement=placement)

    def submit(self, job: GradJob) -> Future:
        if self._fallback is None:
            try:
                return self.inner.submit(job)
            except WorkerFailure as exc:
                if self.inner.closed:
                    raise
                self._degrade(exc)
        return self._run_here(job)

    def wait(self, future: Future, timeout: float | None = None) -> GradResult:
        if future in self._mine:
            self._mine.discard(future)
            return self._fallback.wait(future)
        try:
            return self.inner.wait(future, timeout)
        except WorkerFailure as exc:
            job = getattr(exc, "job", None)
            if job is None or self.inner.closed:
                raise
            if self._fallback is None:
                self._degrade(exc)
            return self._fallback.wait(self._fallback.submit(job))

    def _run_here(self, job: GradJob) -> Future:
        future = self._fallback.submit(job)
        self._mine.add(future)
        return future

    def _degrade(self, exc: WorkerFailure) -> None:
        model, loss_fn, params, amp_dtype, placement = self._bound
        cause = exc.__cause__
        descent = placement.descent_device if placement is not None else str(params[0].device)
        ascent = placement.ascent_device if placement is not None else "the ascent device"
        warn_user(
            f"hetsam: the ascent worker on {ascent} failed ({type(cause).__name__}: {cause}); "
            f"on_worker_failure='degrade': the ascent gradients now run synchronously on the descent device "
            f"{descent} (no step is lost; the ascent no longer overlaps the descent)"
        )
        fallback = InlineExecutor()
        fallback.stats = self.stats
        fallback.bind(model, loss_fn, params, device=torch_device(descent),
                      threads=placement.descent_threads if placement is not None else None, amp_dtype=amp_dtype)
        self._fallback = fallback

    def park(self) -> None:
        if self._fallback is None and hasattr(self.inner, "park"):
            self.inner.park()

    def close(self) -> None:
        if self.closed:
            return
        self.inner.close()
        if self._fallback is not None:
            self._fallback.close()
        self._mine.clear()
        super().close()

    def held_tensors(self) -> list:
        out = [] if self._fallback is not None else self.inner.held_tensors()
        return out + (self._fallback.held_tensors() if self._fallback is not None else [])

    @property
    def worker_thread(self):
        return getattr(self.inner, "worker_thread", None)

    def describe(self) -> dict[str, Any]:
        out = self.inner.describe()
        out["mode"] = self.mode
        out["on_worker_failure"] = "degrade"
        return out
