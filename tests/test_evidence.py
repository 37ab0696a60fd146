"""The evidence store: records, random-effects pooling (against statsmodels and scipy), shares
for a new task with their intervals, the user's own task, and leave-one-setting-out coverage."""

from __future__ import annotations

import json
import math
import random

import pytest

from hetsam import HetsamInputError, Plan
from hetsam.evidence import (
    Record,
    ShareModel,
    load_records,
    share_model,
    shipped_records,
)
from hetsam.evidence.crossval import leave_one_out
from hetsam.evidence.pooling import common_tau2, pool_group, t_quantile, target_task
from hetsam.evidence.records import (
    paired_share,
    parse_records,
    records_document,
    share_from_means,
)

SRC = {"kind": "hetsam", "command": "test"}


def rec(i, strategy, settings, share, se, kind="hetsam", task=None, relative=False, method=None):
    return Record(f"r{i}", strategy, method or strategy, settings, task or {"dataset": f"t{i}", "base_optimizer": "sgd"},
                  {**SRC, "kind": kind}, share, se, relative=relative)


# ---- pooling against independent implementations -------------------------------------------------------
def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 15, 40, 1000):
        for p in (0.55, 0.8, 0.9, 0.95, 0.975, 0.995, 0.1):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-7, abs=1e-9)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_dersimonian_laird_matches_statsmodels():
    np = pytest.importorskip("numpy")
    meta = pytest.importorskip("statsmodels.stats.meta_analysis")
    rng = random.Random(1)
    for _ in range(20):
        k = rng.randint(2, 15)
        y = [rng.gauss(0.6, rng.choice((0.05, 0.3))) for _ in range(k)]
        se = [rng.uniform(0.03, 0.3) for _ in range(k)]
        spread = common_tau2([list(zip(y, se))])
        est = pool_group(list(zip(y, se)), spread)
        ref = meta.combine_effects(np.array(y), np.array(se) ** 2, method_re="dl")
        assert spread.tau2 == pytest.approx(max(0.0, ref.tau2), abs=1e-12)  # statsmodels does not truncate at 0
        if ref.tau2 > 0:
            assert est.mean == pytest.approx(ref.mean_effect_re, rel=1e-9)
            assert math.sqrt(est.var_mean) == pytest.approx(ref.sd_eff_w_re, rel=1e-9)
        assert spread.df == k - 1


def test_a_common_tau2_over_groups_is_the_within_group_moment_estimator():
    a = [(0.2, 0.1), (0.6, 0.1)]
    b = [(0.9, 0.1), (0.5, 0.1)]
    s = common_tau2([a, b, [(0.3, 0.2)]])  # a group of one informs nothing
    # Q = 100*(0.2^2*2) + 100*(0.2^2*2) = 16; df = 2; C = (200 - 20000/200) * 2 = 200
    assert s.df == 2 and s.settings == 5
    assert s.tau2 == pytest.approx((16 - 2) / 200)


def test_the_users_own_task_dominates_with_enough_evidence():
    prior = pool_group([(0.3, 0.1), (0.5, 0.2), (0.4, 0.05)], common_tau2([[(0.3, 0.1), (0.5, 0.2), (0.4, 0.05)]]))
    prior = type(prior)(prior.mean, prior.var_mean, 0.01, prior.df, prior.k)  # the model's floor on τ²
    few = target_task(prior, [(0.9, 0.3)])
    many = target_task(prior, [(0.9, 0.01)])
    assert prior.mean < few.mean < many.mean
    assert many.mean == pytest.approx(0.9, abs=0.01) and many.var_mean < few.var_mean


# ---- shares from accuracies ------------------------------------------------------------------------------
def test_paired_and_table_shares():
    share, se = paired_share([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], [2.0, 3.0, 4.0])
    assert share == pytest.approx(0.5) and se == pytest.approx(0.0)
    assert math.isnan(paired_share([1, 2], [1, 2], [1, 2])[0])  # SAM did not beat the base
    share, se = share_from_means(80.0, 82.0, 81.0, 3, 0.0, 0.0, 0.3)
    assert share == pytest.approx(0.5) and se == pytest.approx(0.3 / math.sqrt(3) / 2)


# ---- the file format -------------------------------------------------------------------------------------
def _doc(records):
    return records_document(records, {"note": "test"})


def test_records_round_trip_and_refuse_bad_fields(tmp_path):
    path = tmp_path / "e.json"
    path.write_text(json.dumps(_doc([rec(1, "rst", {"p": 0.1}, 0.4, 0.1)])))
    [r] = load_records(path)
    assert r.share == 0.4 and r.settings == {"p": 0.1} and r.kind == "hetsam"
    good = _doc([rec(1, "rst", {"p": 0.1}, 0.4, 0.1)])
    cases = [
        ({"schema_version": 1, "strategies": {}}, "schema_version"),
        ({**good, "schema_version": True}, "schema_version"),
        ({**good, "kind": "other"}, "kind"),
        ({**good, "records": []}, "records"),
        ({**good, "records": [{**good["records"][0], "share": float("nan")}]}, "share"),
        ({**good, "records": [{**good["records"][0], "se": -1}]}, "se"),
        ({**good, "records": [{**good["records"][0], "share": None, "se": None}]}, "claim"),
        ({**good, "records": [{**good["records"][0], "source": {"kind": "blog"}}]}, "source.kind"),
        ({**good, "records": [good["records"][0], good["records"][0]]}, "unique"),
        ({**good, "records": [{**good["records"][0], "settings": {"p": [1]}}]}, "settings"),
    ]
    for doc, word in cases:
        with pytest.raises(HetsamInputError, match=word) as err:
            parse_records(json.loads(json.dumps(doc, allow_nan=True)), "f.json")
        assert "\n" not in str(err.value)


# ---- the model -------------------------------------------------------------------------------------------
def test_anchored_axes_hold_their_known_ends_and_stay_monotone():
    records = [rec(1, "rst", {"p": 0.25}, 0.6, 0.1), rec(2, "rst", {"p": 0.25}, 0.5, 0.1),
               rec(3, "rst", {"p": 0.5}, 0.4, 0.1), rec(4, "rst", {"p": 0.5}, 0.45, 0.1)]
    m = ShareModel(records)
    at = {p: m.share(Plan("rst", options={"sam_probability": p}), 64, "sgd") for p in (0.001, 0.25, 0.4, 0.5, 0.75, 1.0)}
    assert at[1.0].value == pytest.approx(1.0) and at[1.0].high - at[1.0].low == pytest.approx(0.0, abs=1e-9)
    values = [at[p].value for p in sorted(at)]
    assert values == sorted(values)  # the pooled 0.55 and 0.43 are pooled to one monotone level
    assert at[0.001].value == pytest.approx(0.0, abs=0.01)
    assert "interpolated" in " ".join(at[0.4].notes)
    assert at[0.25].counts["hetsam"] == 2


def test_levels_read_only_tested_points_and_msam_needs_a_base_optimizer_family():
    records = [rec(1, "msam", {"rho": 1.0}, 0.9, 0.1), rec(2, "msam", {"rho": 1.0}, 0.7, 0.1),
               rec(3, "msam", {"rho": 3.0}, 0.5, 0.1, task={"dataset": "x", "base_optimizer": "adamw"})]
    m = ShareModel(records)
    assert m.tested("msam", ("sgd",)) == [1.0] and m.tested("msam", ("adam",)) == [3.0]
    s = m.share(Plan("msam", options={"rho": 0.5}), 64, "sgd")
    assert s.value == pytest.approx(0.8, abs=0.01) and "nearest tested" in " ".join(s.notes)
    unknown = m.share(Plan("msam", options={"rho": 1.0}), 64, None)
    assert unknown.is_proxy and unknown.objective("robust") == 0.0


def test_a_strategy_with_little_evidence_borrows_the_spread_and_says_so():
    records = [rec(i, "interval", {"k": k}, y, 0.05) for i, (k, y) in
               enumerate([(5, 0.3), (5, 0.7), (10, 0.2), (10, 0.5), (2, 0.9), (2, 0.6)])]
    records += [rec(10, "sampa", {"lambda": 0.2}, 0.9, 0.1)]
    m = ShareModel(records)
    s = m.share(Plan("sampa", "cpu:0[0]", "cpu:0[1]"), 64, "sgd")
    assert "borrowed" in " ".join(s.notes)
    assert m.spread("sampa")[0].tau2 >= m.spread("interval")[0].tau2 > 0


def test_relatives_inform_the_spread_not_the_mean():
    own = [rec(1, "interval", {"k": 5}, 0.5, 0.05), rec(2, "interval", {"k": 5}, 0.52, 0.05)]
    looksam = [rec(3 + i, "interval", {"k": 5}, y, 0.05, relative=True, method="LookSAM") for i, y in
               enumerate((1.0, 0.4, 0.9, 0.2))]
    m0, m1 = ShareModel(own), ShareModel(own + looksam)
    plan = Plan("interval", options={"k": 5})
    assert m1.share(plan, 64, "sgd").value == pytest.approx(m0.share(plan, 64, "sgd").value)
    assert m1.share(plan, 64, "sgd").low < m0.share(plan, 64, "sgd").low


def test_user_evidence_changes_the_share_and_is_counted():
    prior = [rec(i, "rst", {"p": 0.25}, y, 0.08) for i, y in enumerate((0.5, 0.6, 0.4, 0.55))]
    mine = [rec(9, "rst", {"p": 0.25}, 0.95, 0.02, kind="user")]
    plan = Plan("rst", options={"sam_probability": 0.25})
    before, after = ShareModel(prior).share(plan, 64, "sgd"), ShareModel(prior + mine).share(plan, 64, "sgd")
    assert after.value > before.value + 0.2 and after.counts["user"] == 1
    assert "your study" in after.basis and "1 of yours" in after.text()


def test_sam_and_sgd_are_exact_and_unknown_settings_are_a_proxy():
    m = share_model()
    assert m.share(Plan("sam"), 64).text() == "100% (by definition)"
    assert m.share(Plan("sgd"), 64).value == 0.0


def test_the_shipped_store_loads_and_every_record_is_placed():
    records = shipped_records()
    assert len(records) >= 10
    m = share_model()
    assert not m.unplaced, [r.id for r in m.unplaced]
    kinds = {r.kind for r in records}
    assert "hetsam" in kinds


def test_leave_one_setting_out_covers_at_least_three_quarters():
    cv = leave_one_out(shipped_records())
    assert len(cv.folds) >= 20
    assert cv.coverage >= 0.75, cv.text()


def test_a_share_that_clearly_fails_counts_at_the_bound():
    prior = [rec(i, "rst", {"p": 0.25}, y, 0.05) for i, y in enumerate((0.5, 0.6, 0.4, 0.55))]
    # a ratio of two gains: SAM's small gain gives a huge se, but the method lost far more than SAM won
    fails = [rec(9, "rst", {"p": 0.25}, -9.4, 3.8, kind="user")]
    plan = Plan("rst", options={"sam_probability": 0.25})
    before, after = ShareModel(prior).share(plan, 64, "sgd"), ShareModel(prior + fails).share(plan, 64, "sgd")
    assert after.value < before.value - 0.3 and after.counts["user"] == 1


def test_msams_shown_share_agrees_with_its_published_tables():
    """The MSAM paper's 11 same-table settings keep a median 67% of SAM's gain (arXiv 2401.12033,
    Tables 1-2): every radius hetsam may run for SGD shows an interval that contains it, and no
    point estimate above 100%."""
    published = sorted(r.share for r in shipped_records() if r.strategy == "msam" and r.kind == "paper"
                       and r.has_number and not r.relative)
    assert len(published) == 11 and published[5] == pytest.approx(0.67, abs=0.01)
    m = share_model()
    radii = m.tested("msam", ("sgd",))
    assert radii
    for rho in radii:
        s = m.share(Plan("msam", options={"rho": rho}), 64, "sgd")
        assert s.low <= published[5] <= s.high and s.value <= 1.0, (rho, s.text())
        assert s.counts["paper"] >= 5
