"""Issue 22: a profile measured on a busy machine is marked, shown, and replaced when it is quiet."""

import json
import subprocess
import sys

import pytest
import torch

from hetsam.profiling import cache
from hetsam.profiling.measure import profile
from hetsam.profiling.models import MLP, cross_entropy_loss
from hetsam.profiling.schema import Profile

QUICK = dict(warmup=1, repeats=3, progress=False)


def tiny_batch(n):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_a_profile_taken_beside_cpu_hogs_is_marked_busy_and_plan_shows_it(cpu_hogs, tmp_path):
    prof = profile(MLP(), cross_entropy_loss, tiny_batch(16), ["cpu:0"], batch_sizes=[8, 16], contention=False,
                   links=False, **QUICK)
    prov = prof.provenance
    assert prof.busy and prov["busy"] is True
    assert prov["other_load"]["devices"] > 0.25
    assert prov["remeasured"] == ["devices"]  # measured again once (no budget limits it), still under load
    assert any("while the devices stage was measured (measured twice)" in w for w in prof.warnings)
    path = tmp_path / "busy.json"
    prof.save(path)
    proc = subprocess.run([sys.executable, "-m", "hetsam", "plan", "--profile", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the machine may be busy" in proc.stderr and "measure" in proc.stderr


def test_a_quiet_stage_is_measured_once_and_the_profile_is_not_marked(monkeypatch):
    from hetsam.profiling import load, measure

    class Quiet(load.LoadMeter):  # the decision, apart from this machine's real load
        def stop(self):
            return 0.0

    monkeypatch.setattr(measure, "LoadMeter", Quiet)
    prof = profile(MLP(), cross_entropy_loss, tiny_batch(8), ["cpu:0"], batch_sizes=[8], contention=False,
                   links=False, **QUICK)
    assert not prof.busy and prof.provenance["other_load"] == {"devices": 0.0, "contention": 0.0, "links": 0.0}
    assert "remeasured" not in prof.provenance
    assert not any("stage was measured" in w for w in prof.warnings)  # (a wide spread may still be noted)


def _cached_busy_entry(monkeypatch, tmp_path):
    """A cached entry of a profile marked busy, and how many times the profiler ran since."""
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path))
    model, batch = MLP(), tiny_batch(8)
    first = profile(model, cross_entropy_loss, batch, ["cpu:0"], batch_sizes=[8], contention=False, links=False,
                    **QUICK)
    data = first.to_dict()
    data["provenance"]["busy"] = True
    data["provenance"]["notes"] = "other processes used 80% of the CPUs while the devices stage was measured: " \
                                  "the machine may be busy; re-profile when it is quiet"
    key = cache.cache_key(model, batch, devices=["cpu:0"], batch_sizes=[8])
    (tmp_path / f"profile-{key}.json").write_text(json.dumps(data))
    runs = []
    import hetsam.profiling.measure as measure

    real = measure.profile
    monkeypatch.setattr(measure, "profile", lambda *a, **k: runs.append(1) or real(*a, **k))
    return model, batch, runs


@pytest.mark.parametrize("share, measured_again", [(0.02, True), (0.9, False)])
def test_the_cache_replaces_a_busy_profile_only_when_the_machine_is_quiet(monkeypatch, tmp_path, share,
                                                                         measured_again):
    from hetsam.profiling import load

    model, batch, runs = _cached_busy_entry(monkeypatch, tmp_path)
    monkeypatch.setattr(load, "other_load", lambda window=0.5: share)  # the machine's load now, as given
    lines = []
    got = cache.cached_profile(model, cross_entropy_loss, batch, devices=["cpu:0"], batch_sizes=[8],
                               budget_seconds=None, progress=False, log=lines.append)
    assert bool(runs) == measured_again
    said = "\n".join(lines)
    if measured_again:
        assert "quiet now" in said and "measuring again" in said
        assert Profile.from_dict(json.loads(next(tmp_path.glob("profile-*.json")).read_text())).provenance.get(
            "busy") is got.busy
    else:
        assert "still is (other processes: 90% of the CPUs); reusing it" in said
        assert got.busy and "the machine may be busy" in said
