"""AutoSAM's own work per step (hetsam/autosam/overhead.py): measured by AutoSAM itself, kept in the
profile, priced by the cost model, added to a cached profile once."""
import json
import math
import time

import pytest
import torch
from torch import nn

from hetsam import AutoSAM
from hetsam.autosam import measure_own_work
from hetsam.autosam.overhead import measure_overheads
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
    """AutoSAM whose every step does PLANTED seconds more of its own work."""

    def step(self, *args, **kwargs):
        time.sleep(PLANTED)
        return super().step(*args, **kwargs)


def test_the_measured_own_work_is_the_step_beyond_its_priced_parts():
    """A planted sleep outside the parts is counted; a sleep inside the gradient pass is not."""
    def slow_loss(model, batch):
        time.sleep(IN_A_PASS)
        return _loss(model, batch)

    o, j = measure_overheads(_Planted, nn.Linear(6, 3), slow_loss, _batch(), "cpu:0")
    # at least the planted sleep; far below it plus one pass's sleep (which would mean a priced part counted)
    assert PLANTED <= o < PLANTED + IN_A_PASS, o
    assert 0.0 <= j < IN_A_PASS, j  # AsyncSAM's step has two passes and a job: none of them counted either


def test_a_profile_gains_the_own_work_of_its_cpu_devices_and_keeps_it_through_json():
    prof = profile(nn.Linear(6, 3), _loss, _batch(), ["cpu:0"], batch_sizes=[4, 8], contention=False, links=False,
                   warmup=1, repeats=3, progress=False)
    assert prof.device("cpu:0").step_overhead_seconds is None
    done = measure_own_work(prof, nn.Linear(6, 3), _loss, _batch())
    d = done.device("cpu:0")
    assert 0.0 < d.step_overhead_seconds < 1.0 and 0.0 <= d.job_overhead_seconds < 1.0
    again = Profile.from_dict(json.loads(done.to_json()))
    assert again.device("cpu:0").step_overhead_seconds == d.step_overhead_seconds
    assert again.device("cpu:0").grad_seconds == prof.device("cpu:0").grad_seconds  # nothing else changed


def test_a_failed_measurement_leaves_the_profile_as_measured_and_says_so():
    data = synthetic_profile_dict()
    data["devices"][0]["grad_seconds"]["median"] = [0.3, 0.5, 0.9, 1.7]  # cpu:0: passes too long to bother
    prof = Profile.from_dict(data)
    lines = []

    def broken(model, batch):
        raise RuntimeError("the loss is broken")

    got = measure_own_work(prof, nn.Linear(6, 3), broken, _batch(), log=lines.append)
    assert got.devices == prof.devices
    assert lines == ["hetsam: AutoSAM's own work on cpu:0[0] not measured (RuntimeError: the loss is broken)"]


def _with(step: float | None, job: float | None) -> CostModel:
    data = synthetic_profile_dict()
    for dev in data["devices"]:
        if dev["kind"] == "cpu":
            dev.update({k: v for k, v in (("step_overhead_seconds", step), ("job_overhead_seconds", job)) if v is not None})
    return CostModel(Profile.from_dict(data))


def test_the_cost_model_adds_the_own_work_to_every_step_and_the_job_part_to_handoffs():
    plain, extra = _with(None, None), _with(0.004, 0.003)
    cpu = next(d.id for d in plain.profile.devices if d.kind == "cpu")
    for perturbed in (False, True):
        assert extra.step_seconds(cpu, perturbed) == pytest.approx(plain.step_seconds(cpu, perturbed) + 0.004)
    assert extra.handoff_seconds(cpu, cpu) == pytest.approx(plain.handoff_seconds(cpu, cpu) + 0.003)
    assert extra.step_terms(cpu)["overhead"] == 0.004 and plain.step_terms(cpu)["overhead"] == 0.0
    pool = f"{cpu}[1]"  # derived from a measured pool: it inherits its own work
    assert extra.overhead_seconds(pool) == 0.004


@pytest.mark.parametrize("key", ["step_overhead_seconds", "job_overhead_seconds"])
@pytest.mark.parametrize("value", [-0.001, math.inf, "1 ms"])
def test_bad_own_work_in_a_profile_is_refused_by_name(key, value):
    data = synthetic_profile_dict()
    data["devices"][0][key] = value
    with pytest.raises(HetsamInputError, match=key):
        Profile.from_dict(data)


def test_the_cache_adds_the_own_work_to_a_fresh_profile_and_to_an_old_entry_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path))
    model, batch, calls = nn.Linear(6, 3), _batch(), []

    def finish(prof):
        calls.append(1)
        return measure_own_work(prof, model, _loss, batch)

    kwargs = dict(devices=["cpu:0"], batch_sizes=[8], budget_seconds=None, progress=False)
    old = cache.cached_profile(model, _loss, batch, **kwargs)  # an entry cached without it
    assert old.device("cpu:0").step_overhead_seconds is None and not calls
    lines = []
    got = cache.cached_profile(model, _loss, batch, finish=finish, log=lines.append, **kwargs)
    assert calls == [1] and got.device("cpu:0").step_overhead_seconds is not None
    assert any("added AutoSAM's own work per step to the cache" in line for line in lines)
    stored = Profile.from_dict(json.loads(next(tmp_path.glob("profile-*.json")).read_text()))
    assert stored.device("cpu:0").step_overhead_seconds == got.device("cpu:0").step_overhead_seconds
    cache.cached_profile(model, _loss, batch, finish=finish, **kwargs)
    assert calls == [1]  # already there: not measured again
