"""AutoSAM in the training code people have: parameter groups, gradual unfreezing, clipping,
closures and hooks, outputs for metrics, lookahead that survives real loops, and the official
ASAM. Each is checked against a hand-written loop of torch ops (README, "The update rules")."""

from __future__ import annotations

import warnings

import pytest
import torch
from _alg_refs import batches, flat, loss_fn, mlp, save_load

from hetsam import SAM, AutoSAM, HetsamInputError, Plan
from hetsam.optim import asam_groups

RHO = 0.05
EXECUTORS = ["inline", "threads"]


def split_groups(model, decay=0.01):
    """Transformer-style groups: weights decay, biases do not, and the last layer learns faster."""
    named = list(model.named_parameters())
    last = named[-1][0].rsplit(".", 1)[0]
    return [
        {"params": [p for n, p in named if n.endswith("weight") and not n.startswith(last)], "weight_decay": decay},
        {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0},
        {"params": [p for n, p in named if n.endswith("weight") and n.startswith(last)], "weight_decay": decay, "lr": 3e-3},
    ]


def _grads(model, params, batch):
    """g(θ; B) for ``params`` at the model's current values (no BatchNorm in these models)."""
    return [g.detach() for g in torch.autograd.grad(loss_fn(model, batch), params)]


def _perturbation(g, rho=RHO):
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in g]))
    return [x * (rho / (norm + 1e-12)) for x in g]


def _descend(model, opt, params, batch, e, clip=None):
    """θ ← base(θ, g(θ + e; B)), clipping g to ``clip`` first (as davda54 users do)."""
    old = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, x in zip(params, e or []):
            p.add_(x)
    opt.zero_grad()
    loss_fn(model, batch).backward()
    with torch.no_grad():
        for p, o in zip(params, old):
            p.copy_(o)
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def ref_loop(model, groups, data, *, strategy="sam", b_prime=8, clip=None, unfreeze=None):
    """SAM or AsyncSAM (τ = 1, lookahead) with AdamW on ``groups``; ``unfreeze=(t, params, lr)``
    adds a group before step t."""
    opt = torch.optim.AdamW(groups, lr=1e-3)
    pending = None
    for t, batch in enumerate(data):
        if unfreeze is not None and t == unfreeze[0]:
            for p in unfreeze[1]:
                p.requires_grad_(True)
            opt.add_param_group({"params": unfreeze[1], "lr": unfreeze[2]})
        params = [p for g in opt.param_groups for p in g["params"]]
        if strategy == "sam":
            e = _perturbation(_grads(model, params, batch))
        else:  # ĝ_t = g(θ_{t−1}; B'_t) was taken during step t − 1, on the parameters of then
            e = None if pending is None else _perturbation(pending)
            if t + 1 < len(data):
                x, y = data[t + 1]
                pending = _grads(model, params, (x[:b_prime], y[:b_prime]))
        _descend(model, opt, params, batch, e, clip)
    return model


def plan_for(strategy):
    return Plan(strategy, options={"ascent_batch_size": 8}) if strategy == "async_sam" else Plan(strategy)


def run(model, params, data, strategy, executor, *, clip=None, unfreeze=None, **kw):
    opt = AutoSAM(model, loss_fn, torch.optim.AdamW, rho=RHO, plan=plan_for(strategy), executor=executor,
                  params=params, max_grad_norm=clip, lr=1e-3, **kw)
    with opt:
        for t, batch in enumerate(opt.prefetch(data)):
            if unfreeze is not None and t == unfreeze[0]:
                for p in unfreeze[1]:
                    p.requires_grad_(True)
                opt.add_param_group({"params": unfreeze[1], "lr": unfreeze[2]})
            opt.step(batch)
        stats = opt.stats()
    return stats


# ---- parameter groups ------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_decay_groups_and_per_group_lr_equal_a_hand_written_loop(strategy, executor):
    data = batches(20)
    ours, ref = mlp(), mlp()
    run(ours, split_groups(ours), data, strategy, executor)
    ref_loop(ref, split_groups(ref), data, strategy=strategy)
    assert (flat(ours) - flat(ref)).abs().max() <= 1e-6 * flat(ref).abs().max()


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_add_param_group_unfreezes_mid_run(strategy, executor):
    data = batches(20)
    ours, ref = mlp(), mlp()
    for m in (ours, ref):
        for p in list(m.parameters())[:2]:
            p.requires_grad_(False)
    first = lambda m: list(m.parameters())[:2]  # noqa: E731
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    before = flat(ours)[:first(ours)[0].numel()].clone()
    stats = run(ours, trainable(ours), data, strategy, executor, unfreeze=(10, first(ours), 2e-3))
    ref_loop(ref, [{"params": trainable(ref)}], data, strategy=strategy, unfreeze=(10, first(ref), 2e-3))
    assert not torch.equal(flat(ours)[:before.numel()], before)  # the unfrozen layer trained
    assert (flat(ours) - flat(ref)).abs().max() <= 1e-6 * flat(ref).abs().max()
    assert stats["steps"] == 20


def test_params_must_belong_to_the_model_and_be_listed_once():
    model, other = mlp(), mlp()
    with pytest.raises(HetsamInputError, match="not a parameter of the model"):
        AutoSAM(model, loss_fn, params=list(other.parameters()), plan="sam", lr=0.1)
    with pytest.raises(HetsamInputError, match="optimized already"):
        AutoSAM(model, loss_fn, params=[{"params": list(model.parameters())}, {"params": [next(model.parameters())]}],
                plan="sam", lr=0.1)
    with AutoSAM(model, loss_fn, params=list(model.parameters())[:2], plan="sam", lr=0.1) as opt:
        with pytest.raises(HetsamInputError, match="optimized already"):
            opt.add_param_group({"params": [next(model.parameters())]})


def test_unfreezing_without_add_param_group_warns_once():
    model = mlp()
    first = list(model.parameters())[:2]
    for p in first:
        p.requires_grad_(False)
    with AutoSAM(model, loss_fn, plan="sam", executor="inline", lr=0.1) as opt:
        opt.step(batches(1)[0])
        for p in first:
            p.requires_grad_(True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in batches(3):
                opt.step(batch)
    assert sum("add_param_group" in str(w.message) for w in caught) == 1


def test_schedulers_act_on_every_group():
    model = mlp()
    with AutoSAM(model, loss_fn, torch.optim.SGD, plan="sam", params=split_groups(model), lr=0.1) as opt:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        opt.step(batches(1)[0])
        sched.step()
        assert [g["lr"] for g in opt.base_optimizer.param_groups] == [0.05, 0.05, 1.5e-3]


# ---- clipping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_max_grad_norm_clips_the_applied_gradient_as_davda54_users_do(strategy, executor):
    data = batches(15)
    ours, ref = mlp(), mlp()
    stats = run(ours, None, data, strategy, executor, clip=0.05)
    ref_loop(ref, [{"params": list(ref.parameters())}], data, strategy=strategy, clip=0.05)
    assert (flat(ours) - flat(ref)).abs().max() <= 1e-6 * flat(ref).abs().max()
    assert stats["grad_norm"] > 0.05  # the norm before clipping: clipping did something


@pytest.mark.parametrize("strategy", ["sampa", "rst"])
def test_max_grad_norm_bounds_the_applied_gradient_of_every_strategy(strategy):
    seen = []
    model = mlp()
    with AutoSAM(model, loss_fn, plan=strategy, executor="inline", max_grad_norm=0.01, seed=1, lr=0.1) as opt:
        opt.register_step_pre_hook(lambda o, a, k: seen.append(
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))))
        for batch in batches(6):
            opt.step(batch)
    assert len(seen) == 6 and max(float(n) for n in seen) <= 0.01 * (1 + 1e-5)


# ---- the step contract ---------------------------------------------------------------------------
def test_closure_runs_once_right_before_the_update_with_the_update_gradient():
    model, calls = mlp(), []
    data = batches(3)
    with AutoSAM(model, loss_fn, plan="sam", executor="inline", lr=0.1) as opt:
        def closure():
            params = list(model.parameters())
            calls.append([p.grad.clone() for p in params])
            return "closure result"

        before = flat(model).clone()
        opt.step(data[0], closure=closure)
    assert len(calls) == 1
    # the update gradient is g(θ + e; B): the step moved θ by −lr · that gradient (plain SGD here)
    moved = before - flat(model)
    assert torch.allclose(moved, 0.1 * torch.cat([g.reshape(-1) for g in calls[0]]), atol=1e-7)


def test_step_without_a_batch_is_a_clear_error():
    with AutoSAM(mlp(), loss_fn, plan="sam", lr=0.1) as opt:
        with pytest.raises(HetsamInputError, match="needs the step's batch"):
            opt.step()
        with pytest.raises(HetsamInputError, match="needs the step's batch"):
            opt.step(closure=lambda: None)


def test_state_dict_before_plan_auto_has_chosen():
    opt = AutoSAM(mlp(), loss_fn, lr=0.1)
    state = save_load(opt.state_dict())
    assert state["hetsam"]["plan"] is None
    AutoSAM(mlp(), loss_fn, lr=0.1).load_state_dict(state)


def test_loss_fn_may_return_outputs_for_metrics():
    def with_logits(model, batch):
        x, y = batch
        logits = model(x)
        return torch.nn.functional.cross_entropy(logits, y), logits.detach()

    data = batches(2)
    with AutoSAM(mlp(), with_logits, plan="sam", executor="inline", lr=0.1) as opt:
        loss = opt.step(data[0])
        assert opt.last_outputs.shape == (16, 3) and loss > 0


def test_hooks_registered_on_autosam_run_around_the_base_update():
    model, order = mlp(), []
    with AutoSAM(model, loss_fn, plan="sam", executor="inline", lr=0.1) as opt:
        opt.register_step_pre_hook(lambda o, a, k: order.append(("pre", o is opt, next(model.parameters()).grad is not None)))
        opt.register_step_post_hook(lambda o, a, k: order.append(("post", o is opt, True)))
        opt.step(batches(1)[0])
    assert order == [("pre", True, True), ("post", True, True)]


# ---- lookahead in real loops ------------------------------------------------------------------------
def _async(model, executor="inline"):
    return AutoSAM(model, loss_fn, plan=Plan("async_sam", options={"ascent_batch_size": 8}), executor=executor, lr=0.1)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lookahead_survives_unpacking_and_moving_the_batch(executor):
    data = batches(12)
    a, b = mlp(), mlp()
    with _async(a, executor) as opt:
        for batch in opt.prefetch(data):
            opt.step(batch)
        plain = opt.stats()
    with _async(b, executor) as opt:
        for x, y in opt.prefetch(data):
            opt.step((x.to("cpu"), y.clone()))  # a new object every step
        moved = opt.stats()
    assert moved["independent_jobs"] == 0 and moved["lookahead_jobs"] == plain["lookahead_jobs"] == 11
    assert moved["fresh_jobs"] == 0  # no step after the last one, so nothing was deferred to run
    assert torch.equal(flat(a), flat(b))


def test_a_framework_may_fetch_ahead_of_the_step():
    """Lightning fetches one batch before it steps: the queue keeps them aligned."""
    data = batches(10)
    a, b = mlp(), mlp()
    with _async(a) as opt:
        for batch in opt.prefetch(data):
            opt.step(batch)
    with _async(b) as opt:
        it = iter(opt.lookahead(data))
        held = next(it)
        for nxt in it:
            opt.step(held)
            held = nxt
        opt.step(held)
        assert opt.stats()["independent_jobs"] == 0
    assert torch.equal(flat(a), flat(b))


def test_a_batch_that_does_not_match_the_loader_is_refused():
    data = batches(4)
    with _async(mlp()) as opt:
        with pytest.raises(HetsamInputError, match="got a batch of 8 samples"):
            for x, y in opt.prefetch(data):
                opt.step((x[:8], y[:8]))


def test_lookahead_loader_passes_the_loader_through():
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 10), torch.randint(0, 3, (40,))),
                                         batch_size=8)
    with _async(mlp()) as opt:
        wrapped = opt.lookahead(loader)
        assert len(wrapped) == 5 and wrapped.sampler is loader.sampler and wrapped.batch_size == 8
        for _ in range(2):  # an epoch each
            for batch in wrapped:
                opt.step(batch)
        stats = opt.stats()
        # the first step of the second epoch takes its ĝ fresh, on its own batch (not known a step earlier)
        assert stats["independent_jobs"] == 0 and stats["fresh_jobs"] == 1 and stats["steps"] == 10


def test_without_a_wrapper_lookahead_falls_back_loudly_once():
    with _async(mlp()) as opt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in batches(4):
                opt.step(batch)
        assert sum("falls back" in str(w.message) for w in caught) == 1 and opt.stats()["policy"] == "independent"


# ---- ASAM as its authors wrote it ---------------------------------------------------------------------
def ref_official_asam(model, data, rho=0.5, eta=0.01, lr=0.1):
    """Kwon et al.'s ASAM as its authors' code does it: T = |w| + η on parameters named *weight*,
    T = I on the others, e = ρ T² g / ‖T g‖, descent at w + e."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for batch in data:
        named = list(model.named_parameters())
        g = torch.autograd.grad(loss_fn(model, batch), [p for _, p in named])
        t = [(p.detach().abs() + eta) if "weight" in n else torch.ones_like(p) for n, p in named]
        tg = [gi * ti for gi, ti in zip(g, t)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in tg])) + 1e-12
        e = [x * ti * (rho / norm) for x, ti in zip(tg, t)]
        _descend(model, opt, [p for _, p in named], batch, e)
    return model


@pytest.mark.parametrize("use", ["SAM", "AutoSAM"])
def test_official_asam_matches_an_independent_transcription(use):
    data = batches(20)
    ours, ref = mlp(), mlp()
    groups = asam_groups(ours, eta=0.01)
    if use == "SAM":
        opt = SAM(groups, torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
        for batch in data:
            loss_fn(ours, batch).backward()
            opt.first_step(zero_grad=True)
            loss_fn(ours, batch).backward()
            opt.second_step(zero_grad=True)
    else:
        with AutoSAM(ours, loss_fn, torch.optim.SGD, rho=0.5, plan="sam", executor="inline", params=groups, lr=0.1,
                     momentum=0.9) as opt:
            for batch in data:
                opt.step(batch)
    ref_official_asam(ref, data)
    assert (flat(ours) - flat(ref)).abs().max() <= 1e-6 * flat(ref).abs().max()
    davda = mlp()
    with AutoSAM(davda, loss_fn, torch.optim.SGD, rho=0.5, plan="sam", executor="inline", adaptive=True, lr=0.1,
                 momentum=0.9) as opt:
        for batch in data:
            opt.step(batch)
    assert (flat(davda) - flat(ref)).abs().max() > 1e-4  # the default (element-wise, η = 0) is another rule
