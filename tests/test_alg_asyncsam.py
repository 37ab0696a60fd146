"""AsyncSAM through AutoSAM(executor="inline") against the sequential reference of the README ("The update rules")."""

import warnings

import pytest
import torch
from _alg_refs import (
    SGD_KW,
    assert_rel_close,
    batches,
    flat,
    loss_fn,
    mlp,
    ref_async_sam,
    ref_sam,
    save_load,
)

from hetsam import SAM, AutoSAM, Plan


def autosam(model, plan, **kw):
    return AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan=plan, executor="inline", **{**SGD_KW, **kw})


def async_plan(tau, b_prime=None, policy="lookahead"):
    return Plan(strategy="async_sam", options={"staleness": tau, "ascent_batch_size": b_prime, "ascent_batches": policy})


def run_lookahead(opt, data):
    tau = opt.plan.option("staleness")
    for t, batch in enumerate(data):
        opt.step(batch, upcoming=data[t + 1:t + 1 + tau])


@pytest.mark.parametrize("policy", ["lookahead", "independent"])
def test_tau0_full_batch_equals_sam(policy):
    data = batches(20)
    ours, sam_model, ref = mlp(), mlp(), mlp()
    with autosam(ours, async_plan(0, None, policy)) as opt:
        run_lookahead(opt, data)
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KW)
    for b in data:
        loss_fn(sam_model, b).backward()
        sam.first_step(zero_grad=True)
        loss_fn(sam_model, b).backward()
        sam.second_step(zero_grad=True)
    ref_sam(ref, data)
    assert torch.equal(flat(ours), flat(sam_model))  # same arithmetic, on the replica
    assert_rel_close(flat(ours), flat(ref), 1e-6)


@pytest.mark.parametrize("policy", ["lookahead", "independent"])
@pytest.mark.parametrize("tau", [1, 2])
@pytest.mark.parametrize("bn", [False, True])
def test_matches_reference(policy, tau, bn):
    data = batches(20, b=16)
    ours, ref = mlp(bn=bn), mlp(bn=bn)
    with autosam(ours, async_plan(tau, 6, policy)) as opt:
        run_lookahead(opt, data)
        stats = opt.stats()
    ref_async_sam(ref, data, tau=tau, b_prime=6, policy=policy)
    assert_rel_close(flat(ours), flat(ref), 1e-6)
    if bn:  # only the descent pass updated the running statistics
        assert_rel_close(ours[1].running_mean, ref[1].running_mean, 1e-6)
        assert ours[1].num_batches_tracked.item() == ref[1].num_batches_tracked.item() == 20
    assert stats["unperturbed_steps"] == tau
    if policy == "lookahead":
        # the last τ steps have no B_{t+τ}: their jobs wait for steps that never come, and nothing is computed
        assert stats["lookahead_jobs"] == 20 - tau and stats["independent_jobs"] == 0 and stats["fresh_jobs"] == 0


def test_perturbation_really_changes_the_result():
    """Guard against a vacuous reference: AsyncSAM differs from SGD and between policies."""
    data = batches(12)
    a, b, c = mlp(), mlp(), mlp()
    ref_async_sam(a, data, tau=1, b_prime=6, policy="lookahead")
    ref_async_sam(b, data, tau=1, b_prime=6, policy="independent")
    ref_async_sam(c, data, tau=1, b_prime=6, policy="lookahead", rho=0.0)
    assert (flat(a) - flat(b)).norm() > 1e-4 * flat(a).norm()
    assert (flat(a) - flat(c)).norm() > 1e-4 * flat(a).norm()


@pytest.mark.parametrize("tau", [1, 2])
def test_prefetch_equals_upcoming_by_hand(tau):
    data = batches(15)
    by_hand, prefetched = mlp(), mlp()
    with autosam(by_hand, async_plan(tau, 8)) as opt:
        run_lookahead(opt, data)
    with autosam(prefetched, async_plan(tau, 8)) as opt:
        seen = [opt.step(batch) for batch in opt.prefetch(iter(data))]
        assert not opt.stats()["independent_jobs"] > tau
    assert len(seen) == len(data)
    assert torch.equal(flat(by_hand), flat(prefetched))


def test_lookahead_without_upcoming_falls_back_to_independent_once_and_records_it():
    data = batches(10)
    ours, ref = mlp(), mlp()
    with autosam(ours, async_plan(1, 8)) as opt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for batch in data:
                opt.step(batch)
        assert sum("falls back" in str(w.message) for w in caught) == 1
        stats = opt.stats()
        assert stats["policy"] == "independent" and stats["fell_back"]  # what ran
        assert opt.plan.option("ascent_batches") == "lookahead"  # the plan stays the decision
    ref_async_sam(ref, data, tau=1, b_prime=8, policy="independent")
    assert_rel_close(flat(ours), flat(ref), 1e-6)


def test_gradient_accumulation_gives_the_same_update():
    """accumulate=k: the micro-batch gradients add up to the whole-batch gradient; one perturbation."""
    data = batches(10, dtype=torch.float64)
    whole, micro = mlp(dtype=torch.float64), mlp(dtype=torch.float64)
    with autosam(whole, async_plan(1, 8)) as opt:
        run_lookahead(opt, data)
    with autosam(micro, async_plan(1, 8)) as opt:
        for t, b in enumerate(data):
            opt.step(b, upcoming=data[t + 1:t + 2], accumulate=3)
    assert_rel_close(flat(micro), flat(whole), 1e-10)


def test_state_dict_carries_the_pending_ascent_gradients():
    data = batches(14)
    full = mlp(bn=True)
    with autosam(full, async_plan(2, 8)) as opt:
        run_lookahead(opt, data)

    first = mlp(bn=True)
    opt = autosam(first, async_plan(2, 8))
    for t, b in enumerate(data[:6]):
        opt.step(b, upcoming=data[t + 1:t + 3])
    state = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
    assert sorted(state["opt"]["hetsam"]["strategy"]["pending"]) == [6, 7]
    opt.close()

    resumed = mlp(seed=3, bn=True)
    resumed.load_state_dict(state["model"])
    with autosam(resumed, async_plan(2, 8)) as opt2:
        opt2.load_state_dict(state["opt"])
        for t in range(6, 14):
            opt2.step(data[t], upcoming=data[t + 1:t + 3])
    assert torch.equal(flat(resumed), flat(full))
