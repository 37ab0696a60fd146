"""The contract every executor passes (``hetsam.execution.executor``'s docstring): the same numbers
as the inline reference, snapshots taken at submit, jobs in order, failures surfaced (never a
hang), and a clean close.

Subclass :class:`ExecutorContract` in a test module (the name starting with ``Test``), build the
executor in ``build`` and say what it does with a failing or stuck job::

    from hetsam.testing import ExecutorCase, ExecutorContract

    class TestMyExecutor(ExecutorContract):
        stuck_jobs_time_out = True  # its jobs run on a worker thread

        def build(self, model, loss):
            return ExecutorCase(MyExecutor(), model, loss)
"""

from __future__ import annotations

import contextlib
import faulthandler
import threading
from collections.abc import Callable

import pytest
import torch

from hetsam.errors import WorkerFailure
from hetsam.execution.executor import Executor, InlineExecutor, Placement
from hetsam.execution.jobs import GradJob
from hetsam.testing.toys import batches, deterministic_algorithms, loss_fn, mlp

__all__ = ["ExecutorCase", "ExecutorContract"]

HANG = 60.0  # seconds after which a wait that has not returned is a hang (a guard, never a timing)


class ExecutorCase:
    """An executor bound to a replica of ``model`` on the CPU (one intra-op thread), and how the
    descent waits for it. ``bind=False``: the executor is bound already (a wrapper of a bound
    one); ``stepping``: a context manager every wait runs inside (a DDP step's)."""

    def __init__(self, executor: Executor, model: torch.nn.Module, loss: Callable = loss_fn,
                 placement: Placement | None = None, *, bind: bool = True,
                 stepping: Callable[[], contextlib.AbstractContextManager] | None = None):
        if bind:
            executor.bind(model, loss, list(model.parameters()), device=torch.device("cpu"), threads=1,
                          amp_dtype=None, placement=placement)
        self.ex, self.model, self._stepping = executor, model, stepping

    def job(self, key, batch) -> GradJob:
        m = self.model
        return GradJob(key, "ascent", batch, list(m.parameters()), list(m.buffers()), tuple(x.training for x in m.modules()))

    def wait(self, future, timeout=None):
        with self._stepping() if self._stepping is not None else contextlib.nullcontext():
            return self.ex.wait(future, timeout)


def _reference(model, jobs_params, data):
    ref = InlineExecutor()
    ref.bind(model, loss_fn, list(model.parameters()), device=torch.device("cpu"), threads=1, amp_dtype=None)
    out = []
    for params, batch in zip(jobs_params, data):
        job = GradJob(0, "ascent", batch, params, list(model.buffers()), tuple(x.training for x in model.modules()))
        out.append(ref.wait(ref.submit(job)))
    ref.close()
    return out


@contextlib.contextmanager
def _hang_guard():
    """A wait that never returns ends the process after HANG s with every thread's traceback
    (faulthandler), instead of hanging the test run; nothing is timed otherwise."""
    faulthandler.dump_traceback_later(HANG, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


class ExecutorContract:
    """pytest test cases for one executor (see the module docstring).

    Override ``build(model, loss) -> ExecutorCase``. What the executor does with a bad job:
    ``degrades``: it computes a failed or stuck job again on the calling thread
    (``on_worker_failure="degrade"``) instead of raising; ``stuck_jobs_time_out``: its jobs run
    on a worker, so ``wait(timeout=...)`` gives up on a stuck one (``WorkerFailure``).
    """

    degrades = False
    stuck_jobs_time_out = False

    def build(self, model: torch.nn.Module, loss: Callable) -> ExecutorCase:
        raise NotImplementedError(f"{type(self).__name__}: define build(model, loss) -> ExecutorCase")

    @pytest.fixture
    def case(self):
        torch.manual_seed(0)
        before = set(threading.enumerate())
        c = self.build(mlp(bn=True), loss_fn)
        c.threads_before = before
        yield c
        c.ex.close()

    def _bad_case(self, loss):
        torch.manual_seed(0)
        return self.build(mlp(), loss)

    def test_results_equal_the_inline_reference_and_snapshots_are_taken_at_submit(self, case):
        data = batches(6)
        params = list(case.model.parameters())
        seen, results = [], []
        with deterministic_algorithms():
            for t, batch in enumerate(data):
                seen.append([p.detach().clone() for p in params])
                future = case.ex.submit(case.job(t, batch))
                with torch.no_grad():  # the caller changes θ as soon as submit returns
                    for p in params:
                        p.add_(0.01 * (t + 1))
                results.append(case.wait(future))
            expected = _reference(case.model, seen, data)
        for got, want in zip(results, expected):
            assert got.loss == want.loss
            assert all(torch.equal(a, b) for a, b in zip(got.grads, want.grads))
        assert case.ex.stats.jobs == len(data) or case.ex.describe()["jobs"] == len(data)

    def test_jobs_complete_in_order_with_two_outstanding(self, case):
        data = batches(5)
        futures = [case.ex.submit(case.job(t, batch)) for t, batch in enumerate(data[:2])]
        keys = []
        for t in range(2, 5):
            keys.append(case.wait(futures.pop(0)).key)
            futures.append(case.ex.submit(case.job(t, data[t])))
        keys += [case.wait(f).key for f in futures]
        assert keys == [0, 1, 2, 3, 4]

    def test_held_tensors_and_describe(self, case):
        case.wait(case.ex.submit(case.job(0, batches(1)[0])))
        held = case.ex.held_tensors()
        assert held and all(isinstance(t, torch.Tensor) for t in held)
        assert "jobs" in case.ex.describe()

    @pytest.mark.filterwarnings("ignore:hetsam. the ascent worker")
    def test_a_failing_job_surfaces_and_never_hangs(self):
        def exploding(model, batch):
            if batch[0].shape[0] == 3:
                raise RuntimeError("boom on the worker")
            return loss_fn(model, batch)

        c = self._bad_case(exploding)
        try:
            ok, bad = batches(1)[0], [t[:3] for t in batches(1, seed=5)[0]]
            c.wait(c.ex.submit(c.job(0, ok)))
            try:
                with _hang_guard():
                    result = c.wait(c.ex.submit(c.job(1, tuple(bad))))
            except Exception as exc:  # noqa: BLE001 - the original, or WorkerFailure with it as the cause
                assert "boom" in str(exc) or "boom" in str(exc.__cause__)
            else:  # only degrade may carry on, computing the job on the descent thread
                assert self.degrades and result.key == 1
        finally:
            c.ex.close()

    @pytest.mark.filterwarnings("ignore:hetsam. the ascent worker")
    def test_a_stuck_job_times_out_instead_of_hanging(self):
        if not (self.stuck_jobs_time_out or self.degrades):
            pytest.skip(f"{type(self).__name__}: stuck_jobs_time_out and degrades are False (jobs on the calling thread)")
        release, caller, returned = threading.Event(), threading.current_thread(), []

        def slow(model, batch):
            if batch[0].shape[0] == 3 and threading.current_thread() is not caller:  # stuck on a worker only
                release.wait(HANG / 2)  # an executor that never gives up gets its result late: a failure
                returned.append("worker")
            return loss_fn(model, batch)

        c = self._bad_case(slow)
        try:
            bad = tuple(t[:3] for t in batches(1)[0])
            with _hang_guard():
                if self.degrades:  # recomputed on the calling thread, which is never stuck
                    assert c.wait(c.ex.submit(c.job(0, bad)), timeout=0.3).key == 0
                else:
                    with pytest.raises(WorkerFailure, match="timeout"):
                        c.wait(c.ex.submit(c.job(0, bad)), timeout=0.3)
            assert not returned  # the wait gave up on the stuck job: it did not wait for it
        finally:
            release.set()
            c.ex.close()

    def test_close_is_idempotent_and_leaves_no_worker(self, case):
        case.wait(case.ex.submit(case.job(0, batches(1)[0])))
        case.ex.close()
        case.ex.close()
        for t in [t for t in threading.enumerate() if t not in case.threads_before]:
            t.join(HANG)  # a hang guard: a worker that close() stopped ends at once
            assert not t.is_alive(), f"thread {t.name!r} still runs after close()"
