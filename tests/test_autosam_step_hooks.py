"""``AutoSAM.step`` as torch optimizers behave: it returns the loss as a detached tensor on the
descent device (no host value), and every step hook fires exactly once per step: AutoSAM's own,
the base optimizer's and torch's global ones (hetsam/optim/hooks.py keeps the base's step from
firing the global ones a second time). An RST step without SAM is still a step."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.optim.optimizer as torch_optimizer
from _alg_refs import SGD_KW, batches, loss_fn, mlp

from hetsam import AutoSAM, Plan

PLANS = {
    "sgd": "sgd",
    "sam": "sam",
    "async_sam": Plan("async_sam", options={"staleness": 1, "ascent_batch_size": 8}),
    "rst": Plan("rst", options={"sam_probability": 0.5}),
    "sampa": Plan("sampa", options={"sampa_lambda": 0.2}),
    "msam": Plan("msam", options={"rho": 0.3}),
}
STEPS = 3


@pytest.mark.parametrize("executor", ["inline", "threads"])
@pytest.mark.parametrize("name", list(PLANS))
def test_every_step_hook_fires_once_per_step(name, executor):
    counts = dict.fromkeys(["pre", "post", "base_pre", "base_post", "global_pre", "global_post"], 0)

    def count(key):
        def hook(*args):
            counts[key] += 1
        return hook

    data = batches(STEPS + 1)
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=PLANS[name], executor=executor, seed=0, log=lambda line: None,
                 **SGD_KW) as opt:
        handles = [opt.register_step_pre_hook(count("pre")), opt.register_step_post_hook(count("post")),
                   opt.base_optimizer.register_step_pre_hook(count("base_pre")),
                   opt.base_optimizer.register_step_post_hook(count("base_post")),
                   torch_optimizer.register_optimizer_step_pre_hook(count("global_pre")),
                   torch_optimizer.register_optimizer_step_post_hook(count("global_post"))]
        try:
            for t in range(STEPS):
                opt.step(data[t], upcoming=data[t + 1:])
            stats = opt.stats()
        finally:
            for h in handles:
                h.remove()
    assert counts == dict.fromkeys(counts, STEPS), counts
    assert stats["steps"] == STEPS and stats["skipped_updates"] == 0
    if name == "rst":  # seed 0 draws both kinds of steps in these three: a plain step is a step too
        assert 0 < stats["sam_steps"] < STEPS, stats


def test_step_returns_the_loss_as_a_detached_tensor_as_torch_optimizers_do():
    """SGD and SAM return L(θ_t; B_t): the same forward on a copy of the model before the step gives
    the same bits. A ``(loss, outputs)`` loss_fn returns the loss, not the pair."""
    data = batches(3)
    for plan in ("sgd", "sam"):
        model = mlp()
        with AutoSAM(model, lambda m, b: (loss_fn(m, b), m(b[0])), torch.optim.SGD, plan=plan, executor="inline",
                     log=lambda line: None, **SGD_KW) as opt:
            for b in data:
                with torch.no_grad():
                    expected = loss_fn(copy.deepcopy(model), b)
                loss = opt.step(b)
                assert isinstance(loss, torch.Tensor) and loss.shape == () and loss.grad_fn is None, plan
                assert not loss.requires_grad and loss.device == next(model.parameters()).device
                assert torch.equal(loss, expected), (plan, loss, expected)


@pytest.mark.parametrize("name", ["async_sam", "rst", "sampa", "msam"])
def test_every_strategy_returns_a_finite_tensor_loss(name):
    data = batches(4)
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=PLANS[name], executor="inline", seed=0, log=lambda line: None,
                 **SGD_KW) as opt, warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch.tensor(tensor) copy warning, no fallback
        losses = [opt.step(b, upcoming=data[i + 1:]) for i, b in enumerate(data)]
    assert all(isinstance(x, torch.Tensor) and x.shape == () and not x.requires_grad for x in losses)
    assert bool(torch.isfinite(torch.stack(losses)).all())


@pytest.mark.cuda
@pytest.mark.parametrize("name, ascent", [("async_sam", "cpu"), ("sampa", "cuda:0")])
def test_the_loss_is_on_the_descent_device_on_cuda(name, ascent):
    """SAMPa's g_y' loss comes back from the executor as a number; AsyncSAM's ascent runs on the CPU."""
    data = [(x.cuda(), y.cuda()) for x, y in batches(4)]
    plan = Plan(strategy=name, descent_device="cuda:0", ascent_device=ascent, options=PLANS[name].options)
    with AutoSAM(mlp().cuda(), loss_fn, plan=plan, executor="inline", log=lambda line: None, **SGD_KW) as opt:
        losses = [opt.step(b, upcoming=data[i + 1:]) for i, b in enumerate(data)]
    assert all(x.device == torch.device("cuda", 0) and x.shape == () and not x.requires_grad for x in losses)
