"""A non-finite step applies nothing, under every strategy: a loss that turns NaN once leaves the
parameters and the base optimizer's state as they were, says so on that step (a warning naming
it), and counts it in ``stats()["skipped_updates"]``; ``nonfinite="raise"`` raises
``hetsam.NonFiniteUpdate`` instead, with nothing applied. SAMPa's g_y' (an executor's gradient
that enters its update) is held to the same rule. Non-finite hyperparameters never get in: they
are refused at construction and in ``add_param_group``; a learning rate a scheduler makes NaN
skips the update."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from _alg_refs import batches, flat, loss_fn, mlp

from hetsam import AutoSAM, HetsamInputError, NonFiniteUpdate, Plan

PLANS = {
    "sgd": "sgd",
    "sam": "sam",
    "rst": Plan("rst", options={"sam_probability": 0.5}),
    "msam": Plan("msam", options={"rho": 0.3}),
    "interval": Plan("interval", options={"k": 2}),
    "late_phase": "late_phase",
    "async_sam": Plan("async_sam", options={"staleness": 1, "ascent_batch_size": 8}),
    "sampa": Plan("sampa", options={"sampa_lambda": 0.5}),
    "sampa-0": Plan("sampa", options={"sampa_lambda": 0.0}),
}
BAD = 3  # the batch whose loss is NaN: step 4 (1-based, as the guard counts) trains on it


def nan_on(bad_x: torch.Tensor, how: str = "loss"):
    """loss_fn that is NaN on the batch ``bad_x`` (``how="grad"``: a finite loss, a NaN gradient)."""
    def fn(model, batch):
        loss = loss_fn(model, batch)
        if batch[0].data_ptr() != bad_x.data_ptr() or batch[0].shape != bad_x.shape:
            return loss
        if how == "loss":
            return loss * float("nan")
        return loss + (next(model.parameters()) * 0.0).abs().sqrt().sum()  # d√|0·w| = NaN
    return fn


def run(plan, how="loss", steps=7, **kw):
    """Train ``steps`` steps with a NaN on batch ``BAD``; per step: (parameters before, after, the
    warnings it raised, momentum after)."""
    model, data = mlp(), batches(steps + 2)
    fn = nan_on(data[BAD][0], how)
    out = []
    with AutoSAM(model, fn, torch.optim.SGD, plan=plan, executor="inline", lr=0.1, momentum=0.9, total_steps=steps,
                 seed=0, log=lambda line: None, **kw) as opt:
        for i in range(steps):
            before = flat(model).clone()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                opt.step(data[i], upcoming=data[i + 1:])
            momentum = torch.cat([opt.base_optimizer.state[p]["momentum_buffer"].reshape(-1)
                                  for p in model.parameters() if p in opt.base_optimizer.state] or [torch.zeros(0)])
            out.append((before, flat(model).clone(), [str(w.message) for w in caught], momentum))
        stats = opt.stats()
    return out, stats


@pytest.mark.parametrize("how", ["loss", "grad"])
@pytest.mark.parametrize("name", sorted(PLANS))
def test_a_loss_that_turns_nan_once_applies_nothing_and_says_so_on_that_step(name, how):
    """Unguarded, so the step's own effect shows: the parameters and the momentum after step 4 are
    those before it, a warning names step 4, and every later step is finite. SAMPa trains on B_3
    twice (g_y' at step 4, g_x at step 5): both steps apply nothing."""
    steps, stats = run(PLANS[name], how, guard=False)
    skipped = [4, 5] if name.startswith("sampa") else [4]
    for step, (before, after, caught, momentum) in enumerate(steps, start=1):
        assert torch.isfinite(after).all() and torch.isfinite(momentum).all(), step
        named = [w for w in caught if "update was skipped" in w]
        if step in skipped:
            assert torch.equal(after, before) and len(named) == 1 and named[0].startswith(f"AutoSAM: step {step}:")
            assert step == 1 or torch.equal(momentum, steps[step - 2][3])
        else:
            assert not named and not torch.equal(after, before), step
    assert stats["skipped_updates"] == len(skipped)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_under_the_guard_a_nan_loss_leaves_every_strategy_finite(name):
    """The default configuration: the guarded strategies switch to SAM at that step (and revert to
    their last good state); the others skip it. Either way the warning names step 4."""
    steps, stats = run(PLANS[name])
    assert all(torch.isfinite(after).all() for _, after, _, _ in steps)
    assert any(w.startswith("AutoSAM: step 4:") for w in steps[BAD][2])
    events = stats["guard"]["events"]
    if name in ("rst", "msam", "interval", "late_phase", "async_sam"):
        assert [e["step"] for e in events] == [4] and stats["plan"].startswith("sam ")
    else:
        assert events == []


@pytest.mark.filterwarnings("ignore:AutoSAM. the ascent gradient")
@pytest.mark.parametrize("name", sorted(PLANS))
def test_nonfinite_raise_raises_with_nothing_applied(name):
    data = batches(9)
    model = mlp()
    with AutoSAM(model, nan_on(data[BAD][0]), torch.optim.SGD, plan=PLANS[name], executor="inline", lr=0.1,
                 momentum=0.9, total_steps=7, seed=0, nonfinite="raise", log=lambda line: None) as opt:
        for i in range(BAD):
            opt.step(data[i], upcoming=data[i + 1:])
        before, state = flat(model).clone(), copy.deepcopy(opt.base_optimizer.state_dict())
        with pytest.raises(NonFiniteUpdate, match=r"^AutoSAM: step 4: .* not finite") as err:
            opt.step(data[BAD], upcoming=data[BAD + 1:])
        assert err.value.step == 4 and "\n" not in str(err.value)
        assert torch.equal(flat(model), before)
        after = opt.base_optimizer.state_dict()["state"]
        assert all(torch.equal(after[k]["momentum_buffer"], v["momentum_buffer"]) for k, v in state["state"].items())
        assert opt.stats()["skipped_updates"] == 1 and opt.stats()["guard"]["events"] == []  # raised before the guard
        if not name.startswith("sampa"):  # SAMPa's next step takes g_x on B_3 again
            opt.step(data[BAD + 1], upcoming=data[BAD + 2:])  # training goes on after a caught NonFiniteUpdate
            assert torch.isfinite(flat(model)).all()


def replica_poisoned(at: int, how: str):
    """loss_fn whose ``at``-th call on a replica (SAMPa's g_y' job; the training model is ``model``) is
    NaN (``how="loss"``) or has a finite loss with a NaN gradient."""
    calls = [0]
    model = mlp()

    def fn(m, batch):
        loss = loss_fn(m, batch)
        if m is model:
            return loss
        calls[0] += 1
        if calls[0] != at:
            return loss
        return loss * float("nan") if how == "loss" else loss + (next(m.parameters()) * 0.0).abs().sqrt().sum()

    return model, fn


@pytest.mark.parametrize("how", ["loss", "grad"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_a_nonfinite_g_y_never_reaches_the_parameters(lam, how):
    """SAMPa's g_y' is computed by the executor and mixed into the update: when it (or its loss) is
    not finite, that step applies nothing, is counted, and the next step is not perturbed."""
    model, fn = replica_poisoned(3, how)
    data = batches(6)
    with AutoSAM(model, fn, torch.optim.SGD, plan=Plan("sampa", options={"sampa_lambda": lam}), executor="inline", lr=0.1,
                 momentum=0.9, log=lambda line: None) as opt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i, b in enumerate(data):
                before = flat(model).clone()
                opt.step(b)
                assert torch.isfinite(flat(model)).all()
                if i == 2:
                    assert torch.equal(flat(model), before)
        stats = opt.stats()
    assert stats["skipped_updates"] == 1 and stats["dropped_g_y"] == 1
    assert [str(w.message).split(":")[1] for w in caught if "update was skipped" in str(w.message)] == [" step 3"]
    assert "g_y'" in next(str(w.message) for w in caught if "update was skipped" in str(w.message))


def test_a_learning_rate_a_scheduler_makes_nan_skips_the_update():
    model, data = mlp(), batches(4)
    with AutoSAM(model, loss_fn, torch.optim.SGD, plan="sam", executor="inline", lr=0.1, momentum=0.9,
                 log=lambda line: None) as opt:
        opt.step(data[0])
        opt.param_groups[0]["lr"] = float("nan")  # as a broken schedule would
        before = flat(model).clone()
        with pytest.warns(RuntimeWarning, match=r"step 2: the learning rate of param group 0 \(nan\)"):
            opt.step(data[1])
        assert torch.equal(flat(model), before) and opt.stats()["skipped_updates"] == 1


def test_repeated_skips_are_warned_at_powers_of_two():
    model, data = mlp(), batches(9)
    fn = lambda m, b: loss_fn(m, b) * float("nan")  # noqa: E731 - every step
    with AutoSAM(model, fn, torch.optim.SGD, plan="sgd", executor="inline", lr=0.1, log=lambda line: None) as opt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for b in data:
                opt.step(b)
    steps = [str(w.message).split(":")[1].strip() for w in caught if "update was skipped" in str(w.message)]
    assert steps == ["step 1", "step 2", "step 4", "step 8"] and opt.stats()["skipped_updates"] == 9


# ---- non-finite hyperparameters and empty groups are refused up front --------------------------
def _groups(model, **second):
    return [{"params": [model[0].weight, model[0].bias]}, {"params": [model[2].weight, model[2].bias], **second}]


@pytest.mark.parametrize("base, kw, group, match", [
    (torch.optim.SGD, {"lr": float("nan")}, None, r"^lr=nan must be a finite number"),
    (torch.optim.SGD, {"lr": 0.1}, {"lr": float("nan")}, r"^param group 1: lr=nan"),
    (torch.optim.SGD, {"lr": 0.1, "momentum": float("inf")}, None, r"^momentum=inf"),
    (torch.optim.SGD, {"lr": 0.1}, {"momentum": float("-inf")}, r"^param group 1: momentum=-inf"),
    (torch.optim.SGD, {"lr": 0.1, "weight_decay": float("nan")}, None, r"^weight_decay=nan"),
    (torch.optim.SGD, {"lr": 0.1}, {"weight_decay": -1e-4}, r"^param group 1: weight_decay=-0.0001 .* in \[0, 1e\+06\]"),
    (torch.optim.SGD, {"lr": 1e38}, None, r"^lr=1e\+38 must be a finite number in \[0, 1e\+06\]"),  # overflows float32
    (torch.optim.Adam, {"lr": 0.1, "betas": (0.9, float("nan"))}, None, r"^betas=\(0.9, nan\)"),
    (torch.optim.Adam, {"lr": 0.1}, {"betas": (float("inf"), 0.999)}, r"^param group 1: betas="),
    (torch.optim.Adam, {"lr": 0.1}, {"betas": (1.0, 0.999)}, r"^param group 1: betas=\(1.0, 0.999\) .* \[0, 1\)"),
    (torch.optim.Adam, {"lr": 0.1, "eps": float("inf")}, None, r"^eps=inf"),
    (torch.optim.Adam, {"lr": 0.1}, {"eps": float("nan")}, r"^param group 1: eps=nan"),
    (torch.optim.SGD, {"lr": 0.1, "rho": float("nan")}, None, r"^rho=nan"),
    (torch.optim.SGD, {"lr": 0.1}, {"rho": float("inf")}, r"^param group 1: rho=inf"),
    (torch.optim.SGD, {"lr": torch.tensor(float("nan"))}, None, r"^lr=tensor\(nan\)"),
    (torch.optim.SGD, {"lr": -0.1}, None, r"lr=-0.1 must be a finite number in \[0, 1e\+06\]"),
    (torch.optim.SGD, {"lr": 0.1, "momentun": 0.9}, None, r"SGD refused its arguments: .*momentun"),
])
def test_nonfinite_hyperparameters_are_refused_naming_the_group_and_key(base, kw, group, match):
    model = mlp()
    params = _groups(model, **group) if group is not None else None
    with pytest.raises(HetsamInputError, match=match) as err:
        AutoSAM(model, loss_fn, base, plan="sgd", executor="inline", params=params, **kw)
    assert "\n" not in str(err.value)
    if group is not None:  # the same group added mid-run
        opt = AutoSAM(model, loss_fn, base, plan="sgd", executor="inline", params=_groups(model)[:1], lr=0.1)
        with pytest.raises(HetsamInputError, match=match.replace("^param group 1", r"^add_param_group \(param group 1\)")):
            opt.add_param_group(_groups(model, **group)[1])
        assert len(opt.param_groups) == 1 and len(opt.base_optimizer.param_groups) == 1
        opt.close()


@pytest.mark.parametrize("params, match", [
    (lambda m: [{"params": []}], r"^params\[0\] is a group with no parameters"),
    (lambda m: [{"params": [m[0].weight]}, {"params": []}], r"^params\[1\] is a group with no parameters"),
    (lambda m: [], r"^params is empty"),
    (lambda m: [{"params": {m[0].weight}}], r"^params\[0\]\['params'\] must be tensors in a list, not a set"),
    (lambda m: 5, r"^params must be an iterable"),
])
def test_groups_without_parameters_are_refused_in_one_line(params, match):
    model = mlp()
    with pytest.raises(HetsamInputError, match=match):
        AutoSAM(model, loss_fn, plan="sgd", params=params(model), lr=0.1)
    opt = AutoSAM(model, loss_fn, plan="sgd", executor="inline", params=[model[0].weight], lr=0.1)
    for bad in ({"params": []}, {"params": ()}, {"params": iter([])}):
        with pytest.raises(HetsamInputError, match="add_param_group is a group with no parameters"):
            opt.add_param_group(bad)
    assert len(opt.param_groups) == 1
    opt.close()


def test_the_nonfinite_setting_is_checked():
    with pytest.raises(HetsamInputError, match="nonfinite='ignore' is not one of 'skip', 'raise'"):
        AutoSAM(mlp(), loss_fn, plan="sgd", nonfinite="ignore", lr=0.1)


def _reference_verdict(losses, grads):
    """not_finite's answer from first principles: every element checked on its own."""
    ok = [bool(torch.isfinite(x).all()) for x in losses]
    if not all(ok):
        return "the loss" if not ok[0] or len(losses) == 1 else "the update pass's loss"
    dense = [g.coalesce().values() if g.is_sparse else g for g in grads]
    return None if all(bool(torch.isfinite(g).all()) for g in dense) else "the update gradient"


@pytest.mark.parametrize("where", ["none", "loss0", "loss1", "fp32", "bf16", "sparse", "huge_bf16"])
def test_not_finite_matches_an_elementwise_reference(where):
    """The one-sync check (hetsam/execution/finite.py) over two losses and gradients of three kinds."""
    from hetsam.execution.finite import not_finite

    gen = torch.Generator().manual_seed(0)
    losses = [torch.tensor(1.5), torch.tensor(-2.0)]
    grads = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen).bfloat16(),
             torch.sparse_coo_tensor([[0, 2]], torch.tensor([1.0, 2.0]), (4,))]
    bad = float("nan") if where != "loss1" else float("-inf")
    if where == "loss0":
        losses[0] = torch.tensor(bad)
    elif where == "loss1":
        losses[1] = torch.tensor(bad)
    elif where == "fp32":
        grads[0][3, 1] = float("inf")
    elif where == "bf16":
        grads[1][6] = bad
    elif where == "sparse":
        grads[2] = torch.sparse_coo_tensor([[0, 2]], torch.tensor([1.0, bad]), (4,))
    elif where == "huge_bf16":  # ‖g‖₂ of these would overflow bf16; each is finite, so the step is
        grads[1] = torch.full((7,), 3e38).bfloat16()
    got = not_finite(losses, grads, [{"lr": 0.1}])
    assert got == _reference_verdict(losses, grads)
    assert (got is None) == (where in ("none", "huge_bf16"))
    assert not_finite(losses[:1], [], [{"lr": float("nan")}]) == "the learning rate of param group 0 (nan)"
    assert not_finite([], [], []) is None
