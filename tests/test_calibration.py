"""Step costs in the cost model, and AutoSAM's calibration on the user's own steps.

- the profiler measures the update and the climb through the descent runtime, and the cost
  model, the planner's closed forms and the simulator all charge them (the climb to perturbed
  steps only);
- the calibration fits the per-step overhead of a real training loop, checked against the periods
  and the sleeps that loop measured in the same run (the timing claim, how close it comes to a
  planted sleep beside a busy process, is ``examples/bench_calibration.py``'s);
- a window whose median interval contains the prediction changes nothing (noise), a 2x slowdown
  calibrates and re-plans, and AutoSAM's counters continue across the switch.
"""

import math
import random
import time
from statistics import median

import pytest
import torch
from _alg_refs import batches, loss_fn, mlp
from _profiles import synthetic_profile_dict

from hetsam import AutoSAM, Plan
from hetsam.autosam.controller import PlanController
from hetsam.autosam.windows import StepWindow
from hetsam.cost.model import CostModel
from hetsam.planning.options import PlannerOptions
from hetsam.planning.search import plan as plan_for
from hetsam.profiling.measure import profile
from hetsam.profiling.schema import Profile
from hetsam.profiling.stats import median_ci
from hetsam.simulator import simulate


def cpu_profile(climb=None, update=0.001, scale=1.0):
    """The synthetic profile's two CPU devices only (no GPU), optionally with a climb time and
    every time scaled by ``scale``."""
    d = synthetic_profile_dict()
    d["devices"] = d["devices"][:2]
    d["links"] = d["links"][1:]
    for dev in d["devices"]:
        g = dev["grad_seconds"]
        g["median"] = [m * scale for m in g["median"]]
        g["spread"] = [s * scale for s in g["spread"]]
        dev["update_seconds"] = update * scale
        if climb is not None:
            dev["climb_seconds"] = climb * scale
    return Profile.from_dict(d)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path / "cache"))


# ---- step costs -----------------------------------------------------------------------------------
def test_the_profiler_measures_update_and_climb_through_the_runtime():
    prof = profile(mlp(), loss_fn, batches(1, b=32)[0], ["cpu:0"], batch_sizes=[8, 32], warmup=1, repeats=4,
                   contention=False, links=False, progress=False)
    (dev,) = prof.devices
    assert dev.update_seconds > 0 and dev.climb_seconds > 0 and dev.auxiliary_seconds > 0
    assert dev.sliced_handoff_seconds is not None and dev.sliced_handoff_seconds >= 0  # clipped at 0, never negative
    assert dev.grad_seconds.repeats == 4  # fixed repeats, spread over the rounds
    prov = prof.provenance
    assert prov["allocator"] in ("retained", "system (not glibc)")
    assert prov["ratio_repeatability"]["rounds"] == 4 and "batch_ratio" in prov["ratio_repeatability"]


def test_each_step_cost_is_timed_right_after_a_gradient_pass_on_its_gradients():
    # as in a step (hetsam.profiling.ladder.measure_step_costs): timed back to back in a loop, with
    # the caches warm, the update took 0.6x what it takes in AutoSAM's step
    from hetsam.profiling.ladder import TimedReplica, measure_step_costs
    from hetsam.profiling.targets import Target

    model = mlp()
    rep = TimedReplica(model, loss_fn, batches(1, b=16)[0], Target("cpu:0", "cpu", "cpu", threads=1))
    events, step, timed = [], rep.step, rep.timed

    def spy_step(n):
        events.append("pass")
        return step(n)

    def spy_timed(fn):
        events.append("timed")
        return timed(fn)

    rep.step, rep.timed = spy_step, spy_timed
    update, climb, aux = measure_step_costs(rep, 8, 2.0)
    assert update > 0 and climb > 0 and aux > 0
    assert events[0] == "pass" and len(events) >= 1 + 2 * 3 and len(events) % 2 == 1
    assert all(a == "pass" and b == "timed" for a, b in zip(events[1::2], events[2::2]))
    assert all(p.grad is None for p in rep.params)  # nothing left behind
    rep.release()


def test_sampas_side_is_its_rules_work_and_its_auxiliary_cost_excludes_the_climb():
    # DescentWork.sampa_side does what SAMPa's rule does on the descent's thread besides its pass and
    # update: θ ends where it began, p.grad = (1 − λ)·g_x + λ·g_y' (λ = 0.2), and g_y is used up by the climb
    from hetsam.profiling.ladder import DescentWork, TimedReplica, measure_step_costs
    from hetsam.profiling.targets import Target

    rep = TimedReplica(mlp(), loss_fn, batches(1, b=16)[0], Target("cpu:0", "cpu", "cpu", threads=1))
    work = DescentWork(rep)
    g_x, g_next = [g.detach().clone() for g in rep.step(16).grads], [g.detach().clone() for g in rep.step(8).grads]
    g_y = [g.clone() for g in g_next]
    before = [p.detach().clone() for p in rep.params]
    work.update([g.clone() for g in g_x])  # momentum buffers, as after a first step
    moved = [p.detach().clone() for p in rep.params]
    assert any(not torch.equal(a, b) for a, b in zip(before, moved))
    norm = torch.stack([g.norm() for g in g_y]).norm()
    work.sampa_side([g.clone() for g in g_x], g_y, norm, g_next)
    assert all(torch.equal(p, m) for p, m in zip(rep.params, moved))  # restored, twice
    for p, gx, gn in zip(rep.params, g_x, g_next):
        assert torch.allclose(p.grad, 0.8 * gx + 0.2 * gn)
    assert not all(torch.equal(a, b) for a, b in zip(g_y, g_next))  # the climb overwrote g_y (scratch)
    work.clear()
    update, climb, aux = measure_step_costs(rep, 8, 2.0)
    assert update > 0 and climb > 0 and aux >= 0
    rep.release()


def test_step_costs_enter_closed_forms_and_the_simulator_alike():
    u, c, b = 0.002, 0.01, 64
    cm = CostModel(cpu_profile(climb=c, update=u))
    t = cm.grad_seconds("cpu:0", b)
    assert cm.step_seconds("cpu:0", False) == pytest.approx(u)
    assert cm.step_seconds("cpu:0", True) == pytest.approx(u + c)
    exact = {"sgd": t + u, "sam": 2 * t + u + c}
    for name, seconds in exact.items():
        r = simulate(Plan(name, "cpu:0", batch_size=b), cm, iterations=50, jitter=False)
        assert r.iteration_seconds["mean"] == pytest.approx(seconds, rel=1e-12)
    # a calibrated loop term is charged to every step, perturbed or not
    loop = cm.calibrated(0.05)
    for name, seconds in exact.items():
        r = simulate(Plan(name, "cpu:0", batch_size=b), loop, iterations=50, jitter=False)
        assert r.iteration_seconds["mean"] == pytest.approx(seconds + 0.05, rel=1e-12)
    # the planner's closed form for SAM agrees with the simulator
    report = plan_for(cm, batch_size=b, simulate=False, descent_kind="cpu")
    sam = next(x for x in report.candidates if x.plan.strategy == "sam" and x.plan.descent_device == "cpu:0")
    assert sam.closed_form_seconds == pytest.approx(exact["sam"], rel=1e-12)


def test_async_sam_steps_after_the_first_tau_pay_the_climb():
    u, c, b = 0.002, 0.01, 64
    cm = CostModel(cpu_profile(climb=c, update=u))
    p = Plan("async_sam", "cpu:0", "cpu:0", batch_size=b, options={"ascent_batch_size": 8})  # time-sliced: serial
    r = simulate(p, cm, iterations=200, jitter=False)
    expected = cm.grad_seconds("cpu:0", b) + cm.grad_seconds("cpu:0", 8) + u + c
    assert r.iteration_seconds["p50"] == pytest.approx(expected, rel=1e-9)


# ---- the interval ---------------------------------------------------------------------------------
def test_median_interval_against_the_binomial_table():
    xs = list(range(1, 21))  # n = 20: the 95% interval of the median is (x_6, x_15)
    assert median_ci(xs) == (6, 15)
    assert median_ci(list(range(1, 11))) == (2, 9)  # n = 10: (x_2, x_9)
    assert median_ci([1.0, 2.0]) == (1.0, 2.0)
    w = StepWindow(window=5, warmup=2)
    assert [w.observe(x, gap=x / 10) for x in (9.0, 9.0, 1, 2, 3, 4)] == [None] * 6
    m, lo, hi, gaps = w.observe(5, gap=0.5)
    assert m == 3 and lo <= m <= hi and gaps == [0.1, 0.2, 0.3, 0.4, 0.5]  # the warm-up's gaps are not kept


# ---- the controller -------------------------------------------------------------------------------
# The controller's tests re-plan between RST settings (a larger p fits once the loop's own cost is
# known). Among every strategy, MSAM, whose step barely moves with that cost, would win every plan
# on the shipped share table and never switch.
SWITCHING = ("rst",)


def controller(budget=1.3, window=30, **kw):
    opts = PlannerOptions(profile=cpu_profile(), budget=budget, calibration_window=window, calibration_warmup=0,
                          strategies=SWITCHING, **kw)
    lines = []
    c = PlanController(opts, lines.append)
    first = c.choose(mlp(), loss_fn, batches(1, b=64)[0])
    return c, first, lines


def rst_periods(report, rng, slower=1.0, noise=0.05):
    """Step periods of the RST plan on the profile's machine: an SGD or a SAM step (with
    probability p), each with lognormal noise, all ``slower`` times as long."""
    p = report.plan.option("sam_probability")
    while True:
        base = report.sam_seconds if rng.random() < p else report.sgd_seconds
        yield slower * base * rng.lognormvariate(0.0, noise)


def test_noise_around_the_prediction_changes_nothing():
    c, first, lines = controller()
    assert first.strategy == "rst"
    periods = rst_periods(c.report, random.Random(0))
    for _ in range(10 * 30):  # ten windows of steps as the machine the profile describes runs them
        assert c.observe(next(periods)) is None
    assert c.loop_seconds == 0.0 and c.replans == 0
    assert len(c.calibration) <= 1  # a 95% interval misses about one window in twenty
    assert c.plan == first


def test_a_2x_slowdown_calibrates_and_replans_once():
    c, first, lines = controller()
    assert first.strategy == "rst"
    periods = rst_periods(c.report, random.Random(1), slower=2.0, noise=0.02)
    switched = [p for p in (c.observe(next(periods)) for _ in range(30)) if p]
    assert len(switched) == 1 and switched[0] != first
    (entry,) = c.calibration
    # the extra time is read as the loop's own work: about one SGD step (the window's median is an SGD step's)
    assert entry["loop_seconds"] == pytest.approx(entry["median_seconds"] / 2, rel=0.1)
    assert entry["decision"].startswith("switching from")
    # the switch was to the plan the calibrated planner predicts best; it predicts the new speed
    calibrated = CostModel(cpu_profile()).calibrated(c.loop_seconds)
    expected = plan_for(calibrated, batch_size=64, budget=1.3, descent_kind="cpu", strategies=SWITCHING).plan
    assert switched[0] == expected and switched[0].option("sam_probability") > first.option("sam_probability")
    assert any(line.startswith("hetsam: measured") for line in lines)
    # max_replans = 1: a second disagreement is recorded but never switches again
    for _ in range(60):
        assert c.observe(4 * c.report.sam_seconds) is None
    assert c.replans == 1 and c.calibration[-1]["decision"].startswith("kept")


def test_a_strategy_name_with_a_profile_gets_the_planners_numbers():
    lines = []
    opt = AutoSAM(mlp(), loss_fn, plan="async_sam", planner_options={"profile": "cpu-2core-resnet20"}, log=lines.append,
                  executor="inline", lr=0.05)
    assert opt.plan is None
    best = plan_for("cpu-2core-resnet20", batch_size=16, descent_kind="cpu", strategies=("async_sam",)).best_of("async_sam")
    with opt:
        opt.step(batches(1)[0])
    assert opt.plan == best.plan and opt.plan.option("ascent_batch_size") is not None
    assert any("the planner chose" in line and "b'=" in line for line in lines)


# ---- AutoSAM, end to end ----------------------------------------------------------------------------
def test_calibration_times_the_loops_own_work_in_a_real_loop():
    """The loop sleeps 20 ms between steps (as a slow data loader would), and its steps are slower
    than the (synthetic) profile says. The controller times the loop's own work itself (the gaps
    between steps), so what it learns is that work and not the machine's speed. Checked against
    what the loop measured in this run, never against a number of seconds: the window is the
    loop's periods, ℓ is the median of the gaps (which hold the sleeps), and the rest of the
    difference is reported as the passes' drift. How closely ℓ recovers a sleep beside a busy
    process is a timing claim: examples/bench_calibration.py measures it."""
    warmup, window, profile = 3, 20, cpu_profile(scale=0.05)
    options = {"profile": profile, "strategies": SWITCHING, "calibration_window": window, "calibration_warmup": warmup,
               "max_replans": 0}
    lines, starts, slept = [], [], []
    with AutoSAM(mlp(), loss_fn, planner_options=options, log=lines.append, executor="inline", lr=0.05) as opt:
        for batch in opt.prefetch(batches(30, b=32)):
            starts.append(time.perf_counter())
            opt.step(batch)
            before = time.perf_counter()
            time.sleep(0.02)
            slept.append(time.perf_counter() - before)
        stats = opt.stats()
    auto = stats["auto"]
    # every period holds a 20 ms sleep, far above the profile's step: the first window disagrees
    assert auto["calibration"] and stats["steps"] == 30, lines
    entry = auto["calibration"][0]
    periods = [b - a for a, b in zip(starts, starts[1:])][warmup:warmup + window]
    low, high = median_ci(periods)
    spread = (high - low) + 1e-3  # the median's 95% interval in this run, and where the clock reads a step
    assert entry["median_seconds"] == pytest.approx(median(periods), abs=spread)
    # ℓ is timed: the median gap, which holds the sleep and little else, never the whole period's excess
    sleeps = slept[warmup:warmup + window]
    assert entry["loop_timed"] and entry["loop_seconds"] == auto["timed_loop_seconds"]
    g_low, g_high = entry["loop_interval"]
    assert median(sleeps) - (g_high - g_low) - 1e-3 <= entry["loop_seconds"] < median(periods)
    assert entry["loop_seconds"] <= max(sleeps) + (median(periods) - median(sleeps))
    # the rest of the difference is the passes' drift against the profile (either sign: this machine's steps
    # against a synthetic profile), reported apart from ℓ
    assert math.isfinite(entry["pass_drift"]) and entry["pass_drift"] > -1


def test_counters_and_schedules_continue_across_a_switch():
    """A real loop, twice as slow as the (synthetic, 5x faster) profile predicts: AutoSAM switches
    plans, and the next plan runs from the next step with the step count, the learning-rate
    schedule and the base optimizer's state carried over."""
    lines = []
    fast = cpu_profile(scale=0.2)
    opts = {"profile": fast, "budget": 1.3, "calibration_window": 9, "calibration_warmup": 1, "strategies": SWITCHING}
    opt = AutoSAM(mlp(), loss_fn, torch.optim.SGD, planner_options=opts, log=lines.append, executor="inline", lr=0.1,
                  momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)
    with opt:
        for i, batch in enumerate(batches(14, b=64)):
            opt.step(batch)
            sched.step()
            if i == 0:
                first, predicted = opt.plan, opt.plan_report()["prediction"]["iteration_seconds"]
            time.sleep(2 * predicted)  # the rest of a period twice the prediction
        stats = opt.stats()
    assert opt.plan != first and stats["auto"]["replans"] == 1, lines
    assert stats["steps"] == 14
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9 ** 14)
    assert any("switching from" in line for line in lines)


def test_an_unstable_parallel_speedup_is_a_profile_warning():
    # per round, b -> median: the pool's time against its socket's swings (2.0x, 1.1x, ...) on a shared host
    from hetsam.profiling.stats import ratio_repeatability, unstable_speedup_note

    socket = [{64: 1.0, 512: 4.0}] * 4
    swinging = [{64: 2.0, 512: 8.0}, {64: 1.1, 512: 4.4}, {64: 2.0, 512: 8.0}, {64: 1.2, 512: 4.8}]
    steady = [{64: 2.0, 512: 8.0}, {64: 2.02, 512: 8.1}, {64: 1.98, 512: 7.95}, {64: 2.0, 512: 8.0}]
    rep = ratio_repeatability({"cpu:0": socket, "cpu:0[0]": swinging})
    note = unstable_speedup_note(rep)
    assert note is not None and "t(pool)/t(socket) varied by" in note and "--interleave-profile" in note
    data = synthetic_profile_dict()
    data["provenance"]["notes"] = note
    assert Profile.from_dict(data).warnings == (note,)  # shown with the command that measures again, as every warning
    assert unstable_speedup_note(ratio_repeatability({"cpu:0": socket, "cpu:0[0]": steady})) is None
    assert unstable_speedup_note({}) is None and unstable_speedup_note(ratio_repeatability({"cpu:0": socket})) is None
