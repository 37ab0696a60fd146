"""The simulator against closed forms, an independent SimPy model, and its own contracts.

Every expected value here is written out from the cost model's numbers and the equations in
the test (or in ``simulator/model.py``'s docstring), never taken from the simulator itself.
"""

import json
import math
import statistics
import subprocess
import sys

import pytest
from _profiles import synthetic_profile_dict
from _simpy_reference import async_sam_update_ends

from hetsam import HetsamInputError, Plan
from hetsam.cost.jitter import lognormal_sigma
from hetsam.cost.model import CostModel
from hetsam.profiling.schema import Profile
from hetsam.profiling.stats import quantile
from hetsam.simulator import SimResult, simulate
from hetsam.simulator.model import warmup_iterations
from hetsam.simulator.steady import BatchMeans, t_quantile_975
from hetsam.simulator.trace import chrome_trace

B = 64
NBYTES = 4000  # the synthetic model's parameter_bytes


@pytest.fixture
def cm():
    return CostModel(Profile.from_dict(synthetic_profile_dict()))


def profile_with(**changes):
    """The synthetic profile with some numbers changed (devices by id, links by index)."""
    data = synthetic_profile_dict()
    for dev_id, fields in changes.get("devices", {}).items():
        dev = next(d for d in data["devices"] if d["id"] == dev_id)
        dev.update(fields)
    for i, fields in changes.get("links", {}).items():
        data["links"][i].update(fields)
    if "contention" in changes:
        data["contention"] = changes["contention"]
    return CostModel(Profile.from_dict(data))


def exact(plan, cm, n=200, **kw):
    return simulate(plan, cm, iterations=n, jitter=False, steady_state=False, **kw)


# ---- closed forms, no jitter ---------------------------------------------------------------
def test_sgd_is_exactly_gradient_plus_update(cm):
    t_d, u = 0.17, 0.001  # cpu:0 at b=64 and its update_seconds, from the profile
    r = exact(Plan("sgd", "cpu:0", batch_size=B), cm, n=50)
    assert r.iteration_seconds["mean"] == pytest.approx(t_d + u, rel=1e-12)
    assert r.iteration_seconds["p50"] == pytest.approx(t_d + u, rel=1e-12)
    assert r.iteration_seconds["p95"] == pytest.approx(t_d + u, rel=1e-12)
    assert r.total_seconds == pytest.approx(50 * (t_d + u), rel=1e-12)
    assert r.samples_per_second == pytest.approx(B / (t_d + u))
    assert r.descent_wait_seconds == 0.0
    assert r.utilisation == {"cpu:0": pytest.approx(1.0)}
    assert not r.extrapolated and r.simulated_iterations == 50


def test_loader_seconds_add_to_every_step(cm):
    r = exact(Plan("sgd", "cpu:0", batch_size=B), cm, n=20, loader_seconds=0.01)
    assert r.iteration_seconds["mean"] == pytest.approx(0.01 + 0.17 + 0.001, rel=1e-12)


def test_sam_is_two_gradients_plus_update(cm):
    r = exact(Plan("sam", "cpu:0", batch_size=B), cm, n=50)
    assert r.iteration_seconds["mean"] == pytest.approx(2 * 0.17 + 0.001, rel=1e-12)
    assert r.descent_wait_seconds == 0.0  # the device computes the ascent itself, it never idles


def test_sam_on_a_gpu_without_update_time(cm):
    r = exact(Plan("sam", "cuda:0", batch_size=B), cm, n=20)
    assert r.iteration_seconds["mean"] == pytest.approx(2 * 0.01, rel=1e-12)


def test_async_sam_with_no_staleness_and_full_batch_is_sam(cm):
    r = exact(Plan("async_sam", "cpu:0", "cpu:0", batch_size=B, options={"ascent_batch_size": B, "staleness": 0}), cm, n=30)
    assert r.iteration_seconds["mean"] == pytest.approx(2 * 0.17 + 0.001, rel=1e-12)


def test_async_sam_tau1_ascent_fits_costs_one_descent_step(cm):
    # descent on the 2-core socket (0.171 per step), ascent on the GPU at b'=32:
    # t_A + copies = interp(0.004..0.01 at 8..64, 32) + 2 copies << t_D + u, so max(...) = t_D + u
    t_a = 0.004 + (32 - 8) / (64 - 8) * (0.01 - 0.004)
    copies = 2 * (1e-5 + NBYTES / 1e9)
    t_step = 0.17 + 0.001
    assert t_a + copies < t_step
    r = exact(Plan("async_sam", "cpu:0", "cuda:0", batch_size=B, options={"ascent_batch_size": 32}), cm)
    assert r.steady_state["mean"] == pytest.approx(max(t_step, t_a + copies), rel=1e-12)
    assert r.descent_wait_seconds == 0.0
    assert r.utilisation["cuda:0"] == pytest.approx(t_a / t_step, rel=1e-2)


def test_async_sam_tau1_ascent_bound_with_cheap_copies(cm):
    # descent on the GPU (0.01), ascent on the socket at b'=16 (0.05): the descent waits
    t_d, t_a = 0.01, 0.05
    copies = 2 * (1e-5 + NBYTES / 1e9)
    r = exact(Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 16}), cm)
    period = r.steady_state["mean"]
    # the ascent device is the bottleneck: period = t_A; the max(t_D, t_A + copies) is
    # within the copy time of it
    assert period == pytest.approx(t_a, rel=1e-12)
    assert max(t_d, t_a + copies) - period == pytest.approx(copies, rel=1e-9)
    # every steady step waits period − t_D for its ascent gradient
    assert r.descent_wait_per_iteration == pytest.approx(t_a - t_d, rel=0.05)  # start-up steps wait less
    assert r.utilisation["cpu:0"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("tau", [1, 2])
def test_async_sam_cycle_bound_with_slow_copies(tau):
    # slow link: 0.02 s per copy. Descent on the GPU (t_D = 0.01, no update), ascent on the
    # socket at b'=8 (t_A = 0.03). The cycle θ_{t−τ} → copy → ascent → copy → step t spans τ+1
    # steps, so the period is the largest of the per-resource bounds and that cycle's mean.
    cm = profile_with(links={0: {"bytes_per_second": NBYTES / 0.02, "latency_seconds": 0.0}})
    t_d, t_a, c = 0.01, 0.03, 0.02
    period = max(t_d, t_a, c, c, (c + t_a + c + t_d) / (tau + 1))
    # the schedule repeats every τ+1 steps: average over a whole number of repeats
    n = warmup_iterations(tau) + 600
    r = exact(Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 8, "staleness": tau}), cm, n=n)
    assert r.steady_state["mean"] == pytest.approx(period, rel=1e-9)


def test_async_sam_time_sliced_runs_both_gradients_back_to_back(cm):
    t_step, t_a = 0.17 + 0.001, 0.05  # cpu at b=64 with its update; cpu at b'=16
    r = exact(Plan("async_sam", "cpu", "cpu", batch_size=B, options={"ascent_batch_size": 16}), cm, n=60)
    # after the first step (no perturbation yet), every iteration is t_D + u + t_A exactly
    assert r.steady_state["mean"] == pytest.approx(t_step + t_a, rel=1e-12)
    assert r.iteration_seconds["p50"] == pytest.approx(t_step + t_a, rel=1e-12)
    assert r.iteration_seconds["p95"] == pytest.approx(t_step + t_a, rel=1e-12)
    assert r.descent_wait_seconds == 0.0
    assert list(r.utilisation) == ["cpu:0"] and r.link_utilisation == {}


@pytest.mark.parametrize("tau,bp,shared,copy_bps", [
    (1, 8, False, 1e9), (1, 16, False, NBYTES / 0.02), (2, 8, False, NBYTES / 0.02), (3, 64, False, 1e9),
    (1, 16, True, 1e9), (2, 32, True, 1e9),
])
def test_async_sam_schedule_equals_independent_simpy_model(tau, bp, shared, copy_bps):
    cm = profile_with(links={0: {"bytes_per_second": copy_bps}})
    d, a = ("cpu:0", "cpu:0") if shared else ("cuda:0", "cpu:0")
    n = 150
    r = exact(Plan("async_sam", d, a, batch_size=B, options={"ascent_batch_size": bp, "staleness": tau}), cm, n=n)
    # the simulator treats its n steps as part of a longer run (the ascents for steps n..n+τ
    # run too), so the reference simulates n+τ+1 steps and is read at step n−1
    ends, _ = async_sam_update_ends(cm.grad_seconds(d, B), cm.update_seconds(d), cm.grad_seconds(a, bp),
                                    cm.copy_seconds(d, a, NBYTES), cm.copy_seconds(a, d, NBYTES), tau, n + tau + 1,
                                    shared=shared)
    assert r.total_seconds == pytest.approx(ends[n - 1], rel=1e-12)
    w = r.steady_state["warmup_iterations"]
    assert r.steady_state["mean"] == pytest.approx((ends[n - 1] - ends[w - 1]) / (n - w), rel=1e-9)


def test_sampa_is_the_slower_gradient_plus_combine(cm):
    # g_x on the socket (0.17), g_y' on the GPU at b with its copies; combine+update 0.001
    copies = 2 * (1e-5 + NBYTES / 1e9)
    r = exact(Plan("sampa", "cpu:0", "cuda:0", batch_size=B), cm, n=50)
    assert r.iteration_seconds["mean"] == pytest.approx(max(0.17, copies + 0.01) + 0.001, rel=1e-12)
    r = exact(Plan("sampa", "cuda:0", "cpu:0", batch_size=B), cm, n=50)
    assert r.iteration_seconds["mean"] == pytest.approx(max(0.01, copies + 0.17) + 0.0, rel=1e-12)
    assert r.descent_wait_per_iteration == pytest.approx(copies + 0.17 - 0.01, rel=1e-9)


def test_rst_mean_within_binomial_tolerance(cm):
    p, n = 0.3, 3000
    t_d, u = 0.17, 0.001
    r = exact(Plan("rst", "cpu:0", batch_size=B, options={"sam_probability": p}), cm, n=n)
    expected = t_d + u + p * t_d
    sd_of_mean = t_d * math.sqrt(p * (1 - p) / n)  # each step adds t_D with probability p
    assert abs(r.iteration_seconds["mean"] - expected) < 4 * sd_of_mean
    assert r.iteration_seconds["p50"] == pytest.approx(t_d + u)  # most steps are SGD steps
    assert r.iteration_seconds["p95"] == pytest.approx(2 * t_d + u)


def test_rst_extremes_are_sgd_and_sam(cm):
    assert exact(Plan("rst", "cpu:0", batch_size=B, options={"sam_probability": 0.0}), cm, n=30).iteration_seconds["mean"] == pytest.approx(0.171)
    assert exact(Plan("rst", "cpu:0", batch_size=B, options={"sam_probability": 1.0}), cm, n=30).iteration_seconds["mean"] == pytest.approx(0.341)


# ---- contention --------------------------------------------------------------------------
def test_contention_slows_only_the_overlapped_interval(cm):
    # AsyncSAM, descent on core 0 (t_D = 0.33 at b=64, no update), ascent on core 1 at b'=16
    # (0.09, derived from core 0). While both compute, D runs at 1/1.2 and A at 1/1.25.
    s_d, s_a = 1.2, 1.25
    t_d, t_a = 0.33, 0.09
    c = 1e-6 + NBYTES / 4e9  # copy θ over the socket link (same again for ĝ)
    # steady step (ascent starts c after the step begins, ends well before it):
    #   [0, c): D alone; [c, c + s_a·t_a): both; the rest: D alone
    overlap = s_a * t_a
    d_done_before = c + overlap / s_d
    period = c + overlap + (t_d - d_done_before)
    r = exact(Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=B, options={"ascent_batch_size": 16}), cm, n=100)
    assert r.steady_state["mean"] == pytest.approx(period, rel=1e-9)
    # without the contention entry the ascent is free
    free = profile_with(contention=[])
    r0 = exact(Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=B, options={"ascent_batch_size": 16}), free, n=100)
    assert r0.steady_state["mean"] == pytest.approx(t_d, rel=1e-12)


def test_contention_in_sampa_both_slowed_then_one_alone(cm):
    s_d, s_a, w = 1.2, 1.25, 0.33  # both gradients at b=64 on one core each
    c = 1e-6 + NBYTES / 4e9
    # g_x: [0, c) alone, then shared; g_y' starts at c
    d_end = c + s_d * (w - c)  # D finishes first (s_d·(w−c) < s_a·w)
    a_done = (d_end - c) / s_a
    a_end = d_end + (w - a_done)
    r = exact(Plan("sampa", "cpu:0[0]", "cpu:0[1]", batch_size=B), cm, n=30)
    assert r.iteration_seconds["mean"] == pytest.approx(a_end + c, rel=1e-9)  # + copy back; update 0


# ---- jitter, determinism, steady state -----------------------------------------------------
def test_lognormal_sigma_matches_the_iqr():
    m, iqr = 0.2, 0.03
    s = lognormal_sigma(m, iqr)
    z75 = statistics.NormalDist().inv_cdf(0.75)
    assert m * math.exp(s * z75) - m * math.exp(-s * z75) == pytest.approx(iqr, rel=1e-12)
    assert lognormal_sigma(m, 0.0) == 0.0


def test_jitter_reproduces_the_measured_median_and_spread(cm):
    r = simulate(Plan("sgd", "cpu:0", batch_size=B), cm, iterations=6000, steady_state=False, seed=3)
    m, iqr, u = 0.17, 0.017, 0.001
    s = math.asinh(iqr / (2 * m)) / statistics.NormalDist().inv_cdf(0.75)
    assert r.iteration_seconds["p50"] == pytest.approx(m + u, rel=0.01)
    assert r.iteration_seconds["p95"] == pytest.approx(m * math.exp(1.6448536 * s) + u, rel=0.02)
    assert r.iteration_seconds["mean"] == pytest.approx(m * math.exp(s * s / 2) + u, rel=0.01)


def _stable(result: SimResult) -> dict:
    d = result.to_dict()
    d.pop("engine")
    return d


def test_deterministic_for_a_seed(cm):
    plan = Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 8})
    a = _stable(simulate(plan, cm, iterations=500, seed=7))
    b = _stable(simulate(plan, cm, iterations=500, seed=7))
    c = _stable(simulate(plan, cm, iterations=500, seed=8))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["iteration_seconds"] != c["iteration_seconds"]


def test_steady_state_stops_early_and_extrapolates(cm):
    plan = Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 8})
    n = 78_200
    r = simulate(plan, cm, iterations=n, seed=1)
    assert r.extrapolated and r.simulated_iterations < n // 10
    assert "extrapolated" in r.note and str(n) in r.note
    ss = r.steady_state
    assert ss["converged"] and ss["relative_halfwidth"] <= 0.005 and ss["batches"] >= 32
    assert r.total_seconds == pytest.approx(r.iteration_seconds["mean"] * n, rel=1e-12)
    # the extrapolated mean agrees with simulating everything, within the stated interval
    full = simulate(plan, cm, iterations=20_000, seed=2, steady_state=False)
    assert abs(r.iteration_seconds["mean"] - full.iteration_seconds["mean"]) <= 2 * ss["ci95_halfwidth"]
    short = simulate(plan, cm, iterations=50, seed=1)
    assert not short.extrapolated and short.simulated_iterations == 50 and "all 50" in short.note


def test_batch_means_on_iid_values_and_t_quantiles():
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=2e-4)  # tables: t_{0.975, 31}
    assert t_quantile_975(62) == pytest.approx(1.9990, abs=2e-4)
    bm = BatchMeans(warmup=0, min_batch=4, rel_tol=0.01)
    vals = [1.0 + 0.1 * ((i * 7919) % 13 - 6) / 6 for i in range(20000)]
    done = next(i for i, v in enumerate(vals) if bm.add(v))
    assert done < 20000 and abs(bm.mean - statistics.fmean(vals)) < 0.01
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


# ---- outputs -------------------------------------------------------------------------------
def test_timeline_and_chrome_trace_are_valid(cm):
    plan = Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 16})
    r = simulate(plan, cm, iterations=100, seed=0, timeline_iterations=4)
    assert {e.iteration for e in r.timeline} == {0, 1, 2, 3}
    cats = {e.category for e in r.timeline}
    assert {"descent", "ascent", "copy", "wait"} <= cats
    trace = json.loads(json.dumps(chrome_trace(r)))
    assert trace["displayTimeUnit"] == "ms"
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    ms = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    assert len(xs) == len(r.timeline)
    for e in xs:
        assert set(e) >= {"name", "ph", "ts", "dur", "pid", "tid", "args"}
        assert e["ts"] >= 0 and e["dur"] >= 0
    named = {e["pid"]: e["args"]["name"] for e in ms if e["name"] == "process_name"}
    assert {e["pid"] for e in xs} <= set(named)
    assert any(name.startswith("cuda:0") for name in named.values())
    # a descent never overlaps another task on its own track
    desc = sorted((e["ts"], e["ts"] + e["dur"]) for e in xs if e["pid"] == 1 and e["cat"] in ("descent", "update"))
    assert all(b0 >= a1 - 1e-6 for (_, a1), (b0, _) in zip(desc, desc[1:]))


def test_to_dict_is_json_and_profile_forms_agree(cm, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(synthetic_profile_dict()))
    plan = Plan("sam", "cpu:0", batch_size=B)
    by_path = simulate(plan, str(path), iterations=30, jitter=False)
    by_profile = simulate(plan, Profile.from_dict(synthetic_profile_dict()), iterations=30, jitter=False)
    by_cm = simulate(plan.to_dict(), cm, iterations=30, jitter=False)
    assert by_path.iteration_seconds == by_profile.iteration_seconds == by_cm.iteration_seconds
    json.dumps(by_cm.to_dict())


def test_compare_strategies_has_baselines_and_the_plan(cm):
    from hetsam.planning.compare import compare_strategies

    plan = Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 8})
    rows = compare_strategies(plan, cm, iterations=300, jitter=False)
    assert [r.label for r in rows[:2]] == ["SGD", "SAM"]
    assert sum(r.is_given for r in rows) == 1
    sgd = rows[0].iteration_seconds
    assert sgd == pytest.approx(0.01) and rows[1].iteration_seconds == pytest.approx(0.02)
    for r in rows:
        assert r.overhead_vs_sgd == pytest.approx(r.iteration_seconds / sgd - 1)
    assert {r.plan.strategy for r in rows} >= {"sgd", "sam", "rst", "async_sam", "sampa"}


# ---- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("iterations", [0, -5, 2.5, True, "10"])
def test_bad_iterations(cm, iterations):
    with pytest.raises(HetsamInputError, match="iterations"):
        simulate(Plan("sgd", "cpu:0"), cm, iterations=iterations)


def test_plan_device_missing_from_profile(cm):
    with pytest.raises(HetsamInputError, match=r"ascent_device.*cuda:1"):
        simulate(Plan("async_sam", "cpu:0", "cuda:1"), cm, iterations=10)
    with pytest.raises(HetsamInputError, match=r"descent_device.*cuda:3"):
        simulate(Plan("sgd", "cuda:3"), cm, iterations=10)


def test_other_bad_inputs(cm):
    with pytest.raises(HetsamInputError, match="loader_seconds"):
        simulate(Plan("sgd", "cpu:0"), cm, iterations=10, loader_seconds=-1)
    with pytest.raises(HetsamInputError, match="unknown field"):
        simulate({"strategy": "sgd", "bogus": 1}, cm)
    with pytest.raises(HetsamInputError, match="no link"):
        nolink = CostModel(Profile.from_dict(synthetic_profile_dict(links=[])))
        simulate(Plan("async_sam", "cuda:0", "cpu:0"), nolink, iterations=10)


def test_import_pulls_in_neither_torch_nor_matplotlib():
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import hetsam.simulator, hetsam.simulator.trace, hetsam.planning.compare\n"
        "from hetsam import Plan, simulate\n"
        "from _profiles import synthetic_profile_dict\n"
        "from hetsam.profiling.schema import Profile\n"
        "simulate(Plan('async_sam', 'cuda:0', 'cpu:0'), Profile.from_dict(synthetic_profile_dict()), iterations=50)\n"
        "bad = [m for m in ('torch', 'matplotlib', 'numpy', 'scipy') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
