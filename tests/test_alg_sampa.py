"""SAMPa-λ through AutoSAM(executor="inline") against the sequential reference of the README ("The update rules")."""


import pytest
import torch
from _alg_refs import (
    SGD_KW,
    assert_rel_close,
    batches,
    flat,
    loss_fn,
    mlp,
    ref_sampa,
    save_load,
)

from hetsam import AutoSAM, Plan
from hetsam.strategies.sampa.rule import optimistic_point_


def autosam(model, lam, base=torch.optim.SGD, **kw):
    kw = kw or SGD_KW
    return AutoSAM(model, loss_fn, base, rho=0.05, plan=Plan(strategy="sampa", options={"sampa_lambda": lam}), executor="inline", **kw)


@pytest.mark.parametrize("lam", [0.0, 0.2])
@pytest.mark.parametrize("bn", [False, True])
def test_matches_reference(lam, bn):
    data = batches(20)
    ours, ref = mlp(bn=bn), mlp(bn=bn)
    with autosam(ours, lam) as opt:
        for b in data:
            opt.step(b)
    ref_sampa(ref, data, lam)
    assert_rel_close(flat(ours), flat(ref), 1e-6)
    if bn:  # only the g_x pass updated the running statistics
        assert_rel_close(ours[1].running_var, ref[1].running_var, 1e-6)
        assert ours[1].num_batches_tracked.item() == 20


def test_lambda0_still_perturbs():
    """SAMPa-0 keeps g_y itself, so its perturbation does not vanish (the official code's would)."""
    data = batches(12)
    a, b = mlp(), mlp()
    ref_sampa(a, data, 0.0)
    ref_sampa(b, data, 0.0, rho=0.0)
    assert (flat(a) - flat(b)).norm() > 1e-4 * flat(a).norm()
    ours = mlp()
    with autosam(ours, 0.0) as opt:
        for batch in data:
            opt.step(batch)
    assert_rel_close(flat(ours), flat(a), 1e-6)


def test_first_step_uses_x0_for_both_gradients():
    """t = 0: x̃_0 = y_1 = x_0 and B_{−1} = B_0, so the update is one plain gradient step."""
    data = batches(1)
    ours, ref = mlp(), mlp()
    with autosam(ours, 0.2) as opt:
        opt.step(data[0])
    sgd = torch.optim.SGD(ref.parameters(), **SGD_KW)
    loss_fn(ref, data[0]).backward()
    sgd.step()
    assert_rel_close(flat(ours), flat(ref), 1e-6)


def test_y_step_without_momentum_buffer_is_plain_gradient_step():
    model = mlp()
    adam = torch.optim.AdamW(model.parameters(), lr=0.01)
    x = flat(model)
    g = [torch.ones_like(p) for p in model.parameters()]
    assert optimistic_point_(adam, g)
    assert_rel_close(flat(model), x - 0.01, 1e-7)


def test_with_adamw_base_trains():
    data = batches(8)
    model = mlp()
    with autosam(model, 0.2, base=torch.optim.AdamW, lr=1e-2) as opt:
        first = [opt.step(b) for b in data]
        for _ in range(10):
            last = [opt.step(b) for b in data]
    assert sum(last) < sum(first)


def test_state_dict_carries_g_y_and_the_previous_batch():
    data = batches(14)
    full = mlp(bn=True)
    with autosam(full, 0.2) as opt:
        for b in data:
            opt.step(b)
    first = mlp(bn=True)
    with autosam(first, 0.2) as opt:
        for b in data[:5]:
            opt.step(b)
        state = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
        assert state["opt"]["hetsam"]["strategy"]["g_y"] is not None
    resumed = mlp(seed=4, bn=True)
    resumed.load_state_dict(state["model"])
    with autosam(resumed, 0.2) as opt:
        opt.load_state_dict(state["opt"])
        for b in data[5:]:
            opt.step(b)
    assert torch.equal(flat(resumed), flat(full))
