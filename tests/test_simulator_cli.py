"""``hetsam simulate`` end to end, in subprocesses, on a copy of the synthetic profile."""

import importlib
import importlib.util
import json
import subprocess
import sys

import pytest
from _profiles import synthetic_profile_dict


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(synthetic_profile_dict()))
    return str(path)


def hetsam(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "hetsam", "simulate", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_json_for_a_strategy(profile_path):
    proc = hetsam("--profile", profile_path, "--strategy", "sam", "--descent-device", "cpu:0", "--no-jitter",
                  "--iterations", "40", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["plan"]["strategy"] == "sam"
    assert data["iteration_seconds"]["mean"] == pytest.approx(2 * 0.17 + 0.001)  # 2·t_D(64) + update
    assert data["simulated_iterations"] == 40 and data["extrapolated"] is False
    assert set(data) >= {"samples_per_second", "utilisation", "descent_wait_seconds", "timeline", "note", "engine"}


def test_defaults_come_from_the_planner_and_flags_override(profile_path):
    from hetsam.planning.compare import planner_report

    best = planner_report(profile_path).best_of("async_sam").plan  # the planner as `hetsam plan` runs it
    proc = hetsam("--profile", profile_path, "--strategy", "async_sam", "--ascent-batch-size", "8",
                  "--iterations", "78200", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["plan"]["descent_device"], data["plan"]["ascent_device"]) == (best.descent_device, best.ascent_device)
    assert data["plan"]["options"]["ascent_batch_size"] == 8  # the flag wins
    assert set(data["planner_chose"]) == {"descent_device", "ascent_device", "options"}
    assert set(data["planner_chose"]["options"]) == {"staleness", "ascent_batches"}
    assert data["extrapolated"] is True and data["simulated_iterations"] < 78200
    assert data["what_if"] == {}
    # nothing given: the planner's plan itself, and the table says which numbers it chose
    proc = hetsam("--profile", profile_path, "--strategy", "async_sam", "--iterations", "50")
    assert f"b'={best.option('ascent_batch_size')}" in proc.stdout and "the planner chose" in proc.stdout


def test_plan_file_trace_and_table(profile_path, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"strategy": "async_sam", "descent_device": "cuda:0", "ascent_device": "cpu:0",
                                "batch_size": 64, "ascent_batch_size": 16, "staleness": 1}))
    trace = tmp_path / "trace.json"
    proc = hetsam("--profile", profile_path, "--plan", str(plan), "--iterations", "200", "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert "seconds / iteration" in proc.stdout and "descent wait" in proc.stdout
    data = json.loads(trace.read_text())
    assert data["displayTimeUnit"] == "ms" and any(e["ph"] == "X" for e in data["traceEvents"])


def test_plot_writes_a_png(profile_path, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sim.png"
    proc = hetsam("--profile", profile_path, "--strategy", "async_sam", "--descent-device", "cpu:0[0]",
                  "--ascent-device", "cpu:0[1]", "--ascent-batch-size", "16", "--iterations", "300",
                  "--plot", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vs SGD" in proc.stdout and "share of SAM's gain" in proc.stdout  # the comparison table is printed too


@pytest.mark.parametrize("args,words", [
    (["--strategy", "sgd", "--iterations", "0"], ["iterations=0"]),
    (["--strategy", "async_sam", "--descent-device", "cpu:0", "--ascent-device", "cuda:7"], ["cuda:7", "not in the profile"]),
    (["--strategy", "sgd", "--what-if", "cuda:0"], ["DEVICE=SPEC"]),
])
def test_bad_input_exits_2(profile_path, args, words):
    assert_one_line_error(hetsam("--profile", profile_path, *args), *words)


def test_bad_plan_file_exits_2(profile_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(hetsam("--profile", profile_path, "--plan", str(bad)), "not valid JSON")
    good = tmp_path / "plan.json"
    good.write_text(json.dumps({"strategy": "sgd", "descent_device": "cuda:2"}))
    assert_one_line_error(hetsam("--profile", profile_path, "--plan", str(good)), "cuda:2")
    assert_one_line_error(hetsam("--profile", profile_path, "--plan", str(good), "--staleness", "2"), "--staleness")
    assert_one_line_error(hetsam("--profile", str(tmp_path / "missing.json"), "--strategy", "sgd"), "missing.json")


def test_what_if_swaps_a_device(profile_path):
    specs = importlib.import_module("hetsam.cost.specscale") if importlib.util.find_spec("hetsam.cost.specscale") else None
    if specs is None or not hasattr(specs, "what_if"):
        pytest.skip("hetsam.cost.specscale.what_if is not available yet (written by the foundation issue)")
    base = hetsam("--profile", profile_path, "--strategy", "sgd", "--descent-device", "cuda:0", "--no-jitter",
                  "--iterations", "20", "--json")
    swapped = hetsam("--profile", profile_path, "--strategy", "sgd", "--descent-device", "cuda:0", "--no-jitter",
                     "--iterations", "20", "--what-if", "cuda:0=H100", "--json")
    assert base.returncode == 0 and swapped.returncode == 0, swapped.stderr
    data = json.loads(swapped.stdout)
    assert data["what_if"] == {"cuda:0": "H100"}
    assert data["iteration_seconds"]["mean"] != json.loads(base.stdout)["iteration_seconds"]["mean"]
