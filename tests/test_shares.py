"""The expected share of SAM's gain: the table, its reading rules, and the planner's objective."""

import json
import subprocess
import sys

import pytest

from _profiles import synthetic_profile_dict
from _toy_strategy import registered
from hetsam import HetsamInputError, Plan
from hetsam.planning.search import plan as plan_for
from hetsam.planning.shares import ShareTable, default_table
from hetsam.profiling.schema import Profile

PROV = {"tasks": ["toy"], "seeds": 3, "epochs": 2, "date": "2026-01-01"}


def table(**strategies):
    return ShareTable({"schema_version": 1, "provenance": PROV, "strategies": strategies})


def test_the_shipped_table_loads_and_names_its_provenance():
    t = default_table()
    assert {"sam", "rst", "interval", "late_phase", "msam", "async_sam"} <= set(t.strategies())
    assert t.provenance["seeds"] >= 5 and t.provenance["tasks"] and t.provenance["date"]
    assert t.share(Plan("sam"), 64).value == pytest.approx(1.0, abs=0.3)


def test_sam_fraction_axes_are_anchored_monotone_and_interpolated():
    t = table(rst={"axis": "sam_fraction", "points": [{"x": 0.25, "share": 0.5, "se": 0.1},
                                                      {"x": 0.5, "share": 0.4, "se": 0.1}]})
    # anchors (0 -> 0, 1 -> 1), then the isotonic fit pools the out-of-order pair to 0.45
    assert t.share(Plan("rst", sam_probability=0.25), 64).value == pytest.approx(0.45)
    assert t.share(Plan("rst", sam_probability=0.5), 64).value == pytest.approx(0.45)
    assert t.share(Plan("rst", sam_probability=0.75), 64).value == pytest.approx(0.45 + 0.5 * 0.55)
    s = t.share(Plan("rst", sam_probability=0.1), 64)
    assert s.value == pytest.approx(0.45 * 0.1 / 0.25) and s.source.startswith("interpolated")
    assert "toy" in s.source and "3 seeds" in s.source


def test_interval_and_late_phase_read_their_sam_fraction():
    t = table(interval={"axis": "sam_fraction", "points": [{"x": 0.2, "share": 0.6}]},
              late_phase={"axis": "sam_fraction", "points": [{"x": 0.25, "share": 0.8}]})
    assert t.share(Plan("interval", options={"k": 5}), 64).value == pytest.approx(0.6)
    assert t.share(Plan("late_phase", options={"start": 0.75}), 64).value == pytest.approx(0.8)


def test_async_sam_reads_b_prime_over_b_and_says_when_staleness_was_not_measured():
    t = table(async_sam={"axis": "ascent_fraction", "staleness": 1,
                         "points": [{"x": 0.25, "share": 0.7}, {"x": 1.0, "share": 0.9}]})
    p = Plan("async_sam", ascent_batch_size=16, staleness=1)
    assert t.share(p, 64).value == pytest.approx(0.7)
    stale = t.share(Plan("async_sam", ascent_batch_size=16, staleness=3), 64)
    assert "τ=1" in stale.source and "τ=3" in stale.source


def test_an_asyncsam_batch_policy_the_table_did_not_measure_uses_the_proxy():
    t = table(async_sam={"axis": "ascent_fraction", "staleness": 1, "ascent_batches": "lookahead",
                         "points": [{"x": 0.25, "share": 0.8}]})
    assert t.share(Plan("async_sam", ascent_batch_size=16), 64).value == pytest.approx(0.8)
    other = t.share(Plan("async_sam", ascent_batch_size=16, ascent_batches="independent"), 64)
    assert other.value == pytest.approx(0.25) and "independent" in other.source and other.source.startswith("proxy")
    assert default_table().share(Plan("async_sam", ascent_batch_size=16, ascent_batches="independent"),
                                 64).source.startswith("proxy")


def test_a_strategy_not_in_the_table_uses_the_proxy_and_says_so():
    with registered():
        s = table(sam={"axis": None, "points": [{"share": 1.0}]}).share(Plan("every_k", options={"k": 4}), 64)
    assert s.value == pytest.approx(0.25) and s.source.startswith("proxy")


@pytest.mark.parametrize("bad, where", [
    ({"schema_version": 2}, "schema_version"),
    ({"schema_version": 1, "provenance": PROV, "strategies": {"rst": {"axis": "speed", "points": [{"x": 1, "share": 1}]}}},
     "axis"),
    ({"schema_version": 1, "provenance": PROV, "strategies": {"rst": {"axis": "sam_fraction", "points": []}}}, "points"),
    ({"schema_version": 1, "provenance": PROV, "strategies": {"async_sam": {
        "axis": "ascent_fraction", "ascent_batches": "sometimes", "points": [{"x": 0.5, "share": 1}]}}}, "ascent_batches"),
    ({"schema_version": 1, "provenance": PROV,
      "strategies": {"rst": {"axis": "sam_fraction", "points": [{"x": 0.5, "share": float("nan")}]}}}, "share"),
    ({"schema_version": 1, "provenance": PROV,
      "strategies": {"rst": {"axis": "sam_fraction", "points": [{"x": 0.5, "share": 1}, {"x": 0.5, "share": 1}]}}},
     "same x"),
])
def test_a_bad_table_is_one_clear_error(bad, where):
    with pytest.raises(HetsamInputError, match=where):
        ShareTable(bad)


def test_the_objective_is_the_highest_expected_share_within_the_budget(tmp_path):
    profile = Profile.from_dict(synthetic_profile_dict())
    prefer_interval = table(sam={"axis": None, "points": [{"share": 1.0}]},
                            interval={"axis": "sam_fraction", "points": [{"x": 0.1, "share": 0.9}]},
                            rst={"axis": "sam_fraction", "points": [{"x": 0.1, "share": 0.1}]})
    report = plan_for(profile, budget=1.3, descent_kind="cpu", shares=prefer_interval,
                      strategies=("rst", "interval"))
    assert report.plan.strategy == "interval" and report.chosen.share.value >= 0.9
    prefer_rst = table(interval={"axis": "sam_fraction", "points": [{"x": 0.1, "share": 0.1}]},
                       rst={"axis": "sam_fraction", "points": [{"x": 0.1, "share": 0.9}]})
    assert plan_for(profile, budget=1.3, descent_kind="cpu", shares=prefer_rst,
                    strategies=("rst", "interval")).plan.strategy == "rst"
    assert report.prediction.to_dict()["share_source"].startswith(("measured", "interpolated"))
    # the CLI shows each candidate's share and the table's source; --shares takes a file
    path = tmp_path / "shares.json"
    path.write_text(json.dumps({"schema_version": 1, "provenance": PROV, "strategies": {
        "interval": {"axis": "sam_fraction", "points": [{"x": 0.1, "share": 0.9, "se": 0.05}]}}}))
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(synthetic_profile_dict()))
    out = subprocess.run([sys.executable, "-m", "hetsam", "plan", "--profile", str(prof), "--shares", str(path),
                          "--budget", "1.3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "share" in out.stdout and "toy, 3 seeds" in out.stdout and "±5" in out.stdout
    path.write_text("{}")
    bad = subprocess.run([sys.executable, "-m", "hetsam", "plan", "--profile", str(prof), "--shares", str(path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_autosam_leaves_out_msam_when_the_base_optimizer_has_no_momentum():
    import torch

    from hetsam import AutoSAM

    model = torch.nn.Linear(4, 2)
    batch = (torch.randn(8, 4), torch.randn(8, 2))

    def loss_fn(m, b):
        return torch.nn.functional.mse_loss(m(b[0]), b[1])

    chosen, lines = {}, []
    for momentum in (0.0, 0.9):
        opt = AutoSAM(model, loss_fn, torch.optim.SGD, planner_options={"profile": "cpu-2core-resnet20"},
                      executor="inline", log=lines.append, lr=0.1, momentum=momentum)
        with opt:
            opt.step(batch)
        chosen[momentum] = opt.plan.strategy
        considered = {c.plan.strategy for c in opt.plan_report.candidates}
        assert ("msam" in considered) == (momentum > 0)
    assert chosen[0.9] == "msam" and chosen[0.0] != "msam"
    # the log says what the plan is expected to keep of SAM's gain
    plan_lines = [line for line in lines if line.startswith("hetsam: plan msam")]
    assert plan_lines and "expected share of SAM's gain" in plan_lines[0]
    assert "momentum" in strategies_spec("msam").refuses([{"momentum": 0}])
    assert strategies_spec("msam").refuses([{"momentum": 0.9}, {"betas": (0.9, 0.999)}]) is None


def strategies_spec(name):
    from hetsam.strategies import registry

    return registry.get(name)


def test_a_plan_that_keeps_clearly_more_beyond_the_budget_is_noted_with_the_budget_that_admits_it():
    import re

    profile = Profile.from_dict(synthetic_profile_dict())
    t = table(rst={"axis": "sam_fraction", "points": [{"x": 0.5, "share": 0.3, "se": 0.02}]},
              interval={"axis": "sam_fraction", "points": [{"x": 0.25, "share": 0.9, "se": 0.02}]})
    report = plan_for(profile, budget=1.1, descent_kind="cpu", shares=t, strategies=("rst", "interval"))
    (note,) = [n for n in report.notes if "beyond the budget" in n]
    budget = float(re.search(r"--budget ([0-9.]+)", note).group(1))
    again = plan_for(profile, budget=budget, descent_kind="cpu", shares=t, strategies=("rst", "interval"))
    assert again.budget_met and again.chosen.expected_share > report.chosen.expected_share + 0.1
    assert again.plan.describe() in note
    # nothing clearly better beyond the budget: no note
    flat = table(rst={"axis": "sam_fraction", "points": [{"x": 0.5, "share": 0.5, "se": 0.3}]})
    assert not any("beyond the budget" in n
                   for n in plan_for(profile, budget=1.1, descent_kind="cpu", shares=flat, strategies=("rst",)).notes)
