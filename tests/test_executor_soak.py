"""Soak: 5,000 AsyncSAM steps through a worker thread leak neither threads nor memory."""

import threading

import psutil
import pytest
import torch
from torch import nn

from hetsam import AutoSAM, Plan
from hetsam.execution.threads import ThreadedExecutor

STEPS = 5000
WARM = 500  # RSS is taken after the allocator and the pipeline have settled


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
def test_5000_async_steps_keep_threads_and_rss_flat():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 8, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(16)]

    def loss_fn(m, batch):
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    proc = psutil.Process()
    plan = Plan(strategy="async_sam", options={"staleness": 2, "ascent_batch_size": 2})
    threads_before = threading.active_count()
    with AutoSAM(model, loss_fn, plan=plan, executor=ThreadedExecutor(share="concurrent"), lr=0.01, momentum=0.9) as opt:
        for t in range(STEPS):
            opt.step(data[t % 16], upcoming=[data[(t + 1) % 16], data[(t + 2) % 16]])
            if t == WARM:
                rss_warm = proc.memory_info().rss
                threads_warm = threading.active_count()
        rss_end = proc.memory_info().rss
        assert threading.active_count() == threads_warm == threads_before + 1  # the one worker
        stats = opt.stats()
        assert stats["executor"]["jobs"] == STEPS - plan.option("staleness")
        assert stats["executor"]["staging_slots"] <= plan.option("staleness")
    assert rss_end <= 1.05 * rss_warm, (rss_warm, rss_end)
    assert threading.active_count() == threads_before
    assert torch.isfinite(torch.cat([p.detach().flatten() for p in model.parameters()])).all()
