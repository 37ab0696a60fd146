"""The contract every executor passes (the executor module's docstring): the same numbers as the
inline reference, snapshots taken at submit, jobs in order, failures surfaced (never a hang), and
a clean close. Every executor hetsam builds is a case: inline, threads under each share mode and
on two disjoint pools, the degrade fallback, and the DDP wrapper (one gloo rank in-process)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
import torch.distributed as dist

from _alg_refs import batches, loss_fn, mlp
from hetsam.execution.distributed.context import RankContext
from hetsam.execution.distributed.executor import DistributedExecutor
from hetsam.execution.executor import InlineExecutor, Placement
from hetsam.execution.factory import make_executor
from hetsam.execution.jobs import GradJob
from hetsam.execution.threads import ThreadedExecutor

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    """A one-rank gloo process group, for the DDP wrapper."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if not dist.is_initialized():
        store = tmp_path_factory.mktemp("dist") / "store"
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        yield
        dist.destroy_process_group()
    else:  # pragma: no cover - another test left one
        yield


def _inline():
    return InlineExecutor(), None


def _threads(share):
    return lambda: (ThreadedExecutor(share=share), Placement("cpu", "cpu", None))


def _pools():
    if not TWO_CPUS:
        pytest.skip("needs two usable CPUs for two disjoint one-core pools")
    return ThreadedExecutor(), Placement("cpu:0[0]", "cpu:0[1]", 1)


def _fallback():
    return make_executor("threads", on_worker_failure="degrade", share="concurrent"), Placement("cpu", "cpu", None)


CASES = {
    "inline": _inline,
    "threads-concurrent": _threads("concurrent"),
    "threads-time-slice": _threads("time-slice"),
    "threads-auto": _threads("auto"),
    "threads-pools": _pools,
    "fallback": _fallback,
    "distributed": "distributed",
}


class Case:
    """One executor bound to a replica of ``model`` on the CPU."""

    def __init__(self, name, request, model, loss=loss_fn):
        if CASES[name] == "distributed":
            request.getfixturevalue("one_rank")
            ctx = RankContext(torch.nn.parallel.DistributedDataParallel(model))
            inner = ThreadedExecutor(share="concurrent")
            inner.bind(model, loss, list(model.parameters()), device=torch.device("cpu"), threads=1, amp_dtype=None,
                       placement=Placement("cpu", "cpu", None))
            self.ex, self.ctx = DistributedExecutor(inner, ctx, list(model.parameters())), ctx
        else:
            self.ex, placement = CASES[name]()
            self.ex.bind(model, loss, list(model.parameters()), device=torch.device("cpu"), threads=1, amp_dtype=None,
                         placement=placement)
            self.ctx = None
        self.model = model

    def job(self, key, batch):
        m = self.model
        return GradJob(key, "ascent", batch, list(m.parameters()), list(m.buffers()), tuple(x.training for x in m.modules()))

    def wait(self, future, timeout=None):
        if self.ctx is None:
            return self.ex.wait(future, timeout)
        with self.ctx.stepping():  # inside a step: the ranks agree on the job's status
            return self.ex.wait(future, timeout)


@pytest.fixture(params=list(CASES))
def case(request):
    torch.manual_seed(0)
    c = Case(request.param, request, mlp(bn=True))
    yield c
    c.ex.close()



def _reference(model, jobs_params, data):
    ref = InlineExecutor()
    ref.bind(model, loss_fn, list(model.parameters()), device=torch.device("cpu"), threads=1, amp_dtype=None)
    out = []
    for params, batch in zip(jobs_params, data):
        job = GradJob(0, "ascent", batch, params, list(model.buffers()), tuple(x.training for x in model.modules()))
        out.append(ref.wait(ref.submit(job)))
    ref.close()
    return out


def test_results_equal_the_inline_reference_and_snapshots_are_taken_at_submit(case, deterministic):
    data = batches(6)
    params = list(case.model.parameters())
    seen, results = [], []
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


def test_jobs_complete_in_order_with_two_outstanding(case):
    data = batches(5)
    futures = [case.ex.submit(case.job(t, batch)) for t, batch in enumerate(data[:2])]
    keys = []
    for t in range(2, 5):
        keys.append(case.wait(futures.pop(0)).key)
        futures.append(case.ex.submit(case.job(t, data[t])))
    keys += [case.wait(f).key for f in futures]
    assert keys == [0, 1, 2, 3, 4]


def test_held_tensors_and_describe(case):
    case.wait(case.ex.submit(case.job(0, batches(1)[0])))
    held = case.ex.held_tensors()
    assert held and all(isinstance(t, torch.Tensor) for t in held)
    assert "jobs" in case.ex.describe()


@pytest.mark.filterwarnings("ignore:hetsam. the ascent worker")
@pytest.mark.parametrize("name", [n for n in CASES if n != "distributed"])
def test_a_failing_job_surfaces_and_never_hangs(name, request):
    def exploding(model, batch):
        if batch[0].shape[0] == 3:
            raise RuntimeError("boom on the worker")
        return loss_fn(model, batch)

    torch.manual_seed(0)
    c = Case(name, request, mlp(), loss=exploding)
    try:
        ok, bad = batches(1)[0], [t[:3] for t in batches(1, seed=5)[0]]
        c.wait(c.ex.submit(c.job(0, ok)))
        start = time.perf_counter()
        try:
            result = c.wait(c.ex.submit(c.job(1, tuple(bad))))
        except Exception as exc:  # noqa: BLE001 - raise or WorkerFailure, per the policy
            assert "boom" in str(exc) or "boom" in str(exc.__cause__)
        else:  # only degrade may carry on, computing the job on the descent device
            assert name == "fallback" and result.key == 1
        assert time.perf_counter() - start < 5
    finally:
        c.ex.close()


@pytest.mark.filterwarnings("ignore:hetsam. the ascent worker")
@pytest.mark.parametrize("name", ["threads-concurrent", "fallback"])
def test_a_stuck_job_times_out_instead_of_hanging(name, request):
    release = threading.Event()

    def slow(model, batch):
        if batch[0].shape[0] == 3 and threading.current_thread().name.startswith("hetsam-ascent"):
            release.wait(30)
        return loss_fn(model, batch)

    torch.manual_seed(0)
    c = Case(name, request, mlp(), loss=slow)
    try:
        start = time.perf_counter()
        bad = tuple(t[:3] for t in batches(1)[0])
        if name == "fallback":  # recomputed on the descent thread, which never sleeps
            assert c.wait(c.ex.submit(c.job(0, bad)), timeout=0.3).key == 0
        else:
            with pytest.raises(Exception, match="ascent_timeout"):
                c.wait(c.ex.submit(c.job(0, bad)), timeout=0.3)
        assert time.perf_counter() - start < 5
    finally:
        release.set()
        c.ex.close()


def test_close_is_idempotent_and_leaves_no_worker(case):
    case.wait(case.ex.submit(case.job(0, batches(1)[0])))
    case.ex.close()
    case.ex.close()
    deadline = time.perf_counter() + 3
    while any(t.name.startswith("hetsam-ascent") for t in threading.enumerate()) and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert not any(t.name.startswith("hetsam-ascent") for t in threading.enumerate())
