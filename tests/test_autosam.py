"""AutoSAM end to end on CPU: every strategy trains, checkpoints resume, AMP, BatchNorm, errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from _alg_refs import SGD_KW, assert_rel_close, batches, flat, loss_fn, mlp, save_load
from sklearn.datasets import load_digits
from torch import nn

from hetsam import AutoSAM, HetsamInputError, Plan

PLANS = {
    "sgd": "sgd",
    "sam": "sam",
    "rst": "rst",
    "async_sam_lookahead": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 16}),
    "async_sam_independent": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 16, "ascent_batches": "independent"}),
    "sampa": Plan(strategy="sampa"),
}


def digits(batch=64):
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x) - batch + 1, batch)], (x, y)


def digits_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))


def full_loss(model, data):
    model.eval()
    with torch.no_grad():
        out = F.cross_entropy(model(data[0]), data[1]).item()
    model.train()
    return out


@pytest.mark.parametrize("name", list(PLANS))
def test_loss_falls_on_digits_for_every_strategy(name):
    loader, everything = digits()
    model = digits_model()
    before = full_loss(model, everything)
    with AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan=PLANS[name], executor="inline", seed=0,
                 lr=0.1, momentum=0.9, weight_decay=5e-4) as opt:
        for _ in range(2):
            for batch in opt.prefetch(loader):
                loss = opt.step(batch)
                # as torch optimizers return the closure's loss: a detached 0-d tensor on the descent device
                assert isinstance(loss, torch.Tensor) and loss.shape == () and not loss.requires_grad
                assert loss.device == next(model.parameters()).device
        stats = opt.stats()
    after = full_loss(model, everything)
    assert after < 0.3 * before, (before, after)
    assert model[1].num_batches_tracked.item() == 2 * len(loader)  # one pass per step updates BN
    assert stats["steps"] == 2 * len(loader)


@pytest.mark.parametrize("name", ["sam", "async_sam_lookahead", "sampa"])
def test_bf16_autocast_on_cpu_trains(name):
    loader, everything = digits()
    model = digits_model()
    before = full_loss(model, everything)
    with AutoSAM(model, loss_fn, torch.optim.SGD, plan=PLANS[name], executor="inline", amp=True, lr=0.1, momentum=0.9) as opt:
        assert opt.scaler is None  # bf16 needs no loss scaling
        for batch in opt.prefetch(loader * 2):
            opt.step(batch)
    assert full_loss(model, everything) < 0.3 * before


@pytest.mark.parametrize("plan, extra", [
    ("sam", {}),
    ("rst", {"options": {"grst_alpha": 0.5, "sam_probability": 1.0}}),
    (Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 8}), {}),
    (Plan(strategy="sampa", options={"sampa_lambda": 0.5}), {}),
])
def test_grad_scaler_path_matches_unscaled_fp16(plan, extra):
    """fp16 autocast with a GradScaler (S = 2^k) gives the same steps as without one: ascent
    gradients are unscaled before the norm, and unscaled gradients mixed into p.grad are scaled."""
    data = batches(12)
    runs = []
    for scaler in (None, False):
        model = mlp()
        with AutoSAM(model, loss_fn, torch.optim.SGD, plan=plan, executor="inline", amp="fp16", scaler=scaler,
                     seed=0, **extra, **SGD_KW) as opt:
            assert (opt.scaler is not None) == (scaler is None)
            if opt.scaler is not None:
                assert opt.scaler.get_scale() > 1
            for t, b in enumerate(data):
                opt.step(b, upcoming=data[t + 1:t + 2])
        runs.append(flat(model))
    assert_rel_close(runs[0], runs[1], 1e-5)


@pytest.mark.parametrize("name", ["sgd", "sam", "rst", "msam"])
def test_state_dict_round_trip_mid_run(name):
    data = batches(14)
    kw = dict(rho=0.05, plan=name, executor="inline", seed=1, **SGD_KW)
    full = mlp(bn=True)
    with AutoSAM(full, loss_fn, torch.optim.SGD, **kw) as opt:
        for b in data:
            opt.step(b)
    first = mlp(bn=True)
    with AutoSAM(first, loss_fn, torch.optim.SGD, **kw) as opt:
        for b in data[:6]:
            opt.step(b)
        state = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
        resumed = mlp(seed=2, bn=True)
    resumed.load_state_dict(state["model"])
    with AutoSAM(resumed, loss_fn, torch.optim.SGD, **{**kw, "seed": 99}) as opt:
        opt.load_state_dict(state["opt"])
        for b in data[6:]:
            opt.step(b)
    assert torch.equal(flat(resumed), flat(full))


def test_lr_scheduler_attaches_to_autosam():
    model = mlp()
    with AutoSAM(model, loss_fn, torch.optim.SGD, plan=PLANS["async_sam_lookahead"], executor="inline", lr=0.1) as opt:
        assert opt.param_groups is opt.base_optimizer.param_groups
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
            for b in opt.prefetch(batches(4)):
                opt.step(b)
                sched.step()
        assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_sam_gradient_accumulation_gives_the_same_update():
    data = batches(8, dtype=torch.float64)
    runs = []
    for k in (1, 4):
        model = mlp(dtype=torch.float64)
        with AutoSAM(model, loss_fn, torch.optim.SGD, plan="sam", executor="inline", **SGD_KW) as opt:
            for b in data:
                opt.step(b, accumulate=k)
        runs.append(flat(model))
    assert_rel_close(runs[1], runs[0], 1e-10)


def test_plan_auto_rejects_bad_options():
    with pytest.raises(HetsamInputError, match="colour"):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, planner_options={"colour": 1}, lr=0.1)
    with pytest.raises(HetsamInputError, match="applies to plan=.auto."):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan="sam", planner_options={"budget": 1.1}, lr=0.1)


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(HetsamInputError, match="executor='gpu-magic' is unknown"):
        AutoSAM(mlp(), loss_fn, plan="sampa", executor="gpu-magic", lr=0.1)


def test_ascent_pools_set_thread_counts():
    plan = Plan(strategy="async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", options={"ascent_batch_size": 8})
    with AutoSAM(mlp(), loss_fn, plan=plan, executor="inline", lr=0.1) as opt:
        assert opt.executor.replica.threads == 1 and opt._parts.descent_threads == 1
        for b in opt.prefetch(batches(3)):
            opt.step(b)
        assert opt.stats()["executor"]["jobs"] >= 2


def test_nonfinite_ascent_gradient_skips_the_perturbation_once_warned():
    """The ascent passes (on the replica) see a NaN loss; the descent does not. No NaN reaches θ."""
    model = mlp()

    def poisoned(m, batch):
        loss = loss_fn(m, batch)
        return loss * float("nan") if m is not model else loss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with AutoSAM(model, poisoned, plan=Plan(strategy="async_sam", options={"staleness": 0}), executor="inline", lr=0.1) as opt:
            for b in batches(5):
                opt.step(b)
            assert opt.stats()["skipped_perturbations"] == 5
    assert torch.isfinite(flat(model)).all()
    assert sum("skips the perturbation" in str(w.message) for w in caught) == 1


def test_zero_ascent_gradient_skips_the_perturbation():
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with AutoSAM(model, lambda m, b: (m(b[0]) * 0.0).sum(), plan="sam", executor="inline", lr=0.1) as opt:
            for b in batches(3):
                opt.step(b)
            assert opt.stats()["skipped_perturbations"] == 3
    assert torch.equal(flat(model), flat(mlp()))


def test_close_and_context_manager():
    opt = AutoSAM(mlp(), loss_fn, plan="sampa", executor="inline", lr=0.1)
    with opt as same:
        assert same is opt
        same.step(batches(1)[0])
    assert opt.executor.closed
    opt.close()  # idempotent
    with pytest.raises(RuntimeError, match="close"):
        opt.step(batches(1)[0])


@pytest.mark.parametrize("kwargs, name", [
    (dict(rho=-0.5), "rho="),
    (dict(plan="adam"), "plan="),
    (dict(executor="gpu"), "executor="),
    (dict(amp="int8"), "amp="),
    (dict(plan="rst", options={"grst_alpha": 1.5}), "grst_alpha'.=1.5"),
    (dict(plan="rst", options={"sam_probability": 1.2}), "sam_probability'.=1.2"),
    (dict(plan="async_sam", ascent_threads=0), "thread count"),
    (dict(plan=Plan(strategy="sam", descent_device="cuda:0")), "descent_device"),
])
def test_bad_settings_raise_value_error_naming_the_value(kwargs, name):
    kwargs = {"plan": "sam", "executor": "inline", **kwargs}
    with pytest.raises(ValueError, match=name):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, lr=0.1, **kwargs)


def test_bad_accumulate_and_loss_raise():
    with AutoSAM(mlp(), loss_fn, plan="sam", executor="inline", lr=0.1) as opt:
        with pytest.raises(ValueError, match="accumulate=0"):
            opt.step(batches(1)[0], accumulate=0)
    with AutoSAM(mlp(), lambda m, b: m(b[0]), plan="sgd", executor="inline", lr=0.1) as opt:
        with pytest.raises(ValueError, match="scalar tensor"):
            opt.step(batches(1)[0])


def test_checkpoint_of_another_strategy_is_refused():
    with AutoSAM(mlp(), loss_fn, plan="sam", executor="inline", lr=0.1) as a:
        state = a.state_dict()
    with AutoSAM(mlp(), loss_fn, plan="sgd", executor="inline", lr=0.1) as b:
        with pytest.raises(ValueError, match="strategy 'sam'"):
            b.load_state_dict(state)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["sam", "async_sam_lookahead", "sampa"])
def test_cuda_fp16_with_grad_scaler_trains(name):
    loader, everything = digits()
    loader = [(x.cuda(), y.cuda()) for x, y in loader]
    model = digits_model().cuda()
    before = full_loss(model, tuple(t.cuda() for t in everything))
    with AutoSAM(model, loss_fn, torch.optim.SGD, plan=PLANS[name], executor="inline", amp=True, lr=0.1, momentum=0.9) as opt:
        assert isinstance(opt.scaler, torch.amp.GradScaler)
        for batch in opt.prefetch(loader * 2):
            opt.step(batch)
    assert full_loss(model, tuple(t.cuda() for t in everything)) < 0.3 * before


@pytest.mark.cuda
def test_cuda_descent_with_cpu_ascent_matches_all_cuda():
    data = [(x.cuda(), y.cuda()) for x, y in batches(10)]
    runs = []
    for ascent in ("cuda:0", "cpu"):
        model = mlp().cuda()
        plan = Plan(strategy="async_sam", descent_device="cuda:0", ascent_device=ascent, options={"staleness": 1, "ascent_batch_size": 8})
        with AutoSAM(model, loss_fn, plan=plan, executor="inline", **SGD_KW) as opt:
            assert opt.executor.replica.device.type == ascent[:4]
            for b in opt.prefetch(data):
                opt.step(b)
        runs.append(flat(model).cpu())
    assert_rel_close(runs[1], runs[0], 1e-4)


# ---- torch's global step hooks fire once per step -------------------------------------------------------
@pytest.mark.parametrize("strategy", ["sgd", "sam", "rst", "async_sam"])
def test_global_step_hooks_fire_once_per_step(strategy):
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    seen = []
    handles = [register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", type(opt).__name__))),
               register_optimizer_step_post_hook(lambda opt, args, kwargs: seen.append(("post", type(opt).__name__)))]
    own, base = [], []
    try:
        with AutoSAM(mlp(), loss_fn, plan=strategy, executor="inline", lr=0.1, log=lambda line: None) as opt:
            opt.register_step_pre_hook(lambda o, a, k: own.append(o))
            opt.base_optimizer.register_step_post_hook(lambda o, a, k: base.append(o))
            for batch in opt.prefetch(batches(3)):
                opt.step(batch)
    finally:
        for h in handles:
            h.remove()
    assert seen == [("pre", "AutoSAM"), ("post", "AutoSAM")] * 3
    assert len(own) == len(base) == 3 and all(o is opt for o in own)


def test_global_step_hooks_fire_once_per_sam_and_rst_step():
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from hetsam import RST, SAM

    for make in (lambda ps: SAM(ps, torch.optim.SGD, lr=0.1), lambda ps: RST(ps, torch.optim.SGD, p=0.5, seed=0, lr=0.1)):
        model = mlp()
        opt, seen = make(model.parameters()), []
        handle = register_optimizer_step_pre_hook(lambda o, a, k: seen.append(type(o).__name__))
        try:
            for batch in batches(4):
                opt.step(lambda batch=batch: loss_fn(model, batch).backward() or loss_fn(model, batch))
        finally:
            handle.remove()
        assert seen == [type(opt).__name__] * 4
    # davda54's two-step form steps only the base optimizer: its hooks fire there, once
    model, seen = mlp(), []
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    handle = register_optimizer_step_pre_hook(lambda o, a, k: seen.append(type(o).__name__))
    try:
        loss_fn(model, batches(1)[0]).backward()
        opt.first_step(zero_grad=True)
        loss_fn(model, batches(1)[0]).backward()
        opt.second_step(zero_grad=True)
    finally:
        handle.remove()
    assert seen == ["SGD"]
