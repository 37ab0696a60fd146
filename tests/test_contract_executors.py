"""Every executor hetsam builds passes ``hetsam.testing.ExecutorContract`` (the shipped contract):
inline, threads under each share mode and on two disjoint pools, the degrade fallback, and the DDP
wrapper (one gloo rank in-process)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from hetsam.execution.distributed.context import RankContext
from hetsam.execution.distributed.executor import DistributedExecutor
from hetsam.execution.executor import InlineExecutor, Placement
from hetsam.execution.factory import make_executor
from hetsam.execution.threads import ThreadedExecutor
from hetsam.testing import ExecutorCase, ExecutorContract

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
SHARED = Placement("cpu", "cpu", None)


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


class TestInline(ExecutorContract):
    def build(self, model, loss):
        return ExecutorCase(InlineExecutor(), model, loss)


class TestThreadsConcurrent(ExecutorContract):
    stuck_jobs_time_out = True  # the worker computes every job

    def build(self, model, loss):
        return ExecutorCase(ThreadedExecutor(share="concurrent"), model, loss, SHARED)


class TestThreadsTimeSlice(ExecutorContract):
    def build(self, model, loss):
        return ExecutorCase(ThreadedExecutor(share="time-slice"), model, loss, SHARED)


class TestThreadsAuto(ExecutorContract):
    def build(self, model, loss):
        return ExecutorCase(ThreadedExecutor(share="auto"), model, loss, SHARED)


class TestThreadsOnTwoPools(ExecutorContract):
    stuck_jobs_time_out = True

    def build(self, model, loss):
        if not TWO_CPUS:
            pytest.skip("needs two usable CPUs for two disjoint one-core pools")
        return ExecutorCase(ThreadedExecutor(), model, loss, Placement("cpu:0[0]", "cpu:0[1]", 1))


class TestFallback(ExecutorContract):
    degrades = True

    def build(self, model, loss):
        return ExecutorCase(make_executor("threads", on_worker_failure="degrade", share="concurrent"), model, loss,
                            SHARED)


class TestDistributed(ExecutorContract):
    stuck_jobs_time_out = True  # its inner executor's worker computes every job

    @pytest.fixture(autouse=True)
    def _group(self, one_rank):
        yield

    def build(self, model, loss):
        ctx = RankContext(torch.nn.parallel.DistributedDataParallel(model))
        inner = ExecutorCase(ThreadedExecutor(share="concurrent"), model, loss, SHARED).ex
        return ExecutorCase(DistributedExecutor(inner, ctx, list(model.parameters())), model, loss, bind=False,
                            stepping=ctx.stepping)
