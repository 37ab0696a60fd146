"""Executors: where and when the gradient jobs of a step run.

The update rules (AsyncSAM, SAMPa) say *what* to compute and emit
:class:`~hetsam.execution.jobs.GradJob` s; an executor runs them on a :class:`Replica` of the
training model and hands back :class:`~hetsam.execution.jobs.GradResult` s. Two executors
share one contract, so they compute the same numbers:

* :class:`InlineExecutor` (``executor="inline"``): the reference. Everything runs sequentially
  on the calling thread.
* :class:`~hetsam.execution.threads.ThreadedExecutor` (``executor="threads"``, AutoSAM's
  default): the same jobs on a worker thread bound to the ascent device (its own intra-op
  thread count and core affinity on a CPU pool, its own CUDA stream on a GPU), with
  double-buffered parameter snapshots. When the ascent and descent devices overlap it runs
  the jobs time-sliced on the calling thread instead, as the inline executor does.

The contract (what a new executor must do)
------------------------------------------
``bind(model, loss_fn, params, *, device, threads, amp_dtype, placement=None)``
    Called once. Build the replica(s) with ``Replica(model, loss_fn, params, device=...,
    threads=..., amp_dtype=...)``. ``threads`` is the intra-op thread count of the ascent role,
    already resolved to a number by :func:`role_threads`: every job runs under exactly that
    count (``Replica.run`` sets it on the thread that runs the job), which is what makes a
    worker thread's arithmetic identical to the inline executor's. ``placement`` (a
    :class:`Placement`, or None) names the two roles' hetsam devices (``cpu:0[1]``, ``cuda:0``)
    and the descent's thread count, for executors that pin threads or detect shared hardware.

``submit(job) -> concurrent.futures.Future``
    Queue a job. ``job.params`` and ``job.buffers`` are the *live* tensors of the training
    model: they change as soon as ``submit`` returns, so ``submit`` must have taken its copy of
    them first, ``Replica.load(job)`` on the calling thread, or a copy into a free staging
    buffer that the worker then loads (double buffering). Jobs complete in submission order.

``wait(future) -> GradResult``
    Block until that job is done and return its result; count and time the wait in
    ``stats``. A failure in the job re-raises here (a threaded executor raises
    :class:`hetsam.WorkerFailure` with the original as ``__cause__``, or, with
    ``on_worker_failure="degrade"``, computes the job on the descent device instead).
    A blocking wait never hangs on a dead worker: it checks the worker's liveness.

``close()``
    Release workers and replicas; idempotent. A threaded executor joins its worker (within
    about a second; a job in flight cannot be interrupted inside a kernel).

``held_tensors()``
    The parameter-sized tensors the executor keeps (replicas, staging buffers), for memory
    accounting.

``stats`` (:class:`ExecutorStats`) counts what happened on the calling (descent) thread:
``wait_seconds`` is the time it sat *idle* waiting for a result computed elsewhere (what
the simulator calls the descent wait); ``inline_seconds`` the time it spent computing jobs
itself (time-sliced); ``copy_seconds`` the time ``submit`` spent taking snapshots.

To compute the same numbers as the inline executor, a job must go through ``Replica.load``
and ``Replica.run`` unchanged: the same replica (a deep copy of the model), the same copy-in,
the same :func:`hetsam.execution.passes.compute_gradient`, the same thread count. Jobs must
not use the global RNG (e.g. dropout in the model): its draws would interleave differently on
another thread. On CPU, bit-for-bit equality also needs ``torch.use_deterministic_algorithms(True)``.

The inline executor defers a submitted job until its result is waited for, or until the
replica is needed for the next job (the snapshot is copied at ``submit``, so this changes no
number); that way it never holds more than one result, which keeps its memory at the minimum.

Registering: :data:`EXECUTORS` maps a name to a factory called with the keyword options of
:class:`Executor` (``on_worker_failure``). ``"threads"`` is registered by
:mod:`hetsam.execution.threads`; should it be missing, asking for it falls back to ``"inline"``
with a one-time warning.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from hetsam.execution.batches import batch_to
from hetsam.execution.passes import AmpSpec, compute_gradient, intra_op_threads, norm_layers
from hetsam._warnings import warn_user
from hetsam.execution.jobs import GradJob, GradResult
from hetsam.hardware.names import parse_device
from hetsam.errors import HetsamInputError

__all__ = [
    "Executor",
    "ExecutorStats",
    "InlineExecutor",
    "Placement",
    "Replica",
    "EXECUTORS",
    "FAILURE_POLICIES",
    "make_executor",
    "pool_cpus",
    "role_binding",
    "role_threads",
    "torch_device",
    "GradJob",
    "GradResult",
]

FAILURE_POLICIES = ("raise", "degrade")


def torch_device(name: str) -> torch.device:
    """The torch device of a hetsam device name (a CPU pool is the ``cpu`` device)."""
    dev = parse_device(name)
    if dev.kind == "cpu":
        return torch.device("cpu")
    return torch.device("cuda") if dev.index is None else torch.device("cuda", dev.index)


def role_threads(device: str, override: int | None = None) -> int:
    """Intra-op thread count of a role: ``override``, else a pool's core count, else the
    calling thread's current ``torch.get_num_threads()``."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise HetsamInputError(f"thread count {override!r} must be a positive integer")
        return override
    dev = parse_device(device)
    if dev.kind == "cpu" and dev.positions is not None:
        return len(dev.positions)
    return torch.get_num_threads()


def pool_cpus(device: str) -> tuple[int, ...] | None:
    """OS CPU ids to pin a role on ``device`` to, or None to leave the affinity alone.

    A CPU pool or socket (``cpu:0[1]``, ``cpu:1``) maps to its OS CPUs through
    :func:`hetsam.hardware.detect.cpus_of`; ``cpu`` (every usable core), a name that spans the whole
    process affinity, and GPUs give None.
    """
    dev = parse_device(device)
    if dev.kind != "cpu" or dev.index is None:
        return None
    from hetsam.hardware.detect import cpus_of  # sysfs reads; only for pools

    cpus = cpus_of(device)
    try:
        if set(cpus) == set(os.sched_getaffinity(0)):
            return None
    except (AttributeError, OSError):  # no affinity API here: nothing to pin
        return None
    return cpus


@contextlib.contextmanager
def role_binding(threads: int | None, cpus: Sequence[int] | None = None) -> Iterator[None]:
    """Run the body with the calling thread's intra-op thread count ``threads`` and, when
    ``cpus`` is given, its core affinity set to ``cpus``; both are restored afterwards.

    Affinity is per thread on Linux (``sched_setaffinity`` on the calling thread). Threads
    that OpenMP created for this thread before the call keep their mask; hetsam's worker
    threads pin themselves before their first parallel region, so theirs inherit it.
    """
    old = None
    if cpus is not None:
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
    try:
        with intra_op_threads(threads):
            yield
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)


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


class Replica:
    """A deep copy of the training model that evaluates :class:`GradJob` s.

    ``params`` are the replica's parameters aligned with the trainable parameters of the job
    (the base optimizer's groups); replica parameters outside that list do not require grad.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, params: Sequence[Tensor], *,
                 device: torch.device, threads: int | None, amp_dtype: torch.dtype | None):
        position = {p: i for i, p in enumerate(model.parameters())}
        missing = [i for i, p in enumerate(params) if p not in position]
        if missing:
            raise HetsamInputError(
                f"{len(missing)} optimized parameter(s) are not parameters of the model; "
                "AutoSAM optimizes the model's own parameters"
            )
        module = copy.deepcopy(model).to(device)
        replica_params = list(module.parameters())
        wanted = {position[p] for p in params}
        for i, p in enumerate(replica_params):
            p.grad = None
            if i not in wanted:
                p.requires_grad_(False)
        self.module = module
        self.loss_fn = loss_fn
        self.params = [replica_params[position[p]] for p in params]
        self.buffers = list(module.buffers())
        self.modules = list(module.modules())
        self.layers = norm_layers(module)
        self.device = device
        self.out_device = params[0].device if params else device
        self.threads = threads
        self.amp = AmpSpec(device.type, amp_dtype) if amp_dtype is not None else None

    @torch.no_grad()
    def load(self, job: GradJob) -> None:
        """Copy the job's parameter values, buffers and train/eval flags into the replica."""
        if job.params:
            torch._foreach_copy_(self.params, list(job.params))
        if job.buffers:
            # buffers are small (BatchNorm statistics); in-place kernel updates do not bump
            # tensor versions, so there is no cheap way to know which changed: copy them all
            torch._foreach_copy_(self.buffers, list(job.buffers))
        if job.training:
            for m, flag in zip(self.modules, job.training):
                m.training = flag

    def run(self, job: GradJob) -> GradResult:
        """g(θ; B) at the loaded θ, under the role's thread count; the ascent pass never
        updates running statistics."""
        start = time.perf_counter()
        with intra_op_threads(self.threads):
            batch = batch_to(job.batch, self.device)
            loss = compute_gradient(
                self.module, self.loss_fn, batch, self.params, accumulate=job.accumulate, amp=self.amp,
                loss_scale=job.loss_scale, unscale=True, update_stats=False, layers=self.layers,
            )
            out = self.out_device
            grads = [None if p.grad is None else (p.grad if p.grad.device == out else p.grad.to(out)) for p in self.params]
            for p in self.params:
                p.grad = None  # the result owns these tensors now
            value = float(loss)
        return GradResult(job.key, job.kind, grads, value, time.perf_counter() - start)

    def held_tensors(self) -> list[Tensor]:
        return list(self.module.parameters()) + self.buffers


class Executor(abc.ABC):
    """Runs gradient jobs on replicas; see the module docstring for the contract.

    ``on_worker_failure``: what a failed job does at ``wait``: ``"raise"`` (a
    :class:`hetsam.WorkerFailure` from the original error) or ``"degrade"`` (an executor with a
    worker computes the job on the descent device instead and carries on there). Executors
    without a worker re-raise the job's own error either way.
    """

    name = "executor"

    def __init__(self, *, on_worker_failure: str = "raise") -> None:
        if on_worker_failure not in FAILURE_POLICIES:
            raise HetsamInputError(f"on_worker_failure={on_worker_failure!r} must be 'raise' or 'degrade'")
        self.on_worker_failure = on_worker_failure
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
    def wait(self, future: Future) -> GradResult:
        """Block until the job of ``future`` is done; return its result or re-raise its error."""

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

    def wait(self, future: Future) -> GradResult:
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


EXECUTORS: dict[str, Callable[..., Executor]] = {"inline": InlineExecutor}

_warned_fallback = threading.Event()


def make_executor(spec: str | Executor, **options) -> Executor:
    """An executor from a name in :data:`EXECUTORS` (built with ``options``) or an
    :class:`Executor` instance (returned as is).

    ``"threads"`` falls back to ``"inline"`` (with a one-time warning) if it is not registered.
    """
    if isinstance(spec, Executor):
        return spec
    if spec == "threads" and "threads" not in EXECUTORS:
        if not _warned_fallback.is_set():
            _warned_fallback.set()
            warn_user(
                "executor='threads' is not available in this version of hetsam yet; running "
                "executor='inline' (same results, no overlap of the ascent with the descent)"
            )
        spec = "inline"
    factory = EXECUTORS.get(spec) if isinstance(spec, str) else None
    if factory is None:
        raise HetsamInputError(f"executor={spec!r} is unknown; choose one of {', '.join(sorted(EXECUTORS | {'threads': None}))}")
    return factory(**options)


import hetsam.execution.threads  # noqa: E402,F401  registers "threads" (it imports this module)
