"""A step's fixed costs timed in AutoSAM's own steps (hetsam/autosam/step_costs.py): kept in the
profile, priced by the cost model in place of the profiler's update and climb, added to a cached
profile once."""
import json
import math
import time

import pytest
import torch
from torch import nn

from hetsam import AutoSAM
from hetsam.autosam import time_step_costs
from hetsam.autosam.step_costs import time_fixed_costs
from hetsam.cost.model import CostModel
from hetsam.errors import HetsamInputError
from hetsam.profiling import cache
from hetsam.profiling.measure import profile
from hetsam.profiling.schema import Profile
from hetsam.testing.profiles import synthetic_profile_dict

PLANTED = 0.02  # seconds of work a step does outside the priced parts
IN_A_PASS = 0.03  # seconds a loss function sleeps: inside the gradient pass, which the profile prices


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _loss(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


class _Planted(AutoSAM):
    """AutoSAM whose every step does PLANTED seconds more work of its own."""

    def step(self, *args, **kwargs):
        time.sleep(PLANTED)
        return super().step(*args, **kwargs)


def test_the_fixed_costs_are_the_step_beyond_its_passes():
    """A planted sleep outside the passes is counted in every kind of step; a sleep inside each
    gradient pass is not (SAM's step has two passes, so counting them would show)."""
    def slow_loss(model, batch):
        time.sleep(IN_A_PASS)
        return _loss(model, batch)

    plain, perturbed, job = time_fixed_costs(_Planted, nn.Linear(6, 3), slow_loss, _batch(), "cpu:0")
    for fixed in (plain, perturbed):
        assert PLANTED <= fixed < PLANTED + IN_A_PASS, (plain, perturbed)
    assert 0.0 <= job < IN_A_PASS, job  # AsyncSAM's job and its pass are not in it either


class _SlowSGD(torch.optim.SGD):
    """A base optimizer whose every update takes PLANTED seconds more."""

    def step(self, closure=None):
        time.sleep(PLANTED)
        return super().step(closure)


def test_the_fixed_costs_are_timed_with_the_users_base_optimizer():
    plain, perturbed, _ = time_fixed_costs(AutoSAM, nn.Linear(6, 3), _loss, _batch(), "cpu:0",
                                            (_SlowSGD, {"lr": 10.0, "momentum": 0.5}))
    assert plain >= PLANTED and perturbed >= PLANTED, (plain, perturbed)  # its update is in both
    default, _, _ = time_fixed_costs(AutoSAM, nn.Linear(6, 3), _loss, _batch(), "cpu:0")
    assert default < PLANTED, default


def test_a_profile_gains_the_fixed_costs_of_its_cpu_devices_and_keeps_them_through_json():
    prof = profile(nn.Linear(6, 3), _loss, _batch(), ["cpu:0"], batch_sizes=[4, 8], contention=False, links=False,
                   warmup=1, repeats=3, progress=False)
    assert prof.device("cpu:0").plain_fixed_seconds is None
    done = time_step_costs(prof, nn.Linear(6, 3), _loss, _batch())
    d = done.device("cpu:0")
    assert 0.0 < d.plain_fixed_seconds < 1.0 and 0.0 < d.perturbed_fixed_seconds < 1.0
    assert 0.0 <= d.job_overhead_seconds < 1.0
    again = Profile.from_dict(json.loads(done.to_json()))
    assert again.device("cpu:0") == d
    assert again.device("cpu:0").grad_seconds == prof.device("cpu:0").grad_seconds  # nothing else changed


def test_a_failed_measurement_leaves_the_profile_as_measured_and_says_so():
    data = synthetic_profile_dict()
    data["devices"][0]["grad_seconds"]["median"] = [0.3, 0.5, 0.9, 1.7]  # cpu:0: passes too long to bother
    data["devices"][1]["grad_seconds"]["median"] = [0.005, 0.009, 0.017, 0.033]  # cpu:0[0]: timed
    prof = Profile.from_dict(data)
    lines = []

    def broken(model, batch):
        raise RuntimeError("the loss is broken")

    got = time_step_costs(prof, nn.Linear(6, 3), broken, _batch(), log=lines.append)
    assert got.devices == prof.devices
    assert lines == ["hetsam: step costs on cpu:0[0] not timed in AutoSAM's own steps (RuntimeError: the loss is "
                     "broken); the profiler's update and climb stand in"]


def _with(**fields) -> CostModel:
    data = synthetic_profile_dict()
    for dev in data["devices"]:
        if dev["kind"] == "cpu":
            dev.update(fields)
    return CostModel(Profile.from_dict(data))


def test_the_cost_model_uses_the_timed_fixed_costs_and_adds_the_job_part_to_handoffs():
    plain = _with()
    timed = _with(plain_fixed_seconds=0.004, perturbed_fixed_seconds=0.007, job_overhead_seconds=0.003)
    cpu = "cpu:0"
    assert plain.step_seconds(cpu, False) == plain.update_seconds(cpu)  # the profiler's u (+ c), as before
    assert plain.step_seconds(cpu, True) == plain.update_seconds(cpu) + plain.climb_seconds(cpu)
    assert timed.step_seconds(cpu, False) == 0.004 and timed.step_seconds(cpu, True) == 0.007
    assert timed.calibrated(0.002).step_seconds(cpu, True) == pytest.approx(0.009)  # the loop's ℓ on top
    assert timed.handoff_seconds(cpu, cpu) == pytest.approx(plain.handoff_seconds(cpu, cpu) + 0.003)
    assert timed.handoff_seconds("cpu:0[0]", "cpu:0[1]") == pytest.approx(plain.handoff_seconds("cpu:0[0]", "cpu:0[1]") + 0.003)
    terms = timed.step_terms(cpu)
    assert terms["timed"] and (terms["plain"], terms["perturbed"]) == (0.004, 0.007)
    assert not plain.step_terms(cpu)["timed"]
    assert timed.step_seconds("cpu:0[1]", True) == 0.007  # a pool derived from a measured one inherits them


@pytest.mark.parametrize("key", ["plain_fixed_seconds", "perturbed_fixed_seconds", "job_overhead_seconds"])
@pytest.mark.parametrize("value", [-0.001, math.inf, "1 ms"])
def test_bad_step_costs_in_a_profile_is_refused_by_name(key, value):
    data = synthetic_profile_dict()
    data["devices"][0][key] = value
    with pytest.raises(HetsamInputError, match=key):
        Profile.from_dict(data)


def test_the_cache_adds_the_step_costs_to_a_fresh_profile_and_to_an_old_entry_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path))
    model, batch, calls = nn.Linear(6, 3), _batch(), []

    def finish(prof):
        calls.append(1)
        return time_step_costs(prof, model, _loss, batch)

    kwargs = dict(devices=["cpu:0"], batch_sizes=[8], budget_seconds=None, progress=False)
    old = cache.cached_profile(model, _loss, batch, **kwargs)  # an entry cached without it
    assert old.device("cpu:0").plain_fixed_seconds is None and not calls
    lines = []
    got = cache.cached_profile(model, _loss, batch, finish=finish, log=lines.append, **kwargs)
    assert calls == [1] and got.device("cpu:0").plain_fixed_seconds is not None
    assert any("added the step costs timed in AutoSAM's own steps to the cache" in line for line in lines)
    stored = Profile.from_dict(json.loads(next(tmp_path.glob("profile-*.json")).read_text()))
    assert stored.device("cpu:0") == got.device("cpu:0")
    cache.cached_profile(model, _loss, batch, finish=finish, **kwargs)
    assert calls == [1]  # already there: not measured again


def test_step_costs_timed_beside_cpu_hogs_are_timed_again_and_mark_the_profile_busy(cpu_hogs):
    prof = Profile.from_dict(synthetic_profile_dict())  # quiet, as far as its provenance says
    assert not prof.busy
    got = time_step_costs(prof, nn.Linear(6, 3), _loss, _batch())
    assert got.busy and got.provenance["other_load"]["step costs"] > 0.25
    assert any("while the step costs stage was measured (measured twice)" in w for w in got.warnings), got.warnings
    assert got.device("cpu:0").plain_fixed_seconds is not None  # timed all the same, and said so
