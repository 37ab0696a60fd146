"""`hetsam devices` and `hetsam profile` as a user runs them (subprocesses)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hetsam.hardware.detect import cgroup_cpu_limit
from hetsam.profiling.schema import load_profile

ROOT = Path(__file__).resolve().parent.parent


def hetsam(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hetsam", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_devices_json_shows_usable_cores():
    res = hetsam("devices", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    cpus = [d for d in data["devices"] if d["kind"] == "cpu"]
    assert cpus and all(d["id"].startswith("cpu:") for d in cpus)
    affinity = len(os.sched_getaffinity(0))
    limit = cgroup_cpu_limit()
    expected = affinity if limit is None else min(affinity, max(1, math.floor(limit)))
    assert sum(len(d["cpus"]) for d in cpus) == affinity
    assert cpus[0]["cores"] == min(expected, len(cpus[0]["cpus"]))
    assert isinstance(cpus[0]["name"], str) and cpus[0]["name"]


def test_devices_does_not_import_torch():
    code = ("import sys, contextlib, io\nfrom hetsam.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['devices'])\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    has_gpu_driver = any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
    if not has_gpu_driver:
        assert res.stdout.strip() == "False"


@pytest.mark.parametrize("args", [
    ["--model", "mlp", "--batch-size", "-4"],
    ["--model", "nosuchmodel", "--batch-size", "8"],
    ["--model", "mlp", "--batch-size", "8", "--devices", "cpu:99"],
    ["--model", "mlp", "--batch-size", "8", "--devices", "tpu:0"],
    ["--model", "mlp", "--batch-size", "8", "--out-dir-missing"],
])
def test_profile_bad_input_exits_2_with_one_line(tmp_path, args):
    if "--out-dir-missing" in args:
        args = [a for a in args if a != "--out-dir-missing"] + ["--out", str(tmp_path / "no" / "such" / "p.json")]
    else:
        args = args + ["--out", str(tmp_path / "p.json")]
    res = hetsam("profile", *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "p.json").exists()


def test_profile_mlp_small_budget(tmp_path):
    out = tmp_path / "mlp.json"
    res = hetsam("profile", "--model", "mlp", "--batch-size", "16", "--out", str(out), "--budget-seconds", "1.5", "--quiet", "--json")
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    prof = load_profile(out)
    assert prof.to_dict() == printed
    assert prof.model.name == "mlp" and prof.batch_size == 16
    assert prof.device("cpu:0").grad_seconds.batch_sizes[-1] <= 16
    assert prof.provenance["kind"] == "measured" and prof.provenance["budget"].startswith("1.5 s")
