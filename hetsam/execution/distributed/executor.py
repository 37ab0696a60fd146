"""The executor wrapper that keeps the ranks in lock-step when an ascent worker fails."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from torch import Tensor

from hetsam.execution.distributed.context import DEGRADED, FAILED, OK, RankContext
from hetsam.execution.executor import Executor

__all__ = ["DistributedExecutor"]


class DistributedExecutor(Executor):
    """Wraps one rank's executor so that ascent failures are agreed on across the ranks.

    ``submit`` never raises a job failure: it returns a failed future, and the ``wait`` on it
    settles it with the other ranks (:meth:`RankContext.settle`). Inside a step every ``wait``
    all-reduces the rank's status once; outside a step (``state_dict``) it is the inner
    executor's ``wait``. With ``average_results`` (SAMPa with one pair of gradients per rank)
    the job's gradients (aligned with ``params``) are averaged over the ranks. ``inner`` is the
    wrapped executor; it may be bound before or through the wrapper.
    """

    name = "distributed"

    def __init__(self, inner: Executor, ctx: RankContext, params: Sequence[Tensor] = (), *,
                 average_results: bool = False):
        super().__init__(on_worker_failure=inner.on_worker_failure)
        self.inner = inner
        self.ctx = ctx
        self.average_results = average_results
        self.stats = inner.stats
        self._held_back: dict[Future, BaseException] = {}
        self._like: list[Tensor] = list(params)

    def bind(self, model, loss_fn, params, *, device, threads, amp_dtype, placement=None) -> None:
        self._like = list(params)
        self.inner.bind(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype,
                        placement=placement)

    @property
    def mode(self) -> str | None:
        return getattr(self.inner, "mode", None)

    def submit(self, job) -> Future:
        try:
            return self.inner.submit(job)
        except Exception as exc:  # noqa: BLE001 - settled with the other ranks at wait()
            future: Future = Future()
            future.set_exception(exc)
            self._held_back[future] = exc
            return future

    def wait(self, future: Future, timeout: float | None = None):
        error = self._held_back.pop(future, None)
        if not self.ctx.in_step:
            if error is not None:
                raise error
            return self.inner.wait(future, timeout)
        result = None
        if error is None:
            try:
                result = self.inner.wait(future, timeout)
            except Exception as exc:  # noqa: BLE001 - every rank must hear of it first
                error = exc
        status = FAILED if error is not None else DEGRADED if self.mode == "degraded" else OK
        if self.ctx.fault_agreement:
            self.ctx.settle(status, error)
        elif error is not None:
            raise error
        if self.average_results:
            result = dataclasses.replace(result, grads=self.ctx.average(result.grads, self._like))
        return result

    def close(self) -> None:
        self.inner.close()
        self._held_back.clear()
        super().close()

    def held_tensors(self) -> list[Tensor]:
        return self.inner.held_tensors()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
