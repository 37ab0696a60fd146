"""AutoSAM in a Hugging Face Accelerate loop against AutoSAM in a plain loop (the real package)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from accelerate_train import digits, main, make_autosam, make_net, train  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from hetsam import AutoSAM, HetsamInputError  # noqa: E402
from hetsam.integrations.accelerate import prepare  # noqa: E402

STEPS = 8


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps its state in process-wide singletons: each test builds its own."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def plain_loop(strategy, steps, amp=None, accumulate=1):
    """The same model, data, optimizer and cosine schedule without accelerate; ``accumulate=k``:
    one step(concat, accumulate=k) on each k loader batches of 64/k."""
    net = make_net(0)
    opt = make_autosam(net, strategy)
    if amp is not None:
        opt.close()
        opt = AutoSAM(net, opt.loss_fn, torch.optim.SGD, rho=0.05, plan=opt.plan, executor="threads", seed=0, amp=amp,
                      log=lambda line: None, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    micro = list(DataLoader(digits(), batch_size=64 // accumulate, shuffle=False))[:steps * accumulate]
    batches = [tuple(torch.cat(parts) for parts in zip(*micro[i:i + accumulate])) for i in range(0, len(micro), accumulate)]
    with opt:
        for batch in opt.prefetch(batches):
            opt.step(batch, accumulate=accumulate)
            sched.step()
        return net, opt.stats(), [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_a_plain_accelerate_prepare_trains_like_the_plain_loop_bit_for_bit(strategy, deterministic):
    """accelerator.prepare(model, AutoSAM, loader) as is: AcceleratedOptimizer.step(batch) is one
    AutoSAM step (no second update, none skipped), and lookahead survives its device moves."""
    accelerator = Accelerator(cpu=True)
    net = make_net(0)
    autosam = make_autosam(net, strategy)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(autosam, T_max=STEPS)
    model, opt, loader, sched = accelerator.prepare(net, autosam, DataLoader(digits(), batch_size=64), sched)
    for i, batch in enumerate(autosam.prefetch(loader)):
        opt.step(batch)
        sched.step()
        opt.zero_grad()
        if i + 1 == STEPS:
            break
    stats = autosam.stats()
    autosam.close()
    ref, ref_stats, lrs = plain_loop(strategy, STEPS)
    assert stats["steps"] == STEPS and [g["lr"] for g in autosam.param_groups] == lrs
    assert torch.equal(flat(net), flat(ref))
    if strategy == "async_sam":
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == STEPS


@pytest.mark.slow  # four loops with their references
@pytest.mark.parametrize("strategy, precision, k", [("sam", "bf16", 2), ("async_sam", "fp16", 2), ("async_sam", "no", 3),
                                                  ("rst", "bf16", 1)])
def test_mixed_precision_and_accumulation_through_prepare_equal_autosams_own(strategy, precision, k, deterministic):
    """mixed_precision is AutoSAM's amp= (accelerate's forward autocast is taken off, its GradScaler
    unused); gradient_accumulation_steps=k is one step(concat, accumulate=k): the same bits as the
    plain loop, and the prepared scheduler counts optimizer steps."""
    model, autosam, losses, accelerator = train(strategy, STEPS, precision, k, cpu=True)
    stats = autosam.stats()
    autosam.close()
    assert "_original_forward" not in model.__dict__  # no second autocast
    assert (autosam.scaler is not None) == (precision == "fp16")
    ref, ref_stats, lrs = plain_loop(strategy, STEPS, amp=None if precision == "no" else precision, accumulate=k)
    assert stats["steps"] == len(losses) == STEPS and [g["lr"] for g in autosam.param_groups] == lrs
    assert torch.equal(flat(model), flat(ref))
    if strategy == "async_sam":  # lookahead by whole optimizer steps
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == STEPS


@pytest.mark.parametrize("settings, needle", [({"mixed_precision": "bf16"}, "own autocast"),
                                             ({"gradient_accumulation_steps": 2}, "last micro-batch")])
def test_a_plain_prepare_that_would_train_wrongly_is_refused_at_the_first_step(settings, needle):
    accelerator = Accelerator(cpu=True, **settings)
    net = make_net(0)
    autosam = make_autosam(net, "sam")
    model, opt, loader = accelerator.prepare(net, autosam, DataLoader(digits(), batch_size=32))
    with pytest.raises(HetsamInputError, match=needle):
        for batch in loader:
            with accelerator.accumulate(model):
                opt.step(batch)
    assert autosam.stats()["steps"] == 0
    autosam.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 with a GradScaler on CUDA needs a GPU")
def test_fp16_on_cuda_is_autosams_own_scaler():
    """On CUDA: one GradScaler (AutoSAM's) across the step's passes; accelerate's stays unused."""
    model, autosam, losses, accelerator = train("async_sam", 6, "fp16", 2, cpu=False)
    stats = autosam.stats()
    autosam.close()
    assert next(model.parameters()).is_cuda and autosam.scaler is not None
    assert accelerator.scaler is not None and accelerator.scaler._scale is None  # created lazily: never used
    assert stats["steps"] == len(losses) == 6 and stats["lookahead_jobs"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_what_cannot_work_is_refused_in_one_line():
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    net = make_net(0)
    with pytest.raises(HetsamInputError, match="exactly one hetsam.AutoSAM"):
        prepare(accelerator, net)
    fp16 = AutoSAM(net, lambda m, b: m(b[0]).sum(), plan="sam", amp="fp16", log=lambda line: None, lr=0.1)
    with pytest.raises(HetsamInputError, match="drop one"):
        prepare(accelerator, net, fp16)
    fp16.close()
    autosam = make_autosam(net, "sam")
    _, opt = prepare(accelerator, net, autosam)
    with pytest.raises(HetsamInputError, match="without accelerator.backward"):
        opt.step()
    autosam.close()


def test_example_runs_and_prints_one_json_line(capsys):
    assert main(["--strategy", "async_sam", "--steps", "4", "--precision", "bf16", "--accumulate", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 4 and out["world_size"] == 1 and out["lookahead_jobs"] == 4 and out["loss"] > 0
