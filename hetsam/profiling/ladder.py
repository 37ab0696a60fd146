"""What one device times: the executors' gradient pass, and the fixed costs of a step.

The gradient pass timed here is the executors' own: a :class:`~hetsam.execution.replica.Replica`
and its ``run`` (``compute_gradient`` under the role's thread count, the gradients released
after it), so what is profiled is what runs. GPUs are timed with CUDA events around the pass.
A batch that does not fit (``torch.OutOfMemoryError`` or an allocator "out of memory") ends the
device's ladder (:mod:`hetsam.profiling.rounds`).

:func:`measure_step_costs` times the fixed costs of a step through the descent-side
:class:`~hetsam.execution.runtime.Runtime`, the code the rules call: the base update
(AutoSAM's non-finite check, then ``Runtime.apply``, SGD with momentum 0.9), the climb of a perturbed step (``save`` θ,
``climb`` to θ + e, ``restore``), and SAMPa's auxiliary work (what its side of a step does beyond
that climb: move to y = x − η(g + wd·x + μ·buf) and back, ‖g_y'‖ with its host sync, the mix
(1−λ)·g_x + λ·g_y'), all of it parameter-sized passes on the descent's thread. The cost model
adds them to every step (the climb only to perturbed steps, the auxiliary work only to SAMPa's;
docs/architecture.md, "Step costs"). :func:`measure_sliced_handoff` times what the threaded
executor adds to a time-sliced ascent job (both roles on one device) beyond its bare pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from hetsam.execution.batches import detach_to, slice_batch
from hetsam.execution.executor import Placement
from hetsam.execution.finite import not_finite
from hetsam.execution.jobs import ASCENT, GradJob
from hetsam.execution.replica import Replica
from hetsam.execution.runtime import Runtime
from hetsam.execution.threads import ThreadedExecutor
from hetsam.hardware.kinds import torch_kind
from hetsam.optim.kernels import AscentGroup, ascent_norm, mix_, optimistic_point_
from hetsam.profiling.stats import Measurement, median
from hetsam.profiling.targets import Target

__all__ = ["TimedReplica", "DescentWork", "measure_step_costs", "measure_sliced_handoff", "is_oom"]

_OOM_TYPES = tuple({getattr(torch, "OutOfMemoryError", RuntimeError),
                    getattr(torch.cuda, "OutOfMemoryError", RuntimeError)} - {RuntimeError})


class TimedReplica:
    """The executors' replica of the model on one device, built inside that device's thread,
    with the sample batch already there; ``time_step(n)`` times one gradient pass on n samples."""

    def __init__(self, model, loss_fn, batch, target: Target):
        self.device = torch.device(target.torch_device)
        self.kind = torch_kind(self.device)  # how its time is measured and its memory returned
        params = [p for p in model.parameters() if p.requires_grad]
        self.replica = Replica(model, loss_fn, params, device=self.device, threads=target.threads, amp_dtype=None,
                               out_device=self.device)
        self.replica.module.train()
        self.batch = detach_to(batch, self.device)
        self.model, self.loss_fn, self.target = model, loss_fn, target  # for the time-sliced executor

    @property
    def params(self):
        return self.replica.params

    def step(self, n: int):
        """One gradient pass on the first ``n`` samples; returns its result."""
        return self.replica.run(GradJob(0, "profile", slice_batch(self.batch, 0, n), params=()))

    def timed(self, fn: Callable[[], None]) -> float:
        """Seconds of ``fn`` on the device: the wall clock on a CPU, CUDA events on a GPU."""
        return self.kind.timed(self.device, fn)

    def time_step(self, n: int) -> float:
        return self.timed(lambda: self.step(n))

    def release(self) -> None:
        del self.replica, self.batch
        self.kind.release()


def measure_sliced_handoff(replica: TimedReplica, n: int, allot: float, *, repeats: int = 30) -> float | None:
    """What a time-sliced ascent job of the threaded executor costs beyond its pass at batch ``n`` on
    the replica's CPU device (both roles on these cores: the job runs on the calling thread after
    staging θ into its replica): the median over jobs of the round trip ``submit`` → ``wait`` minus
    the job's own pass (``GradResult.seconds``, so the pass's noise cancels), up to ``repeats`` jobs
    within ``allot`` seconds. Measured on the 2-core machine: MLP 0.10 ms, the transformer 0.39 ms,
    ResNet-20 0.59 ms; a job's pass took what a bare pass does (within 2%). None on an accelerator
    (a host clock around asynchronous work would not time it) or without parameters."""
    params = [p for p in replica.model.parameters() if p.requires_grad]
    if replica.target.kind != "cpu" or not params:
        return None
    t = replica.target
    executor = ThreadedExecutor(share="time-slice")
    executor.bind(replica.model, replica.loss_fn, params, device=replica.device, threads=t.threads, amp_dtype=None,
                  placement=Placement(t.id, t.id, t.threads))
    buffers, training = list(replica.model.buffers()), tuple(m.training for m in replica.model.modules())
    job_batch = slice_batch(replica.batch, 0, n)
    beyond = []
    try:
        start = time.perf_counter()
        for k in range(repeats + 1):
            t0 = time.perf_counter()
            result = executor.wait(executor.submit(GradJob(k, ASCENT, job_batch, params=params, buffers=buffers,
                                                           training=training)))
            if k:  # the first warms up
                beyond.append(time.perf_counter() - t0 - result.seconds)
            if k >= 3 and time.perf_counter() - start > allot:
                break
    finally:
        executor.close()
    return max(0.0, median(beyond))


def is_oom(exc: BaseException) -> bool:
    if _OOM_TYPES and isinstance(exc, _OOM_TYPES):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class DescentWork:
    """The descent thread's parameter-sized work in a step, through the rules' own
    :class:`~hetsam.execution.runtime.Runtime` on the replica's parameters (SGD, momentum 0.9,
    lr 1e-6, so the parameters barely move): the update, the climb and SAMPa's auxiliary work."""

    def __init__(self, replica: TimedReplica):
        self.params = replica.params
        self.base = torch.optim.SGD([{"params": self.params, "rho": 0.05}], lr=1e-6, momentum=0.9)
        self.rt = Runtime(replica.replica.module, lambda m, b: None, self.base)
        self.loss = torch.zeros(())

    def update(self, grads) -> None:
        """As AutoSAM's: the non-finite check (one host sync), then the base update."""
        for p, g in zip(self.params, grads):
            p.grad = g
        if not_finite([self.loss], grads, self.base.param_groups) is None:
            self.rt.apply()

    def climb(self, ghat, around: Callable[[], object] = lambda: None):
        """A perturbed step's climb (hetsam.strategies.sam.rule): θ + e from ``ghat`` (overwritten),
        ``around()`` there (the pass), restore θ; returns what ``around`` returned."""
        rt = self.rt
        rt.save()
        rt.climb(ghat, scratch=True)
        out = around()
        rt.restore()
        rt.perturbation.release()
        return out

    def sampa_side(self, g_x, g_y, g_y_norm, g_next) -> None:
        """SAMPa's descent-thread work besides its pass and its update, as its rule does it
        (hetsam.strategies.sampa.rule): back up x, move to y = x − η(g_y + wd·x + μ·buf), restore x,
        climb to x̃ along g_y with its known norm (g_y is overwritten), restore x, then ‖g_y'‖ with
        its host sync and the mix (1−λ)·g_x + λ·g_y' into ``p.grad``."""
        rt = self.rt
        for p, g in zip(self.params, g_x):
            p.grad = g  # g_x, the mix's destination
        rt.save()
        optimistic_point_(self.base, g_y)  # y_{t+1}
        rt.restore()
        rt.climb(g_y, scratch=True, norm=g_y_norm)  # x̃_t
        rt.restore()
        rt.perturbation.release()
        norm = ascent_norm([AscentGroup([], g_next, 0.0)])
        float(norm)  # the rule's finiteness check
        mix_([p.grad for p in self.params], g_next, 0.8, 0.2)

    def clear(self) -> None:
        for p in self.params:
            p.grad = None


def measure_step_costs(replica: TimedReplica, n: int, allot: float) -> tuple[float | None, float | None, float | None]:
    """``(update, climb, auxiliary)`` seconds on the replica's device, each the median of up to 50
    repeats within ``allot`` seconds (None when the model has no parameters to train). The cost
    model charges a SAMPa step ``a + c``; SAMPa backs up θ once and climbs with a norm it already
    has, so ``a`` is SAMPa's whole side (:meth:`DescentWork.sampa_side`) minus the climb ``c``.

    Each is timed right after a gradient pass on ``n`` samples and on that pass's gradients, as it
    runs in a step (SAMPa's g_y' comes from another pass, as from its worker). Side by side with
    AutoSAM's SAM on the 2-core machine (MLP, b = 64), the update took 0.36 ms in the step, 0.24
    ms back to back in a loop (the caches warm), and 0.45 ms after a pass on other gradients; timed
    as here, 0.62 and 0.87 ms against 0.65 and 0.70 ms in the step (two later runs), and 1.23
    against 1.21 ms for the transformer.
    """
    if not replica.params:
        return None, None, None
    work = DescentWork(replica)
    other = [g.detach().clone() for g in replica.step(n).grads]  # SAMPa's g_y and g_y', from its worker
    other_norm = ascent_norm([AscentGroup([], other, 0.0)])
    fresh: list = []  # the last pass's gradients
    spare: list = []  # a copy of g_y for SAMPa's climb to overwrite
    costs = (("update", lambda: work.update(fresh)), ("climb", lambda: work.climb(fresh)),
             ("pair side", lambda: work.sampa_side(fresh, spare, other_norm, other)))
    times: dict[str, list[float]] = {name: [] for name, _ in costs}
    start = time.perf_counter()
    for _name, fn in costs:  # untimed: creates the momentum buffers and the backup of θ
        fresh[:], spare[:] = [g.clone() for g in other], [g.clone() for g in other]
        fn()
    for _ in range(50):
        spare[:] = [g.clone() for g in other]  # only the pair side uses it, once a round
        for name, fn in costs:
            fresh[:] = replica.step(n).grads
            times[name].append(replica.timed(fn))
        spent = time.perf_counter() - start
        if spent > allot or (spent > min(allot, 1.0) and len(times["climb"]) >= 3):
            break
    fresh.clear()
    work.clear()
    update, climb, side = (Measurement(times[k]).median for k in ("update", "climb", "pair side"))
    return update, climb, max(0.0, side - climb)  # SAMPa's step is charged a + c: a is what it does beyond the climb
