"""The one-device SAM variants against references written from their definitions.

- interval (Composer's rule): step t is SAM when (t + 1) % k == 0, the base optimizer otherwise;
- late_phase: the base optimizer for the first ⌊start · T⌋ steps, SAM after;
- msam (Momentum-SAM): v_{t+1} = μ v_t + g(θ_t − ρ v_t/‖v_t‖; B_t), θ_{t+1} = θ_t − η v_{t+1}
  (SGD with momentum, no weight decay, as the paper writes it; Adam's first moment likewise).
"""

import math

import pytest
import torch
from _alg_refs import (
    Scratch,
    assert_rel_close,
    batches,
    descend,
    flat,
    loss_fn,
    mlp,
    perturbation,
    snapshot,
)

from hetsam import AutoSAM, HetsamInputError, Plan

KW = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def autosam_run(plan, data, total_steps=None, **kw):
    model = mlp()
    with AutoSAM(model, loss_fn, plan=plan, executor="inline", total_steps=total_steps, rho=0.05, **(kw or KW)) as opt:
        for batch in data:
            opt.step(batch)
        return model, opt.stats()


def ref_mixed(data, is_sam, rho=0.05):
    """SAM on the steps where ``is_sam(t)``, a plain SGD step otherwise."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), **KW)
    scratch = Scratch(model)
    for t, batch in enumerate(data):
        if is_sam(t):
            descend(model, opt, batch, perturbation(scratch.grad(snapshot(model), batch), rho))
        else:
            descend(model, opt, batch)
    return model


@pytest.mark.parametrize("k", [1, 3, 5])
def test_interval_is_sam_on_every_kth_step(k):
    data = batches(12)
    ours, stats = autosam_run(Plan("interval", options={"k": k}), data)
    ref = ref_mixed(data, lambda t: (t + 1) % k == 0)
    assert_rel_close(flat(ours), flat(ref), 1e-6)
    assert stats["sam_steps"] == 12 // k


@pytest.mark.parametrize("start", [0.0, 0.5, 0.75, 1.0])
def test_late_phase_switches_to_sam_at_start_times_total(start):
    data = batches(12)
    ours, stats = autosam_run(Plan("late_phase", options={"start": start}), data, total_steps=12)
    first = math.floor(start * 12)
    ref = ref_mixed(data, lambda t: t >= first)
    assert_rel_close(flat(ours), flat(ref), 1e-6)
    assert stats["sam_steps"] == 12 - first and stats["first_sam_step"] == first


def test_late_phase_needs_the_planned_steps():
    with pytest.raises(HetsamInputError, match="total_steps"):
        autosam_run(Plan("late_phase"), batches(2))
    with pytest.raises(HetsamInputError, match="total_steps"):
        AutoSAM(mlp(), loss_fn, plan="late_phase", total_steps=0, lr=0.1)


def ref_msam(data, rho, lr=0.1, mu=0.9):
    """The paper's update, written out with plain tensors (no torch.optim)."""
    model = mlp()
    scratch = Scratch(model)
    theta = snapshot(model)
    v = [torch.zeros_like(p) for p in theta]
    for batch in data:
        n = torch.sqrt(sum((x * x).sum() for x in v))
        at = [p - rho * x / n for p, x in zip(theta, v)] if n > 0 else theta
        g = scratch.grad(at, batch)
        v = [mu * x + gi if n > 0 else gi.clone() for x, gi in zip(v, g)]  # torch's first buffer is g itself
        theta = [p - lr * x for p, x in zip(theta, v)]
    with torch.no_grad():
        for p, value in zip(model.parameters(), theta):
            p.copy_(value)
    return model


@pytest.mark.parametrize("rho", [0.3, 2.0])
def test_msam_perturbs_along_the_momentum(rho):
    data = batches(12)
    ours, stats = autosam_run(Plan("msam", options={"rho": rho}), data, lr=0.1, momentum=0.9)
    assert_rel_close(flat(ours), flat(ref_msam(data, rho)), 1e-5)
    assert stats["perturbed_steps"] == 11  # no momentum before the first update


def test_msam_with_rho_zero_is_the_base_optimizer_and_adam_uses_its_first_moment():
    data = batches(8)
    ours, _ = autosam_run(Plan("msam", options={"rho": 0.0}), data, lr=0.1, momentum=0.9)
    assert_rel_close(flat(ours), flat(ref_msam(data, 0.0)), 1e-6)
    model = mlp()
    with AutoSAM(model, loss_fn, torch.optim.Adam, plan=Plan("msam", options={"rho": 0.5}), executor="inline",
                 lr=1e-2) as opt:
        for batch in data:
            opt.step(batch)
        assert opt.stats()["perturbed_steps"] == 7
    with pytest.raises(HetsamInputError, match="momentum"):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=Plan("msam"), lr=0.1).step(data[0])
