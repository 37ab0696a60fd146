"""What a new user sees: notes collapsed once per pattern, a profile's warnings said once with the
way to measure again, and ``hetsam simulate``'s strategy comparison at the planner's own settings,
ranked by its objective. Real code throughout: the bundled profiles, the planner, the simulator,
the cache on a private folder, the CLI in subprocesses."""

import json
import subprocess
import sys

import pytest
from _profiles import synthetic_profile_dict

from hetsam._notes import collapse, collapsed_texts, note_lines
from hetsam.cost.model import CostModel
from hetsam.planning.compare import compare_strategies, planner_report, ranked
from hetsam.planning.plan import Plan
from hetsam.profiling.cache import warning_lines
from hetsam.profiling.schema import Profile

BUSY = "cpu:0: wide spread (IQR/median) at batch 16 (41%): the machine may be busy; re-profile when it is quiet"
BUSY_POOL = "cpu:0[0]: wide spread (IQR/median) at batch 16 (38%): the machine may be busy; re-profile when it is quiet"
LOADED = "other processes were running (see load_average): timings may be inflated"
SKIPPED = "cpu:0[0]: skipped batch size(s) 64 (time budget)"
INFO = ["gpu: NVML could not collect (NVML Shared Library Not Found)",
        "contention cpu:0[0]+cpu:0[1] at batch 64: raw slowdowns 1.652, 1.263 (5/5 overlapping steps in 2 rounds)"]


def hetsam(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "hetsam", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def busy_profile_dict(gpu: bool = True) -> dict:
    data = synthetic_profile_dict()
    data["provenance"] = {"kind": "measured", "notes": " | ".join([INFO[0], BUSY, BUSY_POOL, LOADED, SKIPPED, INFO[1]])}
    if not gpu:
        data["devices"] = [d for d in data["devices"] if d["kind"] == "cpu"]
        data["links"] = [link for link in data["links"] if "cuda:0" not in (link["src"], link["dst"])]
    return data


# ---- one helper for repeated notes ---------------------------------------------------------------
AMDAHL = [f"cpu:0[{pool}]: Amdahl from cpu:0[0] and cpu:0" for pool in
          ("0-3", "0-6", "0-13", "0-20", "0-27", "0-34", "0-41", "0-48", "0-51",
           "4-55", "7-55", "14-55", "21-55", "28-55", "35-55", "42-55", "49-55", "52-55")]


def test_eighteen_notes_of_one_pattern_print_once_with_a_count():
    lines = note_lines(AMDAHL)
    assert lines == ["note: cpu:0[0-3], cpu:0[0-6], …, cpu:0[52-55]: Amdahl from cpu:0[0] and cpu:0 (×18)"]
    (group,) = collapse(AMDAHL)
    assert group.count == 18 and group.to_dict()["notes"] == AMDAHL  # nothing is lost for JSON


def test_identical_notes_and_notes_of_other_patterns():
    notes = ["x is slow", "cpu:0[1]: same core count as measured cpu:0[0]", "x is slow", BUSY, BUSY_POOL, "x is slow"]
    assert collapsed_texts(notes) == [
        "x is slow (×3)",
        "cpu:0[1]: same core count as measured cpu:0[0]",  # one of its kind: as it is
        # two parts vary in two notes: each lists its values note by note, nothing elided
        "cpu:0, cpu:0[0]: wide spread (IQR/median) at batch 16 (41, 38%): the machine may be busy; re-profile when "
        "it is quiet (×2)",
    ]
    many = [BUSY.replace("41", str(40 + k)).replace("16", str(8 * k)) for k in range(1, 5)]
    assert collapsed_texts(many) == [
        "cpu:0: wide spread (IQR/median) at batch … (…%): the machine may be busy; re-profile when it is quiet (×4)"]
    assert collapsed_texts([]) == [] and note_lines(["a"], prefix="- ") == ["- a"]


def test_simulate_prints_no_note_about_devices_the_plan_does_not_use():
    """The planner's run derives 18 pools on the shared cost model; the simulation reports only its own."""
    proc = hetsam("simulate", "--profile", "h100-xeon", "--strategy", "async_sam", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    used = {data["plan"]["descent_device"], data["plan"]["ascent_device"]}
    assert all(n.split(":", 2)[0] + ":" + n.split(":", 2)[1] in used or "Amdahl" not in n for n in data["notes"])
    assert sum("Amdahl" in n for n in data["notes"]) <= 2
    text = hetsam("simulate", "--profile", "h100-xeon", "--strategy", "async_sam").stdout
    assert text.count("Amdahl") <= 2 and text.count("note:") <= 3


def test_simulate_text_collapses_the_notes_it_is_given():
    from hetsam.cli.simulate import format_result
    from hetsam.profiling.schema import load_profile
    from hetsam.simulator import simulate

    profile = load_profile("cpu-2core-resnet20")
    result = simulate(Plan("sgd", "cpu:0"), CostModel(profile), iterations=30)
    text = format_result(result, profile, {}, notes=AMDAHL + ["cpu:0 and cpu:0[0] share cores"])
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    assert notes == ["note: cpu:0[0-3], cpu:0[0-6], …, cpu:0[52-55]: Amdahl from cpu:0[0] and cpu:0 (×18)",
                     "note: cpu:0 and cpu:0[0] share cores"]


# ---- a profile's warnings ----------------------------------------------------------------------
def test_profile_warnings_are_the_notes_that_measuring_again_can_fix():
    profile = Profile.from_dict(busy_profile_dict(), "busy.json")
    assert profile.warnings == (BUSY, BUSY_POOL, LOADED, SKIPPED)
    assert Profile.from_dict(synthetic_profile_dict()).warnings == ()
    lines = warning_lines(profile)
    assert len(lines) == 2
    assert "4 warning(s)" in lines[0] and "(×2)" in lines[0] and "skipped batch size(s) 64" in lines[0]
    assert "NVML" not in lines[0] and "contention" not in lines[0]
    assert "busy.json" in lines[1] and "hetsam profile" in lines[1]
    cached = warning_lines(profile, cached_at="/c/profile-x.json", refresh_hint="hetsam plan --refresh-profile")
    assert "cached at /c/profile-x.json" in cached[1] and cached[1].endswith("hetsam plan --refresh-profile")
    assert "reused" in cached[1] and "cached profile" in cached[0]
    fresh = warning_lines(profile, cached_at="/c/profile-x.json", refresh_hint="hetsam plan --refresh-profile",
                          just_measured=True)  # measured in this run: never said to be reused
    assert "just measured" in fresh[0] and "reused" not in fresh[1] and "cached at /c/profile-x.json" in fresh[1]
    assert warning_lines(Profile.from_dict(synthetic_profile_dict())) == []


def test_simulate_says_a_loaded_profiles_warnings_once(tmp_path):
    path = tmp_path / "busy.json"
    path.write_text(json.dumps(busy_profile_dict()))
    proc = hetsam("simulate", "--profile", str(path), "--strategy", "sgd", "--iterations", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["profile_warnings"] == [BUSY, BUSY_POOL, LOADED, SKIPPED]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 2 and "4 warning(s)" in err[0] and str(path) in err[1]
    quiet = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "sgd", "--iterations", "30")
    assert quiet.returncode == 0 and quiet.stderr == ""  # the bundled profile's notes are information


def test_plan_says_a_loaded_profiles_warnings_once(tmp_path):
    path = tmp_path / "busy.json"
    path.write_text(json.dumps(busy_profile_dict()))
    proc = hetsam("plan", "--profile", str(path), "--no-simulate")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 2 and "4 warning(s)" in err[0] and str(path) in err[1]
    assert "chosen:" in proc.stdout


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(folder))
    return folder


def test_plan_says_the_cached_profiles_warnings_and_how_to_measure_again(private_cache):
    from hetsam.profiling.cache import cache_key
    from hetsam.profiling.models import reference_model

    ref = reference_model("mlp")
    entry = private_cache / f"profile-{cache_key(ref.build(), ref.sample_batch(16))}.json"
    entry.write_text(json.dumps(busy_profile_dict()))
    proc = hetsam("plan", "--model", "mlp", "--batch-size", "16", "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # stdout stays JSON
    err = [line for line in proc.stderr.splitlines() if "warning(s)" in line or "cached at" in line]
    assert len(err) == 2, proc.stderr
    assert "the machine may be busy" in err[0] and "(×2)" in err[0]
    assert str(entry) in err[1] and "hetsam plan --model mlp --batch-size 16 --refresh-profile" in err[1]


def test_autosam_logs_the_cached_profiles_warnings(private_cache):
    import torch
    from _alg_refs import batches, loss_fn, mlp

    from hetsam import AutoSAM
    from hetsam.profiling.cache import cache_key

    data = batches(3)
    devices = ["cpu:0", "cpu:0[0]"]
    entry = private_cache / f"profile-{cache_key(mlp(), data[0], devices=devices)}.json"
    entry.write_text(json.dumps(busy_profile_dict(gpu=False)))
    lines = []
    options = {"progress": False, "devices": devices, "strategies": ["rst"]}
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, planner_options=options, log=lines.append, lr=0.05) as opt:
        for batch in opt.prefetch(data):
            opt.step(batch)
    assert not any("profiled this machine" in line for line in lines), lines  # the planted entry was used
    warned = [line for line in lines if "warning(s)" in line]
    assert len(warned) == 1 and "the machine may be busy" in warned[0]
    (where,) = [line for line in lines if "cached at" in line]
    assert str(entry) in where and "delete that file" in where


def test_bench_says_a_loaded_profiles_warnings(tmp_path, capsys):
    from hetsam.cli.main import main

    path = tmp_path / "busy.json"
    path.write_text(json.dumps(busy_profile_dict()))
    code = main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "1", "--rounds", "1", "--warmup", "0", "--min-seconds", "0",
                 "--profile", str(path), "--only", "sgd", "--system-malloc", "--max-other-load", "1", "--json"])
    assert code == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["profile_warnings"] == [BUSY, BUSY_POOL, LOADED, SKIPPED]
    assert sum("warning(s)" in line for line in out.err.splitlines()) == 1


# ---- the strategy comparison ------------------------------------------------------------------
@pytest.fixture(scope="module")
def cm():
    return CostModel("cpu-2core-resnet20")


def test_every_row_runs_at_the_planners_settings(cm):
    report = planner_report(cm)
    given = Plan("msam", "cpu:0", options={"rho": 0.3})  # the radius that used to look free
    rows = compare_strategies(given, cm, iterations=300, report=report)
    assert [r.plan.strategy for r in rows[:2]] == ["sgd", "sam"]
    others = [r for r in rows if not r.is_given]
    assert {r.plan.strategy for r in others} == {c.plan.strategy for c in report.candidates}
    for r in others:
        best = report.best_of(r.plan.strategy)
        assert r.plan == best.plan and r.share == best.share and r.fits_budget == best.fits_budget
        assert r.objective_value == best.objective_value
    (mine,) = [r for r in rows if r.is_given]
    assert mine.plan.options == {"rho": 0.3} and mine.share.cell() != "-"
    (msam,) = [r for r in others if r.plan.strategy == "msam"]
    assert msam.plan.options == report.best_of("msam").plan.options != {"rho": 0.3}
    assert sum(r.is_choice for r in rows) == 1


def test_rows_are_ranked_by_the_objective_within_the_budget_first(cm):
    report = planner_report(cm)
    rows = ranked(compare_strategies(report.best_of("async_sam").plan, cm, iterations=300, report=report))
    assert [r.rank for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].is_choice and rows[0].plan == report.plan
    fits = [r.fits_budget for r in rows[1:]]
    assert fits == sorted(fits, reverse=True)  # within the budget first
    for group in (True, False):
        values = [r.objective_value for r in rows[1:] if r.fits_budget == group]
        assert values == sorted(values, reverse=True)
    by_time = sorted(rows, key=lambda r: r.iteration_seconds)
    assert [r.rank for r in by_time] != [r.rank for r in rows]  # not time alone


def test_a_larger_budget_admits_more_rows(cm):
    narrow = {r.plan.strategy for r in compare_strategies(Plan("sgd", "cpu:0"), cm, iterations=300,
                                                          planner={"budget": 1.05}) if r.fits_budget}
    wide = {r.plan.strategy for r in compare_strategies(Plan("sgd", "cpu:0"), cm, iterations=300,
                                                        planner={"budget": 1.5}) if r.fits_budget}
    assert narrow < wide and "async_sam" in wide - narrow


def test_simulate_compare_text_and_json():
    proc = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "msam", "--option", "rho=0.3",
                  "--compare", "--iterations", "200")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout[proc.stdout.index("strategies at the planner's settings"):].splitlines()
    assert "share of SAM's gain" in table[1] and "budget" in table[1]
    first = table[2].split()
    assert first[0] == "1" and "the planner's choice" in table[2] and "%" in table[2] and "[" in table[2]
    assert sum("<- this plan" in line for line in table) == 1 and any("rho=0.3" in line for line in table)
    proc = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "async_sam", "--compare",
                  "--budget", "1.2", "--iterations", "200", "--json")
    data = json.loads(proc.stdout)
    assert data["comparison_planner"]["budget"] == 1.2
    rows = data["comparison"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1)) and rows[0]["is_choice"]
    assert all(r["share_cell"] and "share_interval" in r["share"] for r in rows)
    assert data["planner_chose"]  # the numbers left out are the planner's, from the same run


def test_planner_chose_names_a_strategys_own_options():
    proc = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "msam", "--iterations", "30", "--json")
    data = json.loads(proc.stdout)
    assert data["planner_chose"]["options"] == data["plan"]["options"] and data["plan"]["options"]
    text = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "msam", "--iterations", "30").stdout
    assert "--option rho=" in text.splitlines()[1]


def test_the_plots_labels_carry_the_share(cm, tmp_path):
    pytest.importorskip("matplotlib")
    from hetsam.simulator import simulate
    from hetsam.simulator.plot import bar_labels, plot_simulation

    report = planner_report(cm)
    rows = ranked(compare_strategies(report.plan, cm, iterations=300, report=report))
    labels = bar_labels(rows)
    assert labels[0].startswith("1. ") and "planner's choice" in labels[0] and "this plan" in labels[0]
    assert all(f"share {r.share_cell()}" in label for r, label in zip(rows, labels))
    out = tmp_path / "p.png"
    plot_simulation(simulate(report.plan, cm, iterations=50), rows, out, budget=report.budget)
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,words", [
    (["--budget", "0.5"], ["--budget"]),
    (["--shares", "missing-study.json"], ["missing-study.json"]),
])
def test_bad_planner_flags_exit_2_with_one_line(args, words):
    proc = hetsam("simulate", "--profile", "cpu-2core-resnet20", "--strategy", "sgd", "--compare", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert all(w in line for w in words)


def test_notes_from_a_file_cannot_drive_the_terminal():
    from hetsam._notes import note_lines

    (line,) = note_lines(["busy \x1b[2J\x1b[31mred\nsecond line" + "x" * 1000])
    assert "\x1b" not in line and "\n" not in line and "\\x1b[2J" in line and len(line) < 520
