"""``hetsam bench`` and :mod:`hetsam.bench` in a reduced form (tiny MLP, one or two rounds).

These check the bookkeeping (interleaving, medians, ratios, predictions from the simulator),
never a speed: speeds come from running the bench itself.
"""

import json
import os
import statistics

import pytest
from _profiles import synthetic_profile_dict

from hetsam.bench import Arrangement, default_arrangements, run_bench
from hetsam.cli.main import main
from hetsam.planning.plan import Plan
from hetsam.profiling.schema import Profile
from hetsam.simulator import typical_step

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@pytest.fixture
def toy_profile():
    return Profile.from_dict(synthetic_profile_dict())


def test_default_arrangements_are_the_issue_list():
    labels = [a.label for a in default_arrangements(64, pools=("cpu:0[0]", "cpu:0[1]"))]
    assert labels == ["sgd", "sam", "async_sam pools", "async_sam time-sliced", "sampa pools", "rst"]
    by = {a.label: a.plan for a in default_arrangements(64, pools=("cpu:0[0]", "cpu:0[1]"))}
    assert by["async_sam pools"].option("ascent_batch_size") == 16 and by["async_sam pools"].ascent_device == "cpu:0[1]"
    assert by["async_sam time-sliced"].effective_ascent_device == "cpu" and by["rst"].option("sam_probability") == 0.5
    assert [a.label for a in default_arrangements(64, pools=None)] == ["sgd", "sam", "async_sam time-sliced", "rst"]


def test_run_bench_interleaves_and_predicts(toy_profile):
    arrangements = default_arrangements(8)
    report = run_bench(arrangements, model="mlp", batch_size=8, steps=3, rounds=2, warmup=1, profile=toy_profile,
                       quiet_seconds=0.01, turn_warmup=1, min_seconds=0)
    data = report.to_dict()
    assert [r["label"] for r in data["results"]] == [a.label for a in arrangements]
    sgd = data["results"][0]["measured_iteration_seconds"]
    sam = data["results"][1]["measured_iteration_seconds"]
    for res, row in zip(report.results, data["results"]):
        assert len(res.step_seconds) == 6 and len(res.round_medians) == 2
        if row["strategy"] == "rst":  # (1 − p)·median(SGD steps) + p·median(SAM steps)
            sgd_steps = [t for t, k in zip(res.step_seconds, res.step_kinds) if k == "plain"]
            sam_steps = [t for t, k in zip(res.step_seconds, res.step_kinds) if k == "ascent"]
            assert len(sgd_steps) + len(sam_steps) == 6
            if sgd_steps and sam_steps:
                expected = 0.5 * statistics.median(sgd_steps) + 0.5 * statistics.median(sam_steps)
            else:
                expected = statistics.median(res.step_seconds)
            assert row["measured_iteration_seconds"] == pytest.approx(expected)
        else:
            assert res.step_kinds is None
            assert row["measured_iteration_seconds"] == statistics.median(res.step_seconds) > 0
        assert row["throughput_vs_sgd"] == pytest.approx(sgd / row["measured_iteration_seconds"])
        assert row["throughput_vs_sam"] == pytest.approx(sam / row["measured_iteration_seconds"])
        expected = typical_step(res.arrangement.plan, toy_profile, iterations=2000, seed=0).seconds
        assert row["predicted_iteration_seconds"] == pytest.approx(expected)
        assert row["relative_error"] == pytest.approx(row["measured_iteration_seconds"] / expected - 1)
        assert 0 <= row["descent_wait_seconds"] <= row["measured_iteration_seconds"] * 10
    modes = {r["label"]: r["executor_mode"] for r in data["results"]}
    assert modes["sgd"] is None and modes["async_sam time-sliced"] == "time-sliced"
    if TWO_CPUS:
        assert modes["async_sam pools"] == "worker" and modes["sampa pools"] == "worker"
    errors = [abs(r["relative_error"]) for r in data["results"]]
    base = next(r for r in data["results"] if r["label"] == "sgd")
    vs_sgd = [abs((1 + r["relative_error"]) / (1 + base["relative_error"]) - 1) for r in data["results"] if r is not base]
    assert [r["error_vs_sgd"] for r in data["results"] if r is not base] == pytest.approx(
        [(1 + r["relative_error"]) / (1 + base["relative_error"]) - 1 for r in data["results"] if r is not base])
    summary = data["simulator_error"]
    assert {k: summary[k] for k in ("median_abs", "max_abs", "vs_sgd_median_abs", "vs_sgd_max_abs")} == {
        "median_abs": pytest.approx(statistics.median(errors)), "max_abs": pytest.approx(max(errors)),
        "vs_sgd_median_abs": pytest.approx(statistics.median(vs_sgd)), "vs_sgd_max_abs": pytest.approx(max(vs_sgd))}
    # round by round: in round k, e_k = (m_k / m_k^SGD) / (predicted / predicted^SGD) - 1; two rounds give the
    # median of two and, at 90%, their range; judged only when that range is within +-5%
    sgd_rounds = report.result("sgd").round_medians
    for res, row in zip(report.results, data["results"]):
        if row is base:
            assert row["judged"] is None
            continue
        ratio = row["predicted_iteration_seconds"] / base["predicted_iteration_seconds"]
        mine = res.per_round()
        if res.step_kinds is None:
            assert mine == res.round_medians
        e = sorted((m / b) / ratio - 1 for m, b in zip(mine, sgd_rounds))
        assert row["error_vs_sgd_rounds"] == pytest.approx(statistics.median(e))
        assert row["error_vs_sgd_interval"] == pytest.approx(e)
        assert row["judged"] == ((e[1] - e[0]) / 2 <= 0.05)
        assert row["meets_goal"] == (abs(statistics.median(e)) <= 0.05 if row["judged"] else None)
    judged = [r for r in data["results"] if r["judged"]]
    assert summary["judged_rows"] == len(judged) and summary["goal"] == 0.05
    assert summary["unjudged_rows"] == sum(1 for r in data["results"] if r["judged"] is False)
    assert any("drifted since" in n for n in data["notes"]) == (abs(base["relative_error"]) > 0.05)


def test_cli_json_without_predictions(capsys):
    code = main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "1", "--rounds", "1", "--warmup", "0", "--min-seconds", "0",
                 "--no-predict", "--only", "sgd,async_sam time-sliced", "--system-malloc", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in data["results"]] == ["sgd", "async_sam"]
    for r in data["results"]:
        assert {"strategy", "plan", "measured_iteration_seconds", "descent_wait_seconds",
                "predicted_iteration_seconds", "relative_error"} <= set(r)
        assert r["predicted_iteration_seconds"] is None and Plan.from_dict(r["plan"]).strategy == r["strategy"]


def test_cli_text_with_a_profile_and_a_plan(tmp_path, capsys):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(synthetic_profile_dict()))
    plan = tmp_path / "plan.json"
    Plan("async_sam", descent_device="cpu", batch_size=8, options={"ascent_batch_size": 2}).save(plan)
    code = main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "1", "--rounds", "1", "--warmup", "0", "--min-seconds", "0",
                 "--profile", str(prof), "--plan", str(plan), "--only", "sgd,sam,plan", "--system-malloc"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "plan" in out and "simulator: median |error|" in out


@pytest.mark.parametrize("plan", [Plan("late_phase", descent_device="cpu", batch_size=8, options={"start": 0.5}),
                                  Plan("interval", descent_device="cpu", batch_size=8, options={"k": 2}),
                                  Plan("msam", descent_device="cpu", batch_size=8, options={"rho": 1.0})],
                         ids=lambda p: p.strategy)
def test_the_one_device_variants_bench_with_both_kinds_of_steps(tmp_path, capsys, plan):
    """Late-phase SAM's schedule spans the bench's own steps (its total), so it runs, like the others."""
    prof, path = tmp_path / "p.json", tmp_path / "plan.json"
    prof.write_text(json.dumps(synthetic_profile_dict()))
    plan.save(path)
    code = main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "4", "--rounds", "1", "--warmup", "0",
                 "--profile", str(prof), "--plan", str(path), "--only", "sgd,plan", "--system-malloc", "--json",
                 # no round measured again, no extra steps per turn: they would shift the schedule
                 "--max-other-load", "1", "--min-seconds", "0", "--turn-warmup", "0"])
    assert code == 0
    (result,) = [r for r in json.loads(capsys.readouterr().out)["results"] if r["label"] == "plan"]
    assert result["plan"]["strategy"] == plan.strategy and result["measured_iteration_seconds"] > 0
    if plan.spec.mixed_steps:  # late_phase: SGD for the first half of the 4 steps, then SAM; interval: every 2nd
        assert result["steps_by_kind"] == {"plain": 2, "ascent": 2}
    # more rounds (to measure for 50 ms) and untimed steps in each turn: the schedule still spans the timed steps
    assert main(["bench", "--model", "mlp", "--batch-size", "8", "--steps", "4", "--rounds", "1", "--warmup", "0",
                 "--profile", str(prof), "--plan", str(path), "--only", "plan", "--system-malloc", "--json",
                 "--max-other-load", "1", "--min-seconds", "0.05"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    if plan.spec.mixed_steps:
        kinds = result["steps_by_kind"]
        assert kinds["plain"] + kinds["ascent"] == result["steps"] and min(kinds.values()) >= 1


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "0"], "--steps"),
    (["--model", "vgg"], "unknown model"),
    (["--only", "bogus", "--no-predict"], "--only bogus"),
    (["--no-predict", "--profile", "x.json"], "cannot be combined"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, needle, capsys):
    assert main(["bench", "--model", "mlp", "--batch-size", "8", *argv] if "--model" not in argv else ["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_a_plan_for_another_batch_size_is_refused():
    with pytest.raises(ValueError, match="batch_size 64"):
        run_bench([Arrangement("x", Plan("sgd", batch_size=64))], model="mlp", batch_size=8, steps=1, rounds=1, warmup=0)


def test_retain_freed_memory_stops_most_page_faults_of_a_training_step():
    """In fresh processes: ResNet-20 forward+backward at b = 16 faults pages in on every step
    under glibc's defaults (freed activations go back to the kernel; 1322 to thousands a step
    on the CI machines), few once freed memory is retained. The claim is the ratio: the
    absolute count depends on the kernel and glibc's adaptive mmap threshold."""
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from hetsam.execution.allocator import apply_policy\n"
        "from hetsam.profiling.models import reference_model\n"
        "if sys.argv[1] == 'retain' and apply_policy() != 'retained': print('unsupported'); sys.exit()\n"
        "ref = reference_model('resnet20'); m = ref.build(); b = ref.sample_batch(16)\n"
        "for _ in range(2): ref.loss_fn(m, b).backward()\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(3): ref.loss_fn(m, b).backward()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3)\n"
    )
    out = {m: subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True, check=True).stdout.strip()
           for m in ("system", "retain")}
    if out["retain"] == "unsupported":
        pytest.skip("not glibc")
    assert float(out["system"]) > 300 and float(out["retain"]) < float(out["system"]) / 5, out


def test_a_round_disturbed_by_another_process_is_measured_again():
    import subprocess
    import sys
    import time

    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        # a round of about half a second: long against the 10 ms ticks of the CPU-time counters
        report = run_bench([Arrangement("sgd", Plan("sgd", batch_size=8))], model="mlp", batch_size=8, steps=600,
                           rounds=1, warmup=0, max_other_load=0.2, min_seconds=0)
    finally:
        hog.kill()
        hog.wait()
    assert any("measured again" in n for n in report.notes), report.notes
    assert len(report.results[0].step_seconds) == 600 and len(report.other_load) == 1


@pytest.mark.parametrize("rounds, step_seconds, floor, expected", [
    (5, [0.001, 0.002], 10.0, 334),  # 10 s over rounds of 10 steps of 3 ms: 334 rounds, capped at 200
    (5, [0.1, 0.2], 10.0, 5),  # 5 rounds of 3 s already last 10 s
    (5, [0.001], 0.0, 5),  # no floor
    (3, [0.01, 0.01], 1.0, 5),
])
def test_short_steps_get_more_rounds_not_longer_turns(rounds, step_seconds, floor, expected):
    from hetsam import defaults as D
    from hetsam.bench.runner import _rounds_for

    assert _rounds_for(rounds, 10, step_seconds, floor) == min(expected, max(rounds, D.BENCH_MAX_AUTO_ROUNDS))


def test_run_bench_adds_rounds_and_says_so(toy_profile):
    one = [Arrangement("sgd", Plan("sgd", batch_size=8))]
    report = run_bench(one, model="mlp", batch_size=8, steps=1, rounds=2, warmup=1, profile=toy_profile, min_seconds=1e-9)
    assert len(report.results[0].step_seconds) == 2 and report.rounds == 2  # two rounds already last 1 ns
    report = run_bench(one, model="mlp", batch_size=8, steps=2, rounds=2, warmup=1, profile=toy_profile, min_seconds=0.05)
    res = report.results[0]
    assert len(res.round_medians) == report.rounds >= 2 and len(res.step_seconds) == 2 * report.rounds
    assert report.rounds == 2 or any(f"{report.rounds} rounds instead of 2" in n for n in report.notes)
    for bad in ({"min_seconds": -1.0}, {"min_seconds": float("nan")}, {"turn_warmup": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            run_bench(one, model="mlp", batch_size=8, **bad)


def test_the_text_report_summarises_many_rounds_of_load(toy_profile):
    from dataclasses import replace

    from hetsam.bench import format_report

    report = run_bench([Arrangement("sgd", Plan("sgd", batch_size=8))], model="mlp", batch_size=8, steps=1, rounds=2,
                       warmup=0, profile=toy_profile, min_seconds=0)
    few = format_report(replace(report, other_load=[0.0, 0.04]))
    assert "per round: 0%, 4%" in few
    many = format_report(replace(report, other_load=[0.0] * 30 + [0.09]))
    assert "median 0%, most 9% over 31 rounds" in many


def test_plans_on_pools_carry_the_stated_uncertainty_and_the_report_checks_it():
    # hetsam plan shows ± (the profile's worst pool/socket deviation) on a plan on pools compared with SGD
    # on the socket; the bench carries that ± and says whether each error's interval reaches into it
    from hetsam.bench.report import format_report
    from hetsam.bench.results import BenchReport, BenchResult
    from hetsam.bench.runner import _state_margins
    from hetsam.cost.model import CostModel

    data = synthetic_profile_dict()
    data["provenance"]["ratio_repeatability"] = {"rounds": 4, "pool_ratio": {"median_deviation": 0.05,
                                                                             "max_deviation": 0.12}}
    arrangements = {a.label: a for a in default_arrangements(64, pools=("cpu:0[0]", "cpu:0[1]"))}

    def result(label, rounds, predicted):
        return BenchResult(arrangements[label], [t for t in rounds for _ in range(3)], None, list(rounds), 0.0, 0.0, 0.0,
                           None, {"iteration_seconds": predicted, "descent_wait_per_iteration": 0.0})

    sgd = result("sgd", [1.0, 1.0, 1.0], 1.0)
    near = result("async_sam pools", [1.5, 1.6, 1.55], 1.4)  # +7% to +14%: reaches into ±12%
    far = result("sampa pools", [2.0, 2.1, 2.05], 1.6)  # +25% to +31%: beyond it
    sliced = result("async_sam time-sliced", [1.9, 1.9, 1.9], 1.9)  # the socket against the socket: no ±
    results = [sgd, near, far, sliced]
    _state_margins(results, CostModel(Profile.from_dict(data)))
    assert (sgd.stated, near.stated, far.stated, sliced.stated) == (None, 0.12, 0.12, None)
    report = BenchReport(results, "mlp", 64, 3, 3, [])
    rows = {r["label"]: r for r in report.to_dict()["results"]}
    assert rows["async_sam pools"]["within_stated"] is True and rows["sampa pools"]["within_stated"] is False
    assert rows["async_sam time-sliced"]["within_stated"] is None and rows["sgd"]["stated_uncertainty_vs_sgd"] is None
    summary = report.to_dict()["simulator_error"]
    assert (summary["stated_rows"], summary["within_stated_rows"]) == (2, 1)
    text = format_report(report)
    assert "(stated ±12.0%)" in text and "reached into it for 1 of 2 row(s)" in text
    del data["provenance"]["ratio_repeatability"]  # not measured: nothing stated
    _state_margins(results, CostModel(Profile.from_dict(data)))
    assert all(r.stated is None for r in results)


def test_the_drift_note_says_what_the_ratio_to_sgd_leaves_in():
    # SGD off the profile by more than 5%: a note with the profile's age, saying that the ratios to SGD
    # remove only a drift common to every device; within 5%, no note
    import datetime

    from hetsam.bench.results import BenchResult
    from hetsam.bench.runner import _drift_note

    sgd = default_arrangements(64, pools=("cpu:0[0]", "cpu:0[1]"))[0]

    def result(measured, predicted):
        return BenchResult(sgd, [measured] * 3, None, [measured], 0.0, 0.0, 0.0, None,
                           {"iteration_seconds": predicted, "descent_wait_per_iteration": 0.0})

    data = synthetic_profile_dict()
    data["provenance"]["date"] = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).isoformat()
    prof = Profile.from_dict(data)
    (note,) = _drift_note([result(1.25, 1.0)], prof)
    assert note.startswith("SGD ran 25% slower than the profile predicts (profiled 1 minute ago)")
    assert "not one between a pool and its socket" in note
    assert "faster" in _drift_note([result(0.8, 1.0)], prof)[0]
    assert _drift_note([result(1.04, 1.0)], prof) == []
