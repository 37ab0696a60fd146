"""The hostile-input cases: each one failed once (a traceback, a hang, a damaged file, gigabytes of
memory) and must now end in one line (exit code 2 on the command line), without doing the work
asked for, with every file as it was. A subprocess's timeout only turns a hang into a failure: no
test here claims a speed."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch
from _alg_refs import loss_fn, mlp
from _profiles import synthetic_profile_dict

from hetsam import AutoSAM, HetsamInputError, Plan, WorkerFailure
from hetsam.cli import main
from hetsam.profiling.schema import Profile

PROFILE = "cpu-2core-resnet20"


def cli(*args, limit_bytes=None, timeout=120):
    """Run ``hetsam`` in a subprocess (optionally under a file-size limit); ``timeout`` is a hang guard."""
    def pre():
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises, not kills
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "hetsam", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=pre)


def assert_one_line(proc, code=2):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- 1, 2: nothing is overwritten in place -----------------------------------------------------------
def test_a_failed_plan_write_leaves_the_previous_file(tmp_path):
    out = tmp_path / "plan.json"
    assert cli("plan", "--profile", PROFILE, "--out", out).returncode == 0
    before = out.read_text()
    proc = cli("plan", "--profile", PROFILE, "--budget", "1.2", "--out", out, limit_bytes=100)
    assert_one_line(proc)
    assert "cannot write" in proc.stderr and out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]  # no temporary file left


@pytest.mark.parametrize("flag, name", [("--trace", "t.json"), ("--plot", "p.png")])
def test_failed_trace_and_plot_writes_leave_the_previous_file(tmp_path, flag, name):
    out = tmp_path / name
    out.write_bytes(b"previous")
    proc = cli("simulate", "--profile", PROFILE, "--strategy", "sam", flag, out, limit_bytes=200)
    assert_one_line(proc)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_atomic_writer_cleans_up_on_every_failure(tmp_path, monkeypatch):
    from hetsam import io

    target = tmp_path / "x.json"
    target.write_text("old")

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(HetsamInputError, match="No space left.*unchanged"):
        io.write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_profile_that_cannot_be_written_is_kept_elsewhere(tmp_path, monkeypatch, capsys):
    from hetsam import io

    real, calls = io.write_text, []

    def first_fails(path, text, what="output"):
        calls.append(str(path))
        if len(calls) == 1:
            raise HetsamInputError(f"cannot write {what} {str(path)!r}: No space left on device")
        return real(path, text, what)

    monkeypatch.setattr(io, "write_text", first_fails)
    code = main(["profile", "--model", "mlp", "--batch-size", "8", "--ladder", "8", "--devices", "cpu:0", "--no-contention",
                 "--repeats", "2", "--budget-seconds", "5", "--quiet", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and "saved to" in err and len(err.strip().splitlines()) == 1
    spare = err.split("saved to ")[1].split()[0]
    assert Profile.from_json(Path(spare).read_text()).devices[0].id == "cpu:0"
    os.remove(spare)


def test_a_failed_fallback_save_leaves_no_empty_profile_behind(tmp_path, monkeypatch, capsys):
    import tempfile

    from hetsam import io

    def always_fails(path, text, what="output"):
        raise HetsamInputError(f"cannot write {what} {str(path)!r}: No space left on device")

    monkeypatch.setattr(io, "write_text", always_fails)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the fallback goes
    code = main(["profile", "--model", "mlp", "--batch-size", "8", "--ladder", "8", "--devices", "cpu:0", "--no-contention",
                 "--repeats", "2", "--budget-seconds", "5", "--quiet", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "No space left" in err
    assert not list(tmp_path.glob("hetsam-profile-*"))


# ---- 3: malformed input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [
    b"[" * 100_000,  # nested 100,000 deep
    b"\xff\xfe not utf-8",
    b'{"schema_version": ' + b"9" * 400 + b"}",
    b'{"schema_version": ' + b"9" * 5000 + b"}",
    b'{"schema_version": NaN}',
], ids=["deep", "not-utf8", "400-digits", "5000-digits", "nan"])
@pytest.mark.parametrize("command", ["plan", "simulate", "bench"])
def test_malformed_files_are_one_line(tmp_path, content, command):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    args = {"plan": ["plan", "--profile", bad], "simulate": ["simulate", "--profile", bad, "--strategy", "sgd"],
            "bench": ["bench", "--plan", bad, "--no-predict"]}[command]
    assert_one_line(cli(*args))


@pytest.mark.parametrize("value", [1e-300, 1e300])
def test_absurd_medians_are_refused_before_any_arithmetic(value):
    data = synthetic_profile_dict()
    data["devices"][0]["grad_seconds"]["median"][0] = value
    with pytest.raises(HetsamInputError, match="outside the range"):
        Profile.from_dict(data)


def test_special_files_are_refused_without_reading_them(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for args in (["plan", "--profile", fifo], ["simulate", "--profile", "/dev/zero", "--strategy", "sgd"],
                 ["simulate", "--profile", PROFILE, "--plan", fifo]):
        proc = cli(*args, timeout=20)
        assert_one_line(proc)
        assert "not a regular file" in proc.stderr


def test_a_fifo_in_the_cache_is_skipped(tmp_path):
    from hetsam.profiling.cache import _read_cached

    fifo = tmp_path / "profile-abc.json"
    os.mkfifo(fifo)
    lines = []
    assert _read_cached(fifo, lines.append) is None and "unusable" in lines[0]


@pytest.mark.parametrize("command", ["profile", "bench"])
def test_a_huge_batch_size_is_refused_before_allocating(command, tmp_path):
    args = ["profile", "--out", tmp_path / "p.json"] if command == "profile" else ["bench", "--no-predict"]
    proc = cli(*args, "--batch-size", "1000000000000")
    assert_one_line(proc)
    assert "batch" in proc.stderr


@pytest.mark.parametrize("name", ["x.json", "x.xyz", "noextension"])
def test_plot_formats_are_checked_up_front(tmp_path, name):
    proc = cli("simulate", "--profile", PROFILE, "--strategy", "sam", "--plot", tmp_path / name)
    assert_one_line(proc)
    assert not list(tmp_path.iterdir())


def test_plot_writes_exactly_the_path_given(tmp_path):
    assert cli("simulate", "--profile", PROFILE, "--strategy", "sgd", "--plot", tmp_path / "p.svg").returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.svg"]


def test_plot_to_a_device_file_is_refused_and_writes_nothing_beside_it():
    before = set(os.listdir("/dev"))
    proc = cli("simulate", "--profile", PROFILE, "--strategy", "sgd", "--plot", "/dev/full")
    assert_one_line(proc)
    assert set(os.listdir("/dev")) == before


# ---- 4: staleness is bounded --------------------------------------------------------------------------------
def test_staleness_is_bounded_everywhere(tmp_path):
    for args in (["simulate", "--profile", PROFILE, "--strategy", "async_sam", "--staleness", "1000000000"],
                 ["plan", "--profile", PROFILE, "--max-staleness", "100000"]):
        assert_one_line(cli(*args))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"strategy": "async_sam", "staleness": 10**9}))
    proc = cli("bench", "--plan", plan, "--no-predict")
    assert_one_line(proc)
    with pytest.raises(HetsamInputError, match="staleness"):
        AutoSAM(mlp(), loss_fn, plan=Plan("async_sam", options={"staleness": 1000}), lr=0.1)


# ---- 5: pool names are checked arithmetically -------------------------------------------------------------
def test_huge_pool_ranges_are_refused_without_expanding_them(tmp_path):
    tracemalloc.start()
    with pytest.raises(HetsamInputError):
        Plan("sam", descent_device="cpu:0[0-9999999]")
    data = synthetic_profile_dict()
    data["devices"][1]["id"] = "cpu:0[0-99999999]"
    with pytest.raises(HetsamInputError):
        Profile.from_dict(data)
    data = synthetic_profile_dict()
    data["devices"][0]["cores"] = 10**7
    with pytest.raises(HetsamInputError, match="cores"):
        Profile.from_dict(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # a list of 10^7 core numbers alone would take hundreds of MB
    proc = cli("profile", "--out", tmp_path / "p.json", "--devices", "cpu:0[0-99999999]")
    assert_one_line(proc)


def test_pool_names_are_canonical_and_ascii():
    assert Plan("sgd", descent_device="cpu:0[1,1]").descent_device == "cpu:0[1]"
    with pytest.raises(HetsamInputError):
        Plan("sgd", descent_device="cpu:٠")


# ---- 8, 9: plans cannot be bypassed; a GPU this torch cannot use ------------------------------------------
def test_a_tampered_plan_is_refused_by_autosam_and_the_simulator():
    plan = Plan("async_sam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.strategy = "bogus"
    object.__setattr__(plan, "options", {**plan.options, "staleness": -5})
    with pytest.raises(HetsamInputError, match="staleness"):
        AutoSAM(mlp(), loss_fn, plan=plan, lr=0.1)
    from hetsam.simulator import simulate

    with pytest.raises(HetsamInputError, match="staleness"):
        simulate(plan, Profile.from_dict(synthetic_profile_dict()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only torch")
def test_a_cuda_ascent_device_on_cpu_only_torch_is_one_line():
    with pytest.raises(HetsamInputError, match="ascent_device.*no usable CUDA"):
        AutoSAM(mlp(), loss_fn, plan=Plan("async_sam", ascent_device="cuda:0"), lr=0.1)


# ---- 10, 11: network numbers; the reserve message ----------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["plan", "--profile", "h100-xeon", "--nodes", "4", "--bucket-cap-mb", "1e-300"],
    ["simulate", "--profile", "h100-xeon", "--strategy", "sgd", "--nodes", "4", "--bucket-cap-mb", "1e-5"],
    ["simulate", "--profile", PROFILE, "--strategy", "sgd", "--iterations", str(10**15), "--no-steady-state"],
])
def test_extreme_network_and_iteration_numbers_are_refused(args):
    assert_one_line(cli(*args))  # 10^15 simulated iterations would never end: refused, not run


def test_long_simulations_stream_in_constant_memory():
    from hetsam.simulator import simulate

    cm = Profile.from_dict(synthetic_profile_dict())
    tracemalloc.start()
    r = simulate(Plan("sgd", "cpu:0", batch_size=64), cm, iterations=150_000, steady_state=False, timeline_iterations=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r.simulated_iterations == 150_000 and peak < 16 * 2**20  # the reservoir keeps ≤100k step times; nothing else grows with T


def test_no_reserve_mentioned_when_none_was_given():
    proc = cli("plan", "--profile", PROFILE, "--devices-per-node", "8")
    if proc.returncode == 2:
        assert "reserv" not in proc.stderr


# ---- 12: a stuck ascent job -----------------------------------------------------------------------------------
def stuck_on_worker(release: threading.Event, finished: threading.Event):
    """A loss that blocks on the ascent worker until ``release``, then sets ``finished``."""
    def loss(model, batch):
        if threading.current_thread().name.startswith("hetsam-ascent"):
            release.wait(120)
            finished.set()
        return loss_fn(model, batch)

    return loss


@pytest.mark.filterwarnings("ignore:hetsam")
@pytest.mark.parametrize("policy", ["raise", "degrade"])
def test_a_stuck_ascent_job_is_a_failure_after_ascent_timeout(policy):
    from _alg_refs import batches

    from hetsam.execution.threads import ThreadedExecutor

    release, finished = threading.Event(), threading.Event()
    before = set(threading.enumerate())
    opt = AutoSAM(mlp(), stuck_on_worker(release, finished), plan=Plan("async_sam", options={"ascent_batch_size": 8}),
                  executor=ThreadedExecutor(share="concurrent"), on_worker_failure=policy, ascent_timeout=0.5, lr=0.1)
    workers = [t for t in threading.enumerate() if t not in before and t.name.startswith("hetsam-ascent")]
    data = batches(4)
    try:
        if policy == "raise":
            with pytest.raises(WorkerFailure, match="ascent_timeout"):
                for batch in opt.prefetch(data):
                    opt.step(batch)
        else:
            for batch in opt.prefetch(data):
                opt.step(batch)
            assert opt.stats()["executor"]["mode"] == "degraded"
        opt.close()  # returns although the job is still blocked on its daemon thread
        # neither the steps nor close() waited for the stuck job: it has not finished (an order, not a time)
        assert not finished.is_set() and len(workers) == 1 and workers[0].is_alive()
    finally:
        release.set()  # the stuck job ends; its thread, stopped by close(), ends with it (none outlives the test)
    workers[0].join(60)
    assert finished.is_set() and not workers[0].is_alive()


# ---- 13: smaller defects ----------------------------------------------------------------------------------------
def test_an_empty_batch_is_an_error_not_a_nan():
    with AutoSAM(mlp(), loss_fn, plan="sgd", lr=0.1) as opt:
        with pytest.raises(HetsamInputError, match="0 samples"):
            opt.step((torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)))


def test_json_errors_read_well_and_plans_write_strict_json(tmp_path):
    with pytest.raises(HetsamInputError) as err:
        Plan.from_json('{"strategy": ')
    assert "at at" not in str(err.value)
    assert "NaN" not in Plan("sampa", options={"sampa_lambda": 0.5}).to_json()
    with pytest.raises(HetsamInputError):  # refused at construction, not later at to_json
        Plan("async_sam", options={"x": object()})


def test_internal_errors_are_one_line_with_the_traceback_saved(monkeypatch, capsys):
    import hetsam.cli.devices as devices

    monkeypatch.setattr(devices, "run", lambda args: {}["boom"])
    assert main(["devices"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bug" in err
    path = err.rsplit(" ", 1)[-1]
    assert "KeyError" in Path(path).read_text()
    os.remove(path)


# ---- 14: one measurement per cold cache entry ---------------------------------------------------------------------
WORKER = """
import sys, torch
sys.path.insert(0, {tests!r})
from _alg_refs import loss_fn, mlp, batches
from hetsam.profiling.cache import cached_profile
lines = []
cached_profile(mlp(), loss_fn, batches(1)[0], devices=["cpu:0"], batch_sizes=[16], budget_seconds=3, progress=False,
               log=lines.append)
print("|".join(lines))
"""


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
def test_two_processes_measure_a_cold_cache_entry_once(tmp_path):
    script = tmp_path / "w.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, HETSAM_CACHE_DIR=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    measured = sum("profiled this machine" in o for o in outs)
    reused = sum("using the cached profile" in o for o in outs)
    assert measured == 1 and reused == 1, outs


def test_writes_go_through_a_symlink_and_keep_the_old_mode_or_follow_the_umask(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    from hetsam.io import write_text

    real = tmp_path / "real.json"
    real.write_text("{}")
    os.chmod(real, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    out = subprocess.run([sys.executable, "-m", "hetsam", "plan", "--profile", "cpu-2core-resnet20", "--no-simulate",
                          "--out", str(link)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert link.is_symlink() and '"strategy"' in real.read_text()  # the link stays, its target is written
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the old file's mode
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640  # 0o666 under umask 027
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "target.json")
    write_text(dangling, "{}")
    assert dangling.is_symlink() and (tmp_path / "target.json").read_text() == "{}"
