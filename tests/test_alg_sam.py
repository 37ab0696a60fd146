"""hetsam.SAM against the equations of Foret et al. / Kwon et al., written out here."""

import copy
import warnings

import pytest
import torch
from _alg_refs import (
    SGD_KW,
    assert_rel_close,
    batches,
    descend,
    flat,
    loss_fn,
    mlp,
    ref_sam,
    save_load,
)

from hetsam import SAM


def run_sam(model, data, rho=0.05, adaptive=False, **kw):
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, **(kw or SGD_KW))
    for batch in data:
        loss_fn(model, batch).backward()
        opt.first_step(zero_grad=True)
        loss_fn(model, batch).backward()
        opt.second_step(zero_grad=True)
    return opt


def test_sam_matches_equations_over_20_steps_with_momentum_and_weight_decay():
    data = batches(20)
    ours, ref = mlp(), mlp()
    run_sam(ours, data, rho=0.05)
    ref_sam(ref, data, rho=0.05)
    assert_rel_close(flat(ours), flat(ref), 1e-6)
    assert not torch.equal(flat(ours), flat(mlp()))  # it did train


def test_asam_matches_equations():
    """ASAM: e = ρ T² g / ‖T g‖ with T = |θ|."""
    data = batches(20)
    ours, ref = mlp(), mlp()
    run_sam(ours, data, rho=0.5, adaptive=True)
    opt = torch.optim.SGD(ref.parameters(), **SGD_KW)
    for batch in data:
        loss_fn(ref, batch).backward()
        params = list(ref.parameters())
        with torch.no_grad():
            tg_norm = torch.sqrt(sum(((p.abs() * p.grad) ** 2).sum() for p in params))
            e = [0.5 * p * p * p.grad / tg_norm for p in params]
        descend(ref, opt, batch, e)
        opt.zero_grad()
    assert_rel_close(flat(ours), flat(ref), 1e-6)


def test_step_with_closure_equals_two_step_form_and_returns_loss_at_theta():
    data = batches(10)
    a, b = mlp(), mlp()
    run_sam(a, data)
    opt = SAM(b.parameters(), torch.optim.SGD, rho=0.05, **SGD_KW)
    for batch in data:
        before = loss_fn(b, batch).item()
        loss = opt.step(lambda: _backward(b, batch))
        assert loss.item() == pytest.approx(before, rel=1e-6)
    assert torch.equal(flat(a), flat(b))


def _backward(model, batch):
    loss = loss_fn(model, batch)
    loss.backward()
    return loss


def test_shares_param_groups_with_base_so_lr_schedulers_drive_it():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    assert opt.param_groups is opt.base_optimizer.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    batch = batches(1)[0]
    opt.step(lambda: _backward(model, batch))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_state_dict_round_trip_mid_run_continues_exactly():
    data = batches(12)
    full = mlp()
    run_sam(full, data)

    first = mlp()
    opt = run_sam(first, data[:6])
    saved = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
    resumed = mlp(seed=5)
    resumed.load_state_dict(saved["model"])
    opt2 = SAM(resumed.parameters(), torch.optim.SGD, rho=0.05, **SGD_KW)
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    for batch in data[6:]:
        loss_fn(resumed, batch).backward()
        opt2.first_step(zero_grad=True)
        loss_fn(resumed, batch).backward()
        opt2.second_step(zero_grad=True)
    assert torch.equal(flat(resumed), flat(full))


def test_zero_or_nonfinite_ascent_gradient_skips_the_climb_with_one_warning():
    model = mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    before = flat(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for bad in (0.0, float("nan"), float("inf")):
            for p in model.parameters():
                p.grad = torch.full_like(p, bad)
            opt.first_step(zero_grad=True)
            assert torch.equal(flat(model), before)  # no climb, no NaN
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            opt.second_step(zero_grad=True)
    assert opt.skipped_perturbations == 3
    assert sum("perturbation" in str(w.message) for w in caught) == 1
    assert torch.isfinite(flat(model)).all()


def test_keeps_one_parameter_copy():
    model = mlp()
    opt = run_sam(model, batches(2))
    backup = opt._perturbation.buffers()
    assert sum(t.numel() for t in backup) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1"])
def test_bad_rho_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match="rho="):
        SAM(mlp().parameters(), torch.optim.SGD, rho=bad, lr=0.1)


def test_base_optimizer_instance_is_rejected():
    model = mlp()
    with pytest.raises(ValueError, match="base_optimizer"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), lr=0.1)


def test_step_without_closure_raises():
    opt = SAM(mlp().parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_works_with_adamw_and_per_group_rho():
    model = mlp()
    groups = [{"params": [model[0].weight], "rho": 0.1}, {"params": [p for n, p in model.named_parameters() if n != "0.weight"]}]
    opt = SAM(groups, torch.optim.AdamW, rho=0.05, lr=1e-2)
    assert [g["rho"] for g in opt.param_groups] == [0.1, 0.05]
    data = batches(5)
    first = sum(loss_fn(model, b).item() for b in data)
    for _ in range(20):
        for batch in data:
            opt.step(lambda: _backward(model, batch))
    assert sum(loss_fn(model, b).item() for b in data) < first
    assert copy.deepcopy(opt.state_dict())["param_groups"][0]["rho"] == 0.1
