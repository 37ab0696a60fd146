"""Every example runs, in a reduced form."""

import copy
import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from hetsam import Plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accuracy_benchmark_reduced(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("mnist1d")
    accuracy = load_example("accuracy")
    out = tmp_path / "acc.json"
    assert accuracy.main(["--seeds", "2", "--epochs", "1", "--train-subset", "192", "--planner-profile", "",
                          "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    printed = capsys.readouterr().out
    for task in ("digits", "mnist1d"):
        rows = {r["strategy"]: r for r in data["tasks"][task]["summary"]}
        assert set(rows) >= {"sgd", "sam", "async lookahead b'=b", "async lookahead b'=b/4",
                             "async independent b'=b/4 (paper)", "sampa-0.2", "rst p=0.5"}
        for r in rows.values():
            assert 0.0 <= r["final_test_mean"] <= 1.0 and r["seconds_mean"] > 0
        assert rows["sgd"]["diff_vs_sgd_mean"] == 0.0
        # paired differences are computed per seed against the SGD run of that seed
        runs = data["tasks"][task]["runs"]
        diffs = [a["final_test"] - b["final_test"] for a, b in zip(runs["sam"], runs["sgd"])]
        assert math.isclose(rows["sam"]["diff_vs_sgd_mean"], sum(diffs) / len(diffs))
        assert task in printed


def test_noisy_labels_are_symmetric_and_never_keep_the_label():
    accuracy = load_example("accuracy")
    import torch

    y = torch.arange(10).repeat(2000)
    noisy = accuracy.noisy_labels(y, 0.4, seed=0)
    flipped = noisy != y
    assert abs(flipped.float().mean().item() - 0.4) < 0.02
    # a flipped label is uniform over the 9 other classes
    counts = torch.bincount((noisy[flipped] - y[flipped]) % 10, minlength=10)
    assert counts[0] == 0
    assert counts[1:].min() > 0.8 * counts[1:].float().mean()


def test_whatif_study_plans_every_reference_machine(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    whatif = load_example("whatif")
    png = tmp_path / "whatif.png"
    assert whatif.main(["--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["machine"]: r for r in whatif.study()}
    assert {"a6000-epyc7452", "2xa100", "h100-xeon", "rtx4060-i9-13900hx", "rtx4060-i7-12650h"} <= set(rows)
    assert all(r["budget_met"] and r["expected_share"] >= 0.125 for r in rows.values())
    # on the machines with a spare device, the robust choice uses it (the README's table)
    assert all(rows[m]["strategy"] in ("async_sam", "sampa") for m in ("a6000-epyc7452", "2xa100", "h100-xeon"))
    assert all("[" in r["share"] and r["runner_up"] for r in rows.values())
    out = capsys.readouterr().out
    assert "a6000-epyc7452" in out and "robust" in out and "expected" in out
    assert whatif.main(["--markdown", "--objective", "robust"]) == 0
    assert "| a6000-epyc7452 | robust |" in capsys.readouterr().out
    # the two-device strategies only: AsyncSAM with a CPU ascent on a smaller batch
    a6000 = {r["machine"]: r for r in whatif.study(strategies=("rst", "async_sam", "sampa"))}["a6000-epyc7452"]
    assert a6000["strategy"] == "async_sam" and a6000["ascent_batch_size"] < a6000["batch_size"]


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
def test_own_model_example_profiles_plans_and_simulates(capsys):
    own = load_example("own_model")
    assert own.main(["--batch-size", "16", "--budget-seconds", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "chosen:" in out and "simulated:" in out


def test_quickstart_trains_with_an_automatic_plan(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path / "cache"))
    quickstart = load_example("quickstart")
    assert quickstart.main(["--epochs", "2", "--profile-budget-seconds", "2"]) == 0
    captured = capsys.readouterr()
    assert "hetsam: plan " in captured.err
    accuracies = [float(line.rsplit(" ", 1)[1].rstrip("%")) for line in captured.out.splitlines() if "test accuracy" in line]
    assert len(accuracies) == 2 and accuracies[-1] > 50.0  # far above chance (10%) after two epochs


def test_profile_repeatability_compares_the_ratios_of_two_profiles(tmp_path, capsys):
    import copy

    from hetsam.profiling.schema import Profile, load_profile

    rep = load_example("profile_repeatability")
    a = load_profile("cpu-2core-resnet20")
    data = copy.deepcopy(a.to_dict())
    for dev in data["devices"]:  # the whole machine 20% slower: every ratio unchanged...
        dev["grad_seconds"]["median"] = [1.2 * m for m in dev["grad_seconds"]["median"]]
    pool = next(d for d in data["devices"] if "[" in d["id"])
    pool["grad_seconds"]["median"][0] *= 1.1  # ...but one pool point 10% slower
    b = tmp_path / "b.json"
    b.write_text(json.dumps(Profile.from_dict(data).to_dict()))
    diffs = rep.ratio_differences(a, load_profile(str(b)))
    changed = [(label, d) for kind in diffs.values() for label, d in kind if abs(d) > 1e-9]
    assert {label for label, _ in changed} == {f"{pool['id']} t({pool['grad_seconds']['batch_sizes'][0]})/"
                                               f"t({pool['grad_seconds']['batch_sizes'][-1]})",
                                               f"{pool['id']}/cpu:0 at {pool['grad_seconds']['batch_sizes'][0]}"}
    assert all(d == pytest.approx(0.1) for _, d in changed)
    assert rep.main([str(EXAMPLES.parent / "profiles" / "cpu-2core-resnet20.json"), str(b)]) == 0
    assert "median |difference|" in capsys.readouterr().out


def test_time_to_accuracy_reduced_then_evidence_from_runs(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    tta = load_example("time_to_accuracy")
    out, png = tmp_path / "tta.json", tmp_path / "tta.png"
    assert tta.main(["--tasks", "digits", "--seeds", "2", "--epochs", "2", "--train-subset", "256", "--budgets",
                     "1.0,1.5", "--only", "interval k=5,msam rho=0.3,late_phase start=0.5,rst p=0.25",
                     "--json", str(out), "--plot", str(png), "--quiet"]) == 0
    data = json.loads(out.read_text())["tasks"]["digits"]
    assert set(data["labels"]) == {"sgd", "sam", "interval k=5", "msam rho=0.3", "late_phase start=0.5", "rst p=0.25"}
    for runs in data["equal_epochs"].values():
        assert len(runs) == 2 and all(r["epochs"] == 2 and len(r["curve"]) == 2 for r in runs)
    # at 1.5x SGD's time SGD trains 3 epochs; SAM (about 2x) fewer than SGD
    budget = data["budgets"]["1.5"]
    assert budget["sgd"][0]["epochs"] == 3 and budget["sam"][0]["epochs"] <= 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pareto frontier" in capsys.readouterr().out
    # the share of SAM itself is 1 by definition; SGD's 0
    # (the JSON holds None where SAM did not beat SGD and no share exists)
    rows = {r["strategy"]: r for r in data["summary"]}
    measured = rows["sam"]["share"] is not None
    if measured:
        assert rows["sam"]["share"] == pytest.approx(1.0) and rows["sgd"]["share"] == pytest.approx(0.0)
    conv = load_example("evidence_from_runs")
    results = json.loads(out.read_text())
    # so few epochs rarely let SAM beat SGD: set the accuracies so that the shares are known,
    # SAM +2 points and interval +1 point on every seed (share 0.5, standard error 0)
    runs = results["tasks"]["digits"]["equal_epochs"]
    for sgd, sam, interval in zip(runs["sgd"], runs["sam"], runs["interval k=5"]):
        sam["test"], interval["test"] = sgd["test"] + 0.02, sgd["test"] + 0.01
    known = tmp_path / "known.json"
    known.write_text(json.dumps(results))
    evidence = tmp_path / "evidence.json"
    assert conv.main([str(known), "--out", str(evidence)]) == 0
    from hetsam.evidence import load_records, share_model

    records = {r.strategy: r for r in load_records(evidence)}
    assert records["interval"].share == pytest.approx(0.5) and records["interval"].se == pytest.approx(0.0)
    assert records["interval"].settings == {"k": 5} and records["interval"].kind == "hetsam"
    assert "time_to_accuracy.py" in records["interval"].source["command"]
    assert "sgd" not in records and "sam" not in records  # the baselines are the definition, not evidence
    assert share_model(evidence).share(Plan("interval", options={"k": 5}), 64).counts["hetsam"] >= 1
    # a run where SAM does not beat SGD measures no share, and says so in the record
    for run in results["tasks"]["digits"]["equal_epochs"]["sam"]:
        run["test"] = 0.0
    known.write_text(json.dumps(results))
    assert conv.main([str(known), "--out", str(evidence)]) == 0
    assert all(r.share is None and "did not beat" in r.claim for r in load_records(evidence))
    known.write_text("{}")
    assert conv.main([str(known), "--out", str(evidence)]) == 2
    # the tables and the figure again from the JSON alone, training nothing
    md = tmp_path / "tables.md"
    assert tta.main(["--from", str(out), "--markdown", str(md), "--plot", str(png)]) == 0
    lines = md.read_text().splitlines()
    assert any(line.startswith("| interval k=5 |") for line in lines) and "acc within 1.5x" in md.read_text()


def test_paired_share_and_its_error_against_a_direct_computation():
    tta = load_example("time_to_accuracy")
    sgd, sam, acc = [0.90, 0.91, 0.92], [0.93, 0.93, 0.95], [0.92, 0.91, 0.94]
    share, se = tta.paired_share(acc, sgd, sam)
    assert share == pytest.approx((0.02 + 0.0 + 0.02) / (0.03 + 0.02 + 0.03))
    assert se > 0
    assert tta.paired_share(sam, sgd, sam) == (pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
    assert tta.pareto([(1.0, 0.9, "a"), (1.1, 0.85, "b"), (1.2, 0.95, "c")]) == [(1.0, 0.9, "a"), (1.2, 0.95, "c")]


def test_alignment_probe_reduced(capsys):
    pytest.importorskip("sklearn")
    probe = load_example("alignment_probe")
    assert probe.main(["--tasks", "digits", "--seeds", "1", "--epochs", "2", "--every", "5"]) == 0
    out = capsys.readouterr().out
    assert "async b'=16 tau=1" in out and "msam rho=0.3" in out
    assert probe.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)


def test_frontier_verdict_against_hand_computed_cases():
    pf = load_example("planner_frontier")
    chosen = [0.90, 0.92, 0.94]
    assert pf.verdict(chosen, 1.1, {"slower": (1.5, [0.99, 0.99, 0.99])})["state"] == "on the frontier"
    # faster and better by 1 point on every seed: the paired SE is 0, so it is off the frontier
    off = pf.verdict(chosen, 1.1, {"better": (1.0, [0.91, 0.93, 0.95])})
    assert off["state"] == "off the frontier" and off["worst"]["gap"] == pytest.approx(0.01)
    # better on average by less than two paired standard errors: within noise
    noisy = pf.verdict(chosen, 1.1, {"noisy": (1.0, [0.95, 0.89, 0.94])})
    assert noisy["state"] == "within noise" and noisy["worst"]["se"] == pytest.approx(0.02 / 3 ** 0.5 * 2.0, rel=0.2)


def assert_verdict_follows_from_its_points(v):
    """A verdict of a run says what the points that beat the choice imply (every state is possible
    for a reduced run, so the state alone says nothing)."""
    beaten = v["beaten_by"]
    expected = ("on the frontier" if not beaten else
                "within noise" if all(b["gap"] < 2 * b["se"] for b in beaten) else "off the frontier")
    assert v["state"] == expected, v
    assert all(b["time"] <= v["time"] and b["gap"] > 0 for b in beaten), v
    assert (v["worst"] is None) == (not beaten), v


def test_planner_frontier_on_the_reference_machines_reduced(tmp_path, capsys):
    pytest.importorskip("sklearn")
    tta, pf = load_example("time_to_accuracy"), load_example("planner_frontier")
    out = tmp_path / "tta.json"
    assert tta.main(["--tasks", "digits", "--seeds", "2", "--epochs", "1", "--train-subset", "128", "--budgets", "",
                     "--only", "interval k=5,rst p=0.25", "--json", str(out), "--quiet"]) == 0
    report = tmp_path / "frontier.json"
    assert pf.main([str(out), "--skip-here", "--iterations", "40", "--json", str(report), "--quiet"]) == 0
    data = json.loads(report.read_text())["references"]
    assert set(data) >= {"a6000-epyc7452", "2xa100"}
    for entry in data.values():
        task = entry["tasks"]["digits"]
        assert len(task["accuracies"]) == 2
        assert_verdict_follows_from_its_points(task["frontier"])
        assert task["times"]["sgd"] == pytest.approx(1.0, rel=0.05) and task["times"]["sam"] > 1.0
    assert "the planner chose" in capsys.readouterr().out


def test_planner_frontier_on_this_machine_reduced(tmp_path, capsys):
    """The planner's choice trained at equal epochs and within each budget of a run, with the
    verdicts (planned on a bundled profile here, so that the test does not profile)."""
    pytest.importorskip("sklearn")
    tta, pf = load_example("time_to_accuracy"), load_example("planner_frontier")
    out = tmp_path / "tta.json"
    assert tta.main(["--tasks", "digits", "--seeds", "2", "--epochs", "2", "--train-subset", "128", "--budgets",
                     "1.0,1.5", "--only", "interval k=5,rst p=0.25,msam rho=1.0", "--json", str(out), "--quiet"]) == 0
    report = tmp_path / "frontier.json"
    assert pf.main([str(out), "--profile", "cpu-2core-resnet20", "--iterations", "40", "--json", str(report),
                    "--quiet"]) == 0
    here = json.loads(report.read_text())["here"]["digits"]
    assert here["plan"].startswith("msam")  # MSAM's climb is free on that profile, and it keeps the most
    assert set(here["budgets"]) == {"1.0", "1.5"} and len(here["equal_epochs"]) == 2
    for v in here["budgets"].values():
        assert v["epochs"] >= 1
        assert_verdict_follows_from_its_points(v["frontier"])
        assert v["vs_best_cheap"]["best"].split()[0] in ("interval", "rst", "msam")
    assert "this machine: the planner chose" in capsys.readouterr().out


@pytest.mark.parametrize("example, argv, needle", [
    ("time_to_accuracy", ["--seeds", "1"], "--seeds"),
    ("time_to_accuracy", ["--seeds", str(10**6)], "--seeds"),
    ("time_to_accuracy", ["--budgets", "nan"], "--budgets"),
    ("time_to_accuracy", ["--tasks", "cifar"], "--tasks"),
    ("time_to_accuracy", ["--planner-budget", "0.5"], "--planner-budget"),
    ("accuracy", ["--epochs", "0"], "--epochs"),
    ("accuracy", ["--noise", "1"], "--noise"),
    ("planner_frontier", ["x.json", "--iterations", "0"], "--iterations"),
    ("planner_frontier", ["x.json", "--budget", "nan"], "--budget"),
    ("alignment_probe", ["--every", "0"], "--every"),
])
def test_the_study_scripts_refuse_numbers_out_of_bounds_in_one_line(example, argv, needle, capsys):
    module = load_example(example)
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and "Traceback" not in "".join(err)


# ---- the study scripts never lose a result and refuse bad input up front -----------------------------------
TINY = ["--tasks", "digits", "--seeds", "2", "--epochs", "1", "--train-subset", "128", "--quiet"]


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    """A tiny time_to_accuracy.py run: its --json and --evidence files."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("tta")
    out, evidence = folder / "tta.json", folder / "evidence.json"
    assert load_example("time_to_accuracy").main([*TINY, "--budgets", "1.0", "--only", "interval k=5", "--json",
                                                  str(out), "--evidence", str(evidence)]) == 0
    return out, evidence


@pytest.fixture
def no_training(monkeypatch):
    """Every run of the study runner fails the test: what is refused must be refused before training."""
    import hetsam.study.runner

    def boom(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(hetsam.study.runner, "train_run", boom)


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_time_to_accuracy_resumes_from_its_run_log_after_an_interruption(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    tta = load_example("time_to_accuracy")
    out = tmp_path / "tta.json"
    argv = [*TINY, "--epochs", "2", "--budgets", "1.0", "--only", "interval k=5", "--json", str(out)]
    real, calls = tta.accuracy, {"n": 0}

    def interrupted(model, x, y):  # Ctrl-C in the third run (two runs of two epochs are done)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(model, x, y)

    monkeypatch.setattr(tta, "accuracy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tta.main(argv)
    log = json.loads((tmp_path / "tta.json.digits.runs.json").read_text())
    assert [r["label"] for r in log["runs"]] == ["sgd", "sam"] and not out.exists()
    monkeypatch.setattr(tta, "accuracy", real)
    capsys.readouterr()

    def counts() -> tuple[int, int]:
        trained, reused = re.search(r"(\d+) run\(s\) trained, (\d+) reused", capsys.readouterr().out).groups()
        return int(trained), int(reused)

    assert tta.main(argv) == 0
    trained, reused = counts()  # 6 runs at equal epochs and 6 within the budget, some of them the same
    assert reused >= 2 and trained + reused == 12
    first = json.loads(out.read_text())["tasks"]["digits"]
    assert tta.main(argv) == 0 and counts() == (0, 12)  # everything from the log: the same numbers
    again = json.loads(out.read_text())["tasks"]["digits"]
    for key in ("equal_epochs", "budgets", "time_ratio"):
        assert again[key] == first[key]
    # other settings never reuse the log: refused in one line, before anything trains
    import hetsam.study.runner

    monkeypatch.setattr(hetsam.study.runner, "train_run", lambda *a, **k: pytest.fail("trained before refusing"))
    assert tta.main([*argv, "--epochs", "3"]) == 2
    assert "other settings (epochs 2 there, 3 now)" in _one_line_error(capsys)


def test_time_to_accuracy_writes_the_records_evidence_from_runs_makes(tta_run, tmp_path):
    from hetsam.evidence import load_records

    out, evidence = tta_run
    conv = load_example("evidence_from_runs")
    converted = tmp_path / "converted.json"
    assert conv.main([str(out), "--out", str(converted)]) == 0
    direct = [r.to_dict() for r in load_records(evidence)]
    assert direct and direct == [r.to_dict() for r in load_records(converted)]
    assert direct[0]["source"]["kind"] == "hetsam" and direct[0]["task"]["schedule"] == "cosine per step"


@pytest.mark.parametrize("example, argv, needle", [
    ("time_to_accuracy", [*TINY, "--json", "{missing}/tta.json"], "does not exist"),
    ("time_to_accuracy", [*TINY, "--markdown", "/proc/tta.md"], "cannot write in folder"),
    ("time_to_accuracy", [*TINY, "--plot", "{tmp}/tta.xyz"], "matplotlib cannot write .xyz"),
    ("time_to_accuracy", [*TINY, "--plot", "{tmp}"], "is a folder"),
    ("time_to_accuracy", [*TINY, "--plot", "{tmp}/tta.png", "--budgets", ""], "--budgets"),
    ("time_to_accuracy", [*TINY, "--evidence", "{missing}/evidence.json"], "does not exist"),
    ("time_to_accuracy", [*TINY, "--json", "{tmp}/a.json", "--markdown", "{tmp}/a.json"], "both name"),
    ("time_to_accuracy", [*TINY, "--runs", "{missing}/runs"], "does not exist"),
    ("time_to_accuracy", ["--from", "{results}", "--plot", "{tmp}/tables.xyz"], "matplotlib cannot write"),
    ("accuracy", [*TINY[:-1], "--planner-profile", "", "--json", "{missing}/acc.json"], "does not exist"),
    ("alignment_probe", ["--tasks", "digits", "--seeds", "1", "--epochs", "1", "--json", "/proc/probe.json"],
     "cannot write in folder"),
    ("planner_frontier", ["{results}", "--skip-here", "--json", "{missing}/frontier.json"], "does not exist"),
])
def test_the_study_scripts_check_their_outputs_before_any_training(example, argv, needle, tmp_path, tta_run,
                                                                   no_training, capsys):
    pytest.importorskip("matplotlib")
    argv = [a.format(missing=tmp_path / "missing", tmp=tmp_path, results=tta_run[0]) for a in argv]
    assert load_example(example).main(argv) == 2
    assert needle in _one_line_error(capsys)
    assert "acc@E" not in capsys.readouterr().out and not list(tmp_path.iterdir())


def _set(path: str, value):
    """A change to a results document: ``path`` is dotted, with [i] for list items."""
    def change(doc):
        *parents, last = re.findall(r"[^.\[\]]+", path)
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        key = int(last) if isinstance(node, list) else last
        node[key] = value(node[key]) if callable(value) else value
    return change


T = "tasks.digits"
HOSTILE = [  # (change, the field the one-line refusal names)
    (_set("meta.args.seeds", 10**29), "meta.args.seeds"), (_set("meta.args.seeds", "2"), "meta.args.seeds"),
    (_set("meta.args.seeds", True), "meta.args.seeds"), (_set("meta.args.epochs", 0), "meta.args.epochs"),
    (_set("meta.args.rho", -1), "meta.args.rho"), (_set("meta.args.noise", 1.0), "meta.args.noise"),
    (_set("meta.args.train_subset", 0), "meta.args.train_subset"), (_set("meta.args", []), "meta.args"),
    (_set("tasks", []), "tasks"), (_set("tasks", lambda t: {"cifar": t["digits"]}), "tasks"),
    (_set(f"{T}.labels", ["sgd", "interval k=5"]), "labels"), (_set(f"{T}.labels", "sgd"), "labels"),
    (_set(f"{T}.equal_epochs.sam", lambda runs: runs[:1]), "equal_epochs.sam"),
    (_set(f"{T}.equal_epochs.sam[0].test", 2.0), "equal_epochs.sam[0].test"),
    (_set(f"{T}.equal_epochs.sgd[1].test", "0.5"), "equal_epochs.sgd[1].test"),
    (_set(f"{T}.equal_epochs.sgd[0].epochs", 10**9), "equal_epochs.sgd[0].epochs"),
    (_set(f"{T}.equal_epochs.sgd[0].curve", "x"), "equal_epochs.sgd[0].curve"),
    (_set(f"{T}.plans.interval k=5", {"strategy": "nope"}), "plans.interval k=5"),
    (_set(f"{T}.plans.interval k=5", {"strategy": "async_sam", "ascent_batch_size": 10**29}), "plans.interval k=5"),
    (_set(f"{T}.plans.interval k=5", {"strategy": "async_sam", "ascent_batch_size": 4096}), "ascent_batch_size"),
    (_set(f"{T}.budgets", lambda b: {"abc": b["1.0"]}), "budgets"), (_set(f"{T}.time_ratio.sgd", 0), "time_ratio"),
]


@pytest.mark.parametrize("change, field", HOSTILE, ids=[f"{i}-{f}" for i, (_, f) in enumerate(HOSTILE)])
def test_planner_frontier_refuses_a_hostile_results_file_in_one_line(change, field, tta_run, tmp_path, monkeypatch,
                                                                     no_training, capsys):
    pf = load_example("planner_frontier")

    def boom(*args, **kwargs):
        raise AssertionError("read the results file's numbers unchecked")

    monkeypatch.setattr(pf, "seeded_tasks", boom)
    monkeypatch.setattr(pf, "train", boom)
    doc = json.loads(tta_run[0].read_text())
    change(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert pf.main([str(bad), "--skip-here", "--iterations", "10", "--quiet"]) == 2
    line = _one_line_error(capsys)
    assert field in line and "time_to_accuracy.py" in line


def test_time_to_accuracy_only_takes_labels_or_families_and_refuses_the_rest(no_training, capsys):
    pytest.importorskip("sklearn")
    tta = load_example("time_to_accuracy")
    assert tta.main([*TINY, "--budgets", "", "--only", "rst p=0.3"]) == 2
    line = _one_line_error(capsys)
    assert "'rst p=0.3' matches no label" in line and "rst p=0.25" in line and "families: async" in line
    assert set(tta.select(tta.strategies(pools=False), "rst,interval k=5")) == {
        "sgd", "sam", "rst p=0.1", "rst p=0.25", "rst p=0.5", "interval k=5"}


def test_a_data_condition_is_said_and_exits_0(tta_run, tmp_path, capsys):
    """SAM not beating SGD, or a run without a one-device variant, is a finding, not an error."""
    tta = load_example("time_to_accuracy")
    doc = json.loads(tta_run[0].read_text())
    runs = doc["tasks"]["digits"]["equal_epochs"]
    for sgd, sam in zip(runs["sgd"], runs["sam"]):
        sgd["test"], sam["test"] = 0.5, 0.4
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(doc))
    assert tta.main(["--from", str(worse)]) == 0
    out = capsys.readouterr().out
    assert "SAM did not beat SGD over these 2 seed(s) (-10.00 points)" in out and "nan" not in out
    only = copy.deepcopy(doc)  # no interval, late_phase, msam or rst to compare the planner's choice with
    task = only["tasks"]["digits"]
    for by_label in (task["equal_epochs"], task["plans"], task["time_ratio"], *task["budgets"].values()):
        by_label.pop("interval k=5")
    task["labels"].remove("interval k=5")
    baselines = tmp_path / "baselines.json"
    baselines.write_text(json.dumps(only))
    pf = load_example("planner_frontier")
    assert pf.main([str(baselines), "--profile", "cpu-2core-resnet20", "--iterations", "10", "--quiet"]) == 0
    assert "no one-device variant (interval, late_phase, msam, rst) in the results" in capsys.readouterr().out


def test_alignment_probe_refuses_a_bad_results_file_and_a_probe_of_nothing_before_probing(tmp_path, capsys):
    pytest.importorskip("sklearn")
    probe = load_example("alignment_probe")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"meta": {"args": {"seeds": 10**29}}, "tasks": {}}))
    base = ["--tasks", "digits", "--seeds", "1", "--epochs", "1"]
    assert probe.main([*base, "--shares-from", str(bad)]) == 2
    assert "meta.args.seeds" in _one_line_error(capsys)
    assert probe.main([*base, "--every", "100000"]) == 2
    assert "--every 100000 probes no step" in _one_line_error(capsys)
    assert "configuration" not in capsys.readouterr().out


def test_fuzz_results_files_and_flags_of_the_study_scripts(tta_run, tmp_path, no_training, capsys):
    """Mutated results files through ``--from`` and ``planner_frontier.py``, and hostile flags:
    exit 0 or 2 with one line, never a traceback, never training (hypothesis; HETSAM_FUZZ=long
    for more examples)."""
    import contextlib
    import signal

    from hypothesis import given
    from hypothesis import strategies as st
    from test_fuzz import EXTRA_MB, FUZZ, SECONDS, _peak_mb, mutated

    @contextlib.contextmanager
    def bounded(what):
        """test_fuzz's bounds, with memory measured against the peak before this example: this
        test runs late in the suite, when the process's peak is far above test_fuzz's baseline."""
        def alarm(signum, frame):
            raise TimeoutError(f"{what} ran past {SECONDS:g} s")

        before, old = _peak_mb(), signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, SECONDS)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert _peak_mb() - before < EXTRA_MB, f"{what}: peak memory grew by {_peak_mb() - before:.0f} MB"

    tta, pf = load_example("time_to_accuracy"), load_example("planner_frontier")
    base = [json.loads(tta_run[0].read_text())]
    path = tmp_path / "fuzzed.json"

    def clean_exit(main, argv):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusal
            code = exc.code
        except AssertionError as exc:  # it would train: accepted, as only a valid input may be
            assert "trained before refusing" in str(exc)
            capsys.readouterr()
            return
        captured = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in captured.err, captured.err
        if code == 2:
            assert len(captured.err.strip().splitlines()) == 1, captured.err

    @FUZZ
    @given(mutated(base))
    def results(doc):
        path.write_text(json.dumps(doc))
        with bounded("a mutated results file"):
            clean_exit(tta.main, ["--from", str(path)])
            clean_exit(pf.main, [str(path), "--skip-here", "--iterations", "10", "--quiet"])

    hostile = st.sampled_from(["0", "-1", "nan", "inf", "1e400", "10" * 30, "", "x", "1,,2", "\x1b[2J"])
    flags = st.sampled_from(["--seeds", "--epochs", "--rho", "--noise", "--train-subset", "--budgets", "--only",
                             "--planner-budget", "--tasks"])

    @FUZZ
    @given(flags, hostile)
    def arguments(flag, value):
        with bounded(f"time_to_accuracy {flag} {value!r}"):
            clean_exit(tta.main, [*TINY, "--budgets", "", flag, value])

    # once unbounded, so that imports and data loading (sklearn, the digits) are not charged to an example
    path.write_text(json.dumps(base[0]))
    clean_exit(tta.main, ["--from", str(path)])
    clean_exit(pf.main, [str(path), "--skip-here", "--iterations", "10", "--quiet"])
    clean_exit(tta.main, [*TINY, "--budgets", ""])
    results()
    arguments()


def test_a_results_file_without_budgets_is_tabulated(tta_run, tmp_path, capsys):
    """budgets are optional in a results file (the validator's default); the table still comes out
    (the fuzz found summarize() reading them unconditionally)."""
    tta = load_example("time_to_accuracy")
    doc = json.loads(tta_run[0].read_text())
    for task in doc["tasks"].values():
        task.pop("budgets", None)
    doc["meta"]["args"]["budgets"] = []
    bare = tmp_path / "no_budgets.json"
    bare.write_text(json.dumps(doc))
    assert tta.main(["--from", str(bare)]) == 0
    assert "sgd" in capsys.readouterr().out


def test_bench_step_overhead_reduced(capsys):
    """The per-step overhead benchmark runs and reports every arrangement (no timing assertion)."""
    bench = load_example("bench_step_overhead")
    assert bench.main(["--model", "mlp", "--batch-size", "8", "--rounds", "2", "--steps", "2", "--warmup", "1",
                       "--executor", "inline", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])
    names = [r["arrangement"] for r in data["rows"]]
    assert names[:4] == ["sgd", "sam", "rst p=0.5", "async_sam cpu (sliced)"]
    for r in data["rows"]:
        assert r["arrangement"] in "\n".join(lines[:-1])  # the table has a line for it
        for key in ("autosam_ms", "raw_ms", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["arrangement"], key, r[key])
        for key in ("overhead_ms", "overhead_q1_ms", "overhead_q3_ms"):  # a difference: any sign, finite
            assert math.isfinite(r[key])


def test_bench_step_costs_reduced(capsys):
    """The step-cost check runs and reports each device three ways (no timing assertion)."""
    bench = load_example("bench_step_costs")
    assert bench.main(["--model", "mlp", "--batch-size", "8", "--rounds", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    data = json.loads(lines[-1])
    hows = [(r["device"], r["how"]) for r in data["rows"]]
    assert hows[:3] == [("cpu:0", "loop"), ("cpu:0", "profiler"), ("cpu:0", "in the step")]
    for r in data["rows"]:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("update_ms", "climb_ms", "update_ratio", "climb_ratio"))
        if r["how"] == "in the step":
            assert r["update_ratio"] == r["climb_ratio"] == 1.0
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "0"])


def test_bench_contention_reduced(capsys):
    """The contention check fits each job batch and predicts each from the fits at b and b/4 (no timing assertion)."""
    from hetsam.bench.arrangements import socket0_halves
    from hetsam.profiling.pairs import lockstep_seconds

    if socket0_halves() is None:
        pytest.skip("needs two cores of socket 0 for two pools")
    bench = load_example("bench_contention")
    assert bench.main(["--batch-size", "8", "--job-batches", "1", "--repeats", "1", "--seconds", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["job_batch"] for r in rows) == [1, 2, 8]  # asked, b/4, b
    for r in rows:
        assert all(s >= 1.0 for s in r["slowdowns"]) and r["handoff_seconds"] >= 0
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("descent", "job", "descent_together", "job_together"))
        for way in ("single", "two"):
            p = r[way]
            assert p["descent_error"] == pytest.approx(p["descent_together"] / r["descent_together"] - 1)
        if r["job_batch"] in (2, 8):  # the two-point model uses that batch's own fit there
            want = lockstep_seconds(r["descent"], r["job"], *r["slowdowns"])
            assert (r["two"]["descent_together"], r["two"]["job_together"]) == pytest.approx(want)
    assert "job b" in bench.table(rows, 8)
    with pytest.raises(SystemExit):
        bench.main(["--job-batches", "0"])
