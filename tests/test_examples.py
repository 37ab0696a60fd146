"""Every example runs, in a reduced form."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

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
    a6000 = rows["a6000-epyc7452"]
    assert a6000["strategy"] == "async_sam" and a6000["ascent_batch_size"] < a6000["batch_size"]
    assert "a6000-epyc7452" in capsys.readouterr().out


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
