"""Executors: where and when the gradient jobs of a step run.

The update rules (AsyncSAM, SAMPa) say *what* to compute and emit
:class:`~hetsam.execution.jobs.GradJob` s; an executor runs them on a
:class:`~hetsam.execution.replica.Replica` of the training model and hands back
:class:`~hetsam.execution.jobs.GradResult` s. Every executor passes the contract test cases of
:class:`hetsam.testing.ExecutorContract` (a new one subclasses it), so they compute the same numbers:

* :class:`InlineExecutor` (``executor="inline"``): the reference. Everything runs sequentially
  on the calling thread.
* ``ThreadedExecutor`` (``executor="threads"``, AutoSAM's default; :mod:`hetsam.execution.threads`):
  the same jobs on a worker thread bound to the ascent device, with double-buffered snapshots;
  time-sliced on the calling thread when both roles share hardware.
* ``FallbackExecutor`` (:mod:`hetsam.execution.fallback`): wraps an executor with a worker for
  ``on_worker_failure="degrade"``; ``DistributedExecutor`` wraps one for the ranks of a DDP job.

The contract (what a new executor must do)
------------------------------------------
``bind(model, loss_fn, params, *, device, threads, amp_dtype, placement=None)``
    Called once. Build the replica(s) with ``Replica(model, loss_fn, params, device=...,
    threads=..., amp_dtype=...)``. ``threads`` is the intra-op thread count of the ascent role,
    already resolved to a number: every job runs under exactly that count, which is what makes
    a worker thread's arithmetic identical to the inline executor's. ``placement`` (a
    :class:`Placement`, or None) names the two roles' devices and the descent's thread count.

``submit(job) -> concurrent.futures.Future``
    Queue a job. ``job.params`` and ``job.buffers`` are the *live* tensors of the training
    model: they change as soon as ``submit`` returns, so ``submit`` must have taken its copy of
    them first. Jobs complete in submission order.

``wait(future) -> GradResult``
    Block until that job is done and return its result; count and time the wait in
    ``stats``. A failure in the job re-raises here (an executor with a worker raises
    :class:`hetsam.WorkerFailure` with the original as ``__cause__`` and the job as ``.job``).
    A blocking wait never hangs on a dead worker, and gives up after ``timeout`` seconds when
    one is set.

``close()``
    Release workers and replicas; idempotent.

``held_tensors()``
    The parameter-sized tensors the executor keeps (replicas, staging buffers).

``stats`` (:class:`ExecutorStats`) counts what happened on the calling (descent) thread:
``wait_seconds`` is the time it sat *idle* waiting for a result computed elsewhere (what
the simulator calls the descent wait); ``inline_seconds`` the time it spent computing jobs
itself (time-sliced); ``copy_seconds`` the time ``submit`` spent taking snapshots.

Jobs must not use the global RNG (e.g. dropout in the model): its draws would interleave
differently on another thread. On CPU, bit-for-bit equality also needs
``torch.use_deterministic_algorithms(True)``.

Registering: ``hetsam.execution.factory.EXECUTORS`` maps a name to a class (or
``"module:Class"``, imported when first asked for); ``make_executor`` builds one and applies the
failure policy.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hetsam import _checks
from hetsam.execution.jobs import GradJob, GradResult
from hetsam.execution.replica import Replica
from hetsam.hardware.names import parse_device

__all__ = ["Executor", "ExecutorStats", "InlineExecutor", "Placement", "FAILURE_POLICIES"]

FAILURE_POLICIES = ("raise", "degrade")


@dataclass(frozen=True)
class Placement:
    """Where the two roles run: hetsam device names and the descent's intra-op threads."""

    descent_device: str
    ascent_device: str
    descent_threads: int | None = None

    @property
    def shared(self) -> bool:
        """Whether the ascent and the descent use the same hardware (cores or GPU)."""
        return parse_device(self.descent_device).overlaps(parse_device(self.ascent_device))


@dataclass
class ExecutorStats:
    """What the executor did, seen from the calling (descent) thread.

    ``waits``/``wait_seconds``: ``wait()`` calls that found the job unfinished and the time the
    caller sat idle in them (the descent wait); ``inline_seconds``: time the caller spent
    computing jobs itself (time-sliced, or the inline executor); ``job_seconds``: compute time
    of all jobs wherever they ran; ``copy_seconds``: time ``submit`` spent on snapshots.
    """

    jobs: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    job_seconds: float = 0.0
    inline_seconds: float = 0.0
    copy_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"jobs": self.jobs, "waits": self.waits, "wait_seconds": self.wait_seconds,
                "job_seconds": self.job_seconds, "inline_seconds": self.inline_seconds,
                "copy_seconds": self.copy_seconds}


class Executor(abc.ABC):
    """Runs gradient jobs on replicas; see the module docstring for the contract.

    ``on_worker_failure`` records the policy (``"raise"`` or ``"degrade"``); ``make_executor``
    applies ``"degrade"`` by wrapping an executor with a worker in a ``FallbackExecutor``.
    ``has_worker``: jobs may run on another thread (so a failure there is a worker failure).
    """

    name = "executor"
    has_worker = False

    def __init__(self, *, on_worker_failure: str = "raise") -> None:
        self.on_worker_failure = _checks.choice(on_worker_failure, "on_worker_failure", FAILURE_POLICIES)
        self.stats = ExecutorStats()
        self.closed = False

    @abc.abstractmethod
    def bind(self, model: nn.Module, loss_fn: Callable, params: Sequence[Tensor], *,
             device: torch.device, threads: int | None, amp_dtype: torch.dtype | None,
             placement: Placement | None = None) -> None:
        """Build the replica(s); called once before the first job."""

    @abc.abstractmethod
    def submit(self, job: GradJob) -> Future:
        """Queue ``job``; copy what it needs of ``job.params``/``job.buffers`` before returning."""

    @abc.abstractmethod
    def wait(self, future: Future, timeout: float | None = None) -> GradResult:
        """Block until the job of ``future`` is done (at most ``timeout`` seconds when given);
        return its result or re-raise its error."""

    def close(self) -> None:
        self.closed = True

    def held_tensors(self) -> list[Tensor]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, **self.stats.as_dict()}


class InlineExecutor(Executor):
    """The reference executor: every job runs on the calling thread, one after the other.

    A submitted job is loaded into the replica at once and run when its result is first
    waited for (or before the next job is loaded). The time spent running jobs counts as
    ``inline_seconds``, not as waiting: the descent thread computes the ascent itself.
    """

    name = "inline"

    def __init__(self, *, on_worker_failure: str = "raise") -> None:
        super().__init__(on_worker_failure=on_worker_failure)
        self.replica: Replica | None = None
        self._deferred: tuple[GradJob, Future] | None = None

    def bind(self, model, loss_fn, params, *, device, threads, amp_dtype, placement=None) -> None:
        self.replica = Replica(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype)

    def submit(self, job: GradJob) -> Future:
        if self.replica is None or self.closed:
            raise RuntimeError("InlineExecutor.submit() before bind() or after close()")
        self._run_deferred()  # the replica must finish the previous job before taking a new θ
        start = time.perf_counter()
        self.replica.load(job)
        self.stats.copy_seconds += time.perf_counter() - start
        future: Future = Future()
        self._deferred = (job, future)
        return future

    def wait(self, future: Future, timeout: float | None = None) -> GradResult:
        if not future.done():
            if self._deferred is None or self._deferred[1] is not future:
                raise RuntimeError("InlineExecutor.wait() on a job it does not hold")
            self._run_deferred()
        return future.result()

    def _run_deferred(self) -> None:
        if self._deferred is None:
            return
        job, future = self._deferred
        self._deferred = None
        start = time.perf_counter()
        try:
            result = self.replica.run(job)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            self.stats.inline_seconds += time.perf_counter() - start
        self.stats.jobs += 1
        self.stats.job_seconds += result.seconds
        future.set_result(result)

    def close(self) -> None:
        self._deferred = None
        self.replica = None
        super().close()

    def held_tensors(self) -> list[Tensor]:
        return self.replica.held_tensors() if self.replica is not None else []

