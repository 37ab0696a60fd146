"""hetsam.RST / G-RST and the p(t) schedules, against the rule written out here."""

import math

import pytest
import torch
from _alg_refs import (
    SGD_KW,
    Scratch,
    assert_rel_close,
    batches,
    descend,
    flat,
    loss_fn,
    mlp,
    perturbation,
    save_load,
    snapshot,
)
from scipy.stats import binom

from hetsam import RST, SAM
from hetsam.optim import schedules
from hetsam.optim.rst import SamTrials


def closure(model, batch):
    def fn():
        loss = loss_fn(model, batch)
        loss.backward()
        return loss
    return fn


def run(opt, model, data):
    return [opt.step(closure(model, b)).item() for b in data]


def test_p1_equals_sam_and_p0_equals_base():
    data = batches(15)
    sam_model, rst1, rst0, sgd_model = mlp(), mlp(), mlp(), mlp()
    run(SAM(sam_model.parameters(), torch.optim.SGD, rho=0.05, **SGD_KW), sam_model, data)
    opt1 = RST(rst1.parameters(), torch.optim.SGD, rho=0.05, p=1.0, seed=0, **SGD_KW)
    run(opt1, rst1, data)
    assert torch.equal(flat(rst1), flat(sam_model))
    assert (opt1.steps, opt1.sam_steps) == (15, 15)

    opt0 = RST(rst0.parameters(), torch.optim.SGD, rho=0.05, p=0.0, seed=0, **SGD_KW)
    run(opt0, rst0, data)
    base = torch.optim.SGD(sgd_model.parameters(), **SGD_KW)
    for b in data:
        base.zero_grad()
        loss_fn(sgd_model, b).backward()
        base.step()
    assert torch.equal(flat(rst0), flat(sgd_model))
    assert (opt0.steps, opt0.sam_steps) == (15, 0)


def test_rst_and_grst_follow_the_rule_with_the_same_trials():
    """u_t < p: update with (1−α) g(θ) + α g(θ+e); else g(θ). Trials from a generator seeded alike."""
    data = batches(20)
    for alpha in (1.0, 0.3):
        ours, ref = mlp(), mlp()
        run(RST(ours.parameters(), torch.optim.SGD, rho=0.05, p=0.5, alpha=alpha, seed=7, **SGD_KW), ours, data)
        gen = torch.Generator().manual_seed(7)
        opt = torch.optim.SGD(ref.parameters(), **SGD_KW)
        scratch = Scratch(ref)
        params = list(ref.parameters())
        chosen = 0
        for b in data:
            u = torch.rand((), generator=gen, dtype=torch.float64).item()
            g0 = scratch.grad(snapshot(ref), b)
            if u < 0.5:
                chosen += 1
                descend(ref, opt, b, perturbation(g0, 0.05), g0=g0, alpha=alpha)
            else:
                with torch.no_grad():
                    for p, g in zip(params, g0):
                        p.grad = g.clone()
                opt.step()
        assert 0 < chosen < len(data)
        assert_rel_close(flat(ours), flat(ref), 1e-6)


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
def test_sam_step_frequency_within_binomial_bounds():
    model = mlp()
    opt = RST(model.parameters(), torch.optim.SGD, rho=0.05, p=0.3, seed=123, lr=0.01)
    batch = batches(1, b=4)[0]
    for _ in range(2000):
        opt.step(closure(model, batch))
    lo, hi = binom.ppf(0.0005, 2000, 0.3), binom.ppf(0.9995, 2000, 0.3)
    assert opt.steps == 2000
    assert lo <= opt.sam_steps <= hi, (opt.sam_steps, lo, hi)


def test_schedule_frequencies_follow_p_of_t():
    """Over 2,000 trials of a linear 0→1 ramp, the SAM count is Σ p(t) within binomial-like bounds."""
    trials = SamTrials(schedules.linear(0.0, 1.0, 2000), seed=3)
    for _ in range(2000):
        trials.draw()
    expected = sum(t / 2000 for t in range(2000))
    var = sum((t / 2000) * (1 - t / 2000) for t in range(2000))
    assert abs(trials.sam_steps - expected) <= 4 * math.sqrt(var)


def test_schedules_give_the_documented_values():
    lin = schedules.linear(0.2, 0.8, 100)
    for t in (0, 25, 50, 100, 500):
        assert lin(t) == pytest.approx(0.2 + 0.6 * min(t, 100) / 100)
    down = schedules.linear(1.0, 0.0, 10)
    assert [down(t) for t in (0, 5, 10, 11)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    cos = schedules.cosine(1.0, 0.2, 50)
    for t in (0, 10, 25, 50, 80):
        assert cos(t) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * min(t, 50) / 50)) / 2)
    st = schedules.step([0.1, 0.5, 0.9], [10, 20])
    assert [st(t) for t in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.5, 0.5, 0.9, 0.9]
    assert schedules.constant(0.3)(12345) == 0.3
    spec = schedules.make_schedule({"schedule": "cosine", "start": 0.5, "end": 0.1, "steps": 4})
    assert spec(4) == pytest.approx(0.1)
    assert schedules.make_schedule(lambda t: 0.25)(3) == 0.25


def test_callable_schedule_drives_rst():
    model = mlp()
    opt = RST(model.parameters(), torch.optim.SGD, p=lambda t: 1.0 if t % 2 == 0 else 0.0, seed=0, lr=0.01)
    batch = batches(1)[0]
    for _ in range(10):
        opt.step(closure(model, batch))
    assert opt.sam_steps == 5


def test_state_dict_resumes_the_trials_exactly():
    data = batches(16)
    full = mlp()
    run(RST(full.parameters(), torch.optim.SGD, p=0.5, seed=11, **SGD_KW), full, data)
    first = mlp()
    opt = RST(first.parameters(), torch.optim.SGD, p=0.5, seed=11, **SGD_KW)
    run(opt, first, data[:7])
    saved = save_load({"model": first.state_dict(), "opt": opt.state_dict()})
    resumed = mlp(seed=9)
    resumed.load_state_dict(saved["model"])
    opt2 = RST(resumed.parameters(), torch.optim.SGD, p=0.5, seed=999, **SGD_KW)
    opt2.load_state_dict(saved["opt"])
    run(opt2, resumed, data[7:])
    assert torch.equal(flat(resumed), flat(full))
    assert opt2.steps == 16


@pytest.mark.parametrize("kwargs, name", [
    (dict(p=1.5), "p="), (dict(p=-0.1), "p="), (dict(alpha=2.0), "alpha="), (dict(seed=-1), "seed="),
    (dict(p={"schedule": "nope"}), "schedule="), (dict(p={"schedule": "linear", "start": 0, "end": 2, "steps": 5}), "end="),
    (dict(rho=-1.0), "rho="),
])
def test_bad_hyperparameters_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RST(mlp().parameters(), torch.optim.SGD, lr=0.1, **kwargs)


def test_callable_returning_out_of_range_raises_when_drawn():
    model = mlp()
    opt = RST(model.parameters(), torch.optim.SGD, p=lambda t: 0.5 if t == 0 else 3.0, lr=0.1)
    batch = batches(1)[0]
    opt.step(closure(model, batch))
    with pytest.raises(ValueError, match=r"p\(1\)=3.0"):
        opt.step(closure(model, batch))


def test_step_schedule_validation():
    with pytest.raises(ValueError, match="boundaries"):
        schedules.step([0.1, 0.2], [5, 3])
    with pytest.raises(ValueError, match="one more value"):
        schedules.step([0.1], [5])
