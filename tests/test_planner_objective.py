"""The planner's objective on evidence: robust against expected, near-ties to SAM-faithful plans,
the runner-up, the note beyond the budget, and a study's file through ``hetsam plan --shares``."""

import json
import re
import subprocess
import sys

import pytest
from _profiles import synthetic_profile_dict

from hetsam import HetsamInputError
from hetsam.evidence import Record, ShareModel
from hetsam.evidence.records import records_document
from hetsam.planning.search import plan as plan_for
from hetsam.profiling.schema import Profile

PROFILE = synthetic_profile_dict()


def rec(i, strategy, settings, share, se=0.05, kind="hetsam", task="t"):
    return Record(f"{strategy}-{i}", strategy, strategy, settings, {"dataset": f"{task}{i}", "base_optimizer": "sgd"},
                  {"kind": kind, "command": "test"}, share, se)


def many(strategy, settings, shares, se=0.05, kind="hetsam"):
    return [rec(f"{settings}-{i}", strategy, settings, y, se, kind) for i, y in enumerate(shares)]


def one_device(records, **kw):
    """Plan RST and interval only (one-device strategies, on the CPU) on ``records`` alone."""
    kw.setdefault("strategies", ("rst", "interval"))
    return plan_for(Profile.from_dict(PROFILE), budget=1.3, descent_kind="cpu", shares=ShareModel(records), **kw)


def test_robust_prefers_the_share_the_evidence_supports_and_expected_the_point_estimate():
    # interval: a high mean with a wide spread between tasks; RST: a lower mean, consistent
    wide = many("interval", {"k": 4}, [0.3, 1.3, 0.5, 1.2, 0.35, 1.25])
    narrow = many("rst", {"p": 0.3}, [0.62, 0.65, 0.6, 0.64, 0.63, 0.61])
    robust, expected = one_device(wide + narrow), one_device(wide + narrow, objective="expected")
    assert robust.plan.strategy == "rst" and expected.plan.strategy == "interval"
    assert robust.objective_name == "robust" and "lower end" in robust.objective
    assert robust.chosen.objective_value == pytest.approx(robust.chosen.share.low)
    assert expected.chosen.objective_value == pytest.approx(expected.chosen.share.value)
    assert robust.runner_up().plan.strategy == "interval" and "runner-up interval" in robust.why()
    with pytest.raises(HetsamInputError, match="objective"):
        one_device(wide, objective="median")


def test_a_near_tie_goes_to_the_sam_faithful_plan():
    # MSAM (its own radius) a little ahead of RST (the user's ρ): RST wins the near-tie
    records = many("rst", {"p": 0.3}, [0.70, 0.72, 0.71, 0.69]) + many("msam", {"rho": 1.0}, [0.72, 0.74, 0.73, 0.71])
    near = one_device(records, strategies=("rst", "msam"))
    assert near.plan.strategy == "rst"
    assert near.runner_up().plan.strategy == "msam" and "near-tie" in near.why()
    assert near.runner_up().objective_value > near.chosen.objective_value
    # clearly ahead: MSAM wins
    far = many("rst", {"p": 0.3}, [0.40, 0.42, 0.41, 0.39]) + many("msam", {"rho": 1.0}, [0.72, 0.74, 0.73, 0.71])
    assert one_device(far, strategies=("rst", "msam")).plan.strategy == "msam"


def test_msam_only_runs_radii_its_evidence_tested_for_the_base_optimizer():
    records = many("msam", {"rho": 1.0}, [0.7, 0.8, 0.75]) + many("rst", {"p": 0.3}, [0.3, 0.35, 0.32])
    sgd = one_device(records, strategies=("rst", "msam"))
    assert {c.plan.options.get("rho") for c in sgd.candidates if c.plan.strategy == "msam"} == {1.0}
    adam = one_device(records, strategies=("rst", "msam"), base_optimizer="adam")
    assert not [c for c in adam.candidates if c.plan.strategy == "msam"]  # no radius tested for Adam
    with pytest.raises(HetsamInputError, match="base_optimizer"):
        one_device(records, base_optimizer="lion")


def test_a_plan_beyond_the_budget_that_keeps_clearly_more_is_noted_with_the_budget_that_admits_it():
    records = many("rst", {"p": 0.5}, [0.3, 0.32, 0.31]) + many("interval", {"k": 4}, [0.95, 0.97, 0.96])
    report = plan_for(Profile.from_dict(PROFILE), budget=1.1, descent_kind="cpu", shares=ShareModel(records),
                      strategies=("rst", "interval"))
    (note,) = [n for n in report.notes if "beyond the budget" in n]
    budget = float(re.search(r"--budget ([0-9.]+)", note).group(1))
    again = plan_for(Profile.from_dict(PROFILE), budget=budget, descent_kind="cpu", shares=ShareModel(records),
                     strategies=("rst", "interval"))
    assert again.budget_met and again.chosen.objective_value > report.chosen.objective_value + 0.03
    assert again.plan.describe() in note
    assert any(c.plan.describe() in note for c in report.shown()[0])  # nothing the notes name is hidden


def test_every_shown_share_carries_its_interval_and_evidence_in_the_json(tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(PROFILE))
    out = subprocess.run([sys.executable, "-m", "hetsam", "plan", "--profile", str(prof), "--json"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    entries = [data["prediction"], *(a["prediction"] for a in data["alternatives"])]
    for p in entries:
        assert {"expected_share", "share_interval", "share_level", "share_evidence", "share_source"} <= set(p)
        ev = p["share_evidence"]
        if p["share_source"] != "by definition" and p["share_interval"] is not None:
            assert p["share_interval"][0] <= p["expected_share"] <= p["share_interval"][1]
            assert ev["paper"] + ev["hetsam"] + ev["user"] >= 1 and ev["text"].startswith("from ")
    assert data["objective_name"] == "robust" and "runner_up" in data


def test_a_study_file_through_the_cli_changes_the_choice_where_its_evidence_is_clear(tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(PROFILE))
    cmd = [sys.executable, "-m", "hetsam", "plan", "--profile", str(prof), "--budget", "1.3",
           "--strategies", "rst,interval", "--json"]
    before = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert before["plan"]["strategy"] == "rst"
    # the user's own study: interval k=4 keeps all of SAM's gain on their task, over many seeds
    mine = many("interval", {"k": 4}, [1.0, 1.02, 0.98], se=0.02, kind="user")
    path = tmp_path / "shares.json"
    path.write_text(json.dumps(records_document(mine, {"study": "test"})))
    after = json.loads(subprocess.run(cmd + ["--shares", str(path)], capture_output=True, text=True, check=True).stdout)
    assert after["plan"]["strategy"] == "interval"
    assert after["prediction"]["share_evidence"]["user"] == 3 and "your study" in after["prediction"]["share_source"]
    text = subprocess.run(cmd[:-1] + ["--shares", str(path)], capture_output=True, text=True, check=True).stdout
    assert "3 settings of yours" in text and "80% interval" in text
    for bad in ("{}", json.dumps({"schema_version": 1, "strategies": {}, "provenance": {}})):
        path.write_text(bad)
        err = subprocess.run(cmd + ["--shares", str(path)], capture_output=True, text=True)
        assert err.returncode == 2 and len(err.stderr.strip().splitlines()) == 1 and "Traceback" not in err.stderr


@pytest.mark.parametrize("asked", [("sampa",), ("sgd",), ("async_sam", "interval")])
def test_strategies_restrict_the_choice_and_baselines_stay_reference_rows(asked):
    report = plan_for("cpu-2core-resnet20", strategies=asked)
    assert report.plan.strategy in asked
    assert {"sgd"} <= {c.plan.strategy for c in report.candidates}  # SGD stays a reference row
    assert not any("RST" in n for n in report.notes)  # not recommended when it was excluded
    if asked == ("sgd",):
        assert report.budget_met
    with pytest.raises(HetsamInputError, match="strategies"):
        plan_for("cpu-2core-resnet20", strategies=())


@pytest.mark.parametrize("flag", [["--budget", "0"], ["--strategies", "nope"], ["--shares", "/nonexistent.json"],
                                  ["--out", "/nonexistent/dir/p.json"], ["--min-ascent-fraction", "2"]])
def test_plan_refuses_bad_flags_before_it_profiles(flag, tmp_path):
    env = {**__import__("os").environ, "HETSAM_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    out = subprocess.run([sys.executable, "-m", "hetsam", "plan", *flag], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not list((tmp_path / "cache").iterdir())  # nothing was measured
