import random

import pytest
from _profiles import synthetic_profile_dict

from hetsam import HetsamInputError
from hetsam.cost.model import CostModel, isotonic
from hetsam.profiling.schema import Profile


@pytest.fixture
def cm():
    return CostModel(Profile.from_dict(synthetic_profile_dict()))


def test_interpolates_exactly_at_and_between_points(cm):
    assert cm.grad_seconds("cpu:0", 16) == pytest.approx(0.05)
    assert cm.grad_seconds("cpu:0", 24) == pytest.approx((0.05 + 0.09) / 2)
    assert cm.grad_seconds("cpu", 64) == pytest.approx(0.17)  # alias resolves to cpu:0


def test_extrapolation_is_linear_above_and_bounded_below(cm):
    # above: last segment slope (0.17-0.09)/32 per sample
    assert cm.grad_seconds("cpu:0", 128) == pytest.approx(0.17 + 64 * (0.08 / 32))
    # below: first-segment line, never under the proportional bound t0*b/b0
    assert cm.grad_seconds("cpu:0", 4) == pytest.approx(max(0.03 * 4 / 8, 0.03 - 4 * (0.02 / 8)))
    assert 0 < cm.grad_seconds("cpu:0", 1) < cm.grad_seconds("cpu:0", 8)


def test_monotone_even_with_noisy_measurements():
    data = synthetic_profile_dict()
    data["devices"][0]["grad_seconds"]["median"] = [0.03, 0.08, 0.07, 0.17]  # a noisy dip
    cm = CostModel(Profile.from_dict(data))
    xs = [1 + i * 0.5 for i in range(400)]
    ys = [cm.grad_seconds("cpu:0", x) for x in xs]
    assert all(b >= a - 1e-15 for a, b in zip(ys, ys[1:]))


def test_isotonic_against_brute_force():
    rng = random.Random(0)
    for _ in range(50):
        v = [rng.random() for _ in range(6)]
        fit = isotonic(v)
        assert all(b >= a - 1e-12 for a, b in zip(fit, fit[1:]))
        assert sum(fit) == pytest.approx(sum(v))  # PAV preserves the total


def test_spread_scales_with_time(cm):
    assert cm.grad_spread("cpu:0", 32) == pytest.approx(0.009)
    assert cm.grad_spread("cpu:0[0]", 32) == 0.0


def test_copy_seconds(cm):
    assert cm.copy_seconds("cpu:0", "cuda:0", 4000) == pytest.approx(1e-5 + 4000 / 1e9)
    assert cm.copy_seconds("cuda:0", "cpu:0", 4000) == pytest.approx(1e-5 + 4000 / 1e9)  # symmetric fallback
    assert cm.copy_seconds("cpu:0[0]", "cpu:0[1]", 4000) == pytest.approx(1e-6 + 4000 / 4e9)  # socket link
    assert cm.copy_seconds("cuda:0", "cuda", 10**9) == 0.0


def test_pools_measured_and_derived(cm):
    # cpu:0[1] is not measured, but cpu:0[0] has the same core count
    assert cm.grad_seconds("cpu:0[1]", 32) == pytest.approx(0.17)
    assert cm.cores("cpu:0[1]") == 1
    assert cm.slowdown("cpu:0[1]", "cpu:0[0]") == pytest.approx(1.25)
    assert cm.slowdown("cpu:0[0]", "cpu:0[1]") == pytest.approx(1.2)
    assert cm.slowdown("cpu:0", "cuda:0") == 1.0
    assert cm.shares_cores("cpu:0", "cpu:0[1]") and not cm.shares_cores("cpu:0[0]", "cpu:0[1]")


def test_amdahl_derivation_reproduces_measured_points():
    # a 4-core socket and a 1-core pool measured: f is fitted, then a 2-core pool is derived
    data = synthetic_profile_dict()
    t1, f = 0.4, 0.8
    amdahl = lambda k: t1 * ((1 - f) + f / k)  # noqa: E731
    data["devices"] = [
        {"id": "cpu:0", "kind": "cpu", "name": "c", "cores": 4,
         "grad_seconds": {"batch_sizes": [32], "median": [amdahl(4)], "spread": [0.0]}},
        {"id": "cpu:0[0]", "kind": "cpu", "name": "c", "cores": 1,
         "grad_seconds": {"batch_sizes": [32], "median": [amdahl(1)], "spread": [0.0]}},
    ]
    data["links"], data["contention"] = [], []
    cm = CostModel(Profile.from_dict(data))
    assert cm.grad_seconds("cpu:0[0-1]", 32) == pytest.approx(amdahl(2))
    assert "Amdahl" in cm.derivations["cpu:0[0-1]"]


def test_bad_input(cm):
    with pytest.raises(HetsamInputError, match="cuda:3"):
        cm.grad_seconds("cuda:3", 8)
    with pytest.raises(HetsamInputError, match="-4"):
        cm.grad_seconds("cpu:0", -4)
    with pytest.raises(HetsamInputError, match="5 cores"):
        cm.grad_seconds("cpu:0[0-4]", 8)


def test_handoff_is_a_fixed_cost_of_a_worker_step_on_two_pools():
    # the profile's hand-off h (the threaded executor's step beyond its overlapped passes) is added
    # once per step to AsyncSAM and SAMPa on two pools, in the closed form and the simulator alike
    from hetsam.planning.plan import Plan
    from hetsam.simulator import simulate

    h = 0.004
    data = synthetic_profile_dict()
    data["contention"][0]["slowdown"] = [1.3, 1.0]  # the descent is the longer side: h shows in full
    plain = CostModel(Profile.from_dict(data))
    data["contention"][0]["handoff_seconds"] = h
    prof = Profile.from_dict(data)
    assert Profile.from_dict(prof.to_dict()) == prof  # the field round-trips
    cm = CostModel(prof)
    assert cm.handoff_seconds("cpu:0[0]", "cpu:0[1]") == cm.handoff_seconds("cpu:0[1]", "cpu:0[0]") == h
    assert cm.handoff_seconds("cpu:0[1]", "cpu:0[0]") == h and plain.handoff_seconds("cpu:0[0]", "cpu:0[1]") == 0.0
    assert cm.handoff_seconds("cpu:0", "cpu:0") == 0.0  # shared cores: time-sliced on one thread, no worker
    for strategy, options in (("async_sam", {"ascent_batch_size": 64, "staleness": 1}), ("sampa", {})):
        plan = Plan(strategy, descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64, options=options)
        with_h = simulate(plan, cm, iterations=200, jitter=False).iteration_seconds["p50"]
        without = simulate(plan, plain, iterations=200, jitter=False).iteration_seconds["p50"]
        assert with_h - without == pytest.approx(h, rel=1e-6), strategy
        assert plan.spec.closed_form_seconds(_Ctx(cm), plan) - plan.spec.closed_form_seconds(_Ctx(plain), plan) == \
            pytest.approx(h, rel=1e-6), strategy
    sgd = Plan("sgd", descent_device="cpu:0[0]", batch_size=64)
    assert simulate(sgd, cm, iterations=50, jitter=False).iteration_seconds["p50"] == \
        simulate(sgd, plain, iterations=50, jitter=False).iteration_seconds["p50"]


def test_a_time_sliced_job_costs_its_measured_handoff_once_per_step():
    # both roles on one device: the threaded executor runs the job on the calling thread; what that
    # costs beyond the bare pass (the device's sliced_handoff_seconds) is added once per step, in the
    # closed form, the planner's proposal and the simulator alike; two pools keep the pair's hand-off
    from hetsam.planning.plan import Plan
    from hetsam.simulator import simulate

    h = 0.002
    data = synthetic_profile_dict()
    plain = CostModel(Profile.from_dict(data))
    for dev in data["devices"]:
        dev["sliced_handoff_seconds"] = h
    prof = Profile.from_dict(data)
    assert Profile.from_dict(prof.to_dict()) == prof
    cm = CostModel(prof)
    assert cm.handoff_seconds("cpu:0", "cpu:0") == h and plain.handoff_seconds("cpu:0", "cpu:0") == 0.0
    assert cm.handoff_seconds("cpu:0[0]", "cpu:0[1]") == plain.handoff_seconds("cpu:0[0]", "cpu:0[1]")
    sliced = Plan("async_sam", descent_device="cpu:0", ascent_device="cpu:0", batch_size=64,
                  options={"ascent_batch_size": 16, "staleness": 1})
    added = simulate(sliced, cm, iterations=200, jitter=False).iteration_seconds["p50"] - \
        simulate(sliced, plain, iterations=200, jitter=False).iteration_seconds["p50"]
    closed = sliced.spec.closed_form_seconds(_Ctx(cm), sliced) - sliced.spec.closed_form_seconds(_Ctx(plain), sliced)
    assert added == pytest.approx(h, rel=1e-9) and closed == pytest.approx(h, rel=1e-9)
    pools = Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64,
                 options={"ascent_batch_size": 16, "staleness": 1})
    assert simulate(pools, cm, iterations=50, jitter=False).iteration_seconds["p50"] == \
        simulate(pools, plain, iterations=50, jitter=False).iteration_seconds["p50"]
    # SAM and RST run both passes on the calling thread, without a job: no hand-off
    for name, options in (("sam", {}), ("rst", {"sam_probability": 0.5}), ("sgd", {})):
        one = Plan(name, descent_device="cpu:0", batch_size=64, options=options)
        assert simulate(one, cm, iterations=50, jitter=False).iteration_seconds["mean"] == \
            simulate(one, plain, iterations=50, jitter=False).iteration_seconds["mean"], name
    for bad in (-0.001, float("inf"), "1"):
        data["devices"][0]["sliced_handoff_seconds"] = bad
        with pytest.raises(HetsamInputError, match="sliced_handoff_seconds"):
            Profile.from_dict(data)


def test_sampa_auxiliary_work_is_a_fixed_cost_of_sampa_steps_only():
    # SAMPa's y point, restore, norm and mix run on D before the submit and after the wait: a, once
    # per step, in the closed form and the simulator alike, whichever side of the step is longer
    from hetsam.planning.plan import Plan
    from hetsam.simulator import simulate

    a = 0.003
    for slowdown in ([1.3, 1.0], [1.0, 1.3]):
        data = synthetic_profile_dict()
        data["contention"][0]["slowdown"] = slowdown
        plain = CostModel(Profile.from_dict(data))
        for dev in data["devices"]:
            dev["auxiliary_seconds"] = a
        prof = Profile.from_dict(data)
        assert Profile.from_dict(prof.to_dict()) == prof  # the field round-trips
        cm = CostModel(prof)
        assert cm.auxiliary_seconds("cpu:0[0]") == a and plain.auxiliary_seconds("cpu:0[0]") == 0.0
        assert cm.auxiliary_seconds("cpu:0[1]") == a  # a pool derived from the socket keeps it
        plans = {"sampa": Plan("sampa", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64),
                 "async_sam": Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64,
                                   options={"ascent_batch_size": 64}),
                 "sam": Plan("sam", descent_device="cpu:0[0]", batch_size=64)}
        for name, plan in plans.items():
            added = simulate(plan, cm, iterations=200, jitter=False).iteration_seconds["p50"] - \
                simulate(plan, plain, iterations=200, jitter=False).iteration_seconds["p50"]
            closed = plan.spec.closed_form_seconds(_Ctx(cm), plan) - plan.spec.closed_form_seconds(_Ctx(plain), plan)
            expected = a if name == "sampa" else 0.0
            assert added == pytest.approx(expected, abs=1e-12) and closed == pytest.approx(expected, abs=1e-12), name
    for bad in (-0.001, float("inf"), "1"):
        data["devices"][0]["auxiliary_seconds"] = bad
        with pytest.raises(HetsamInputError, match="auxiliary_seconds"):
            Profile.from_dict(data)


def test_the_executors_round_trip_delays_a_jobs_result_only():
    # a lone job's round trip beyond its pass, less the hand-off that D's step already pays, lies on
    # the job's path: it costs exactly r where the descent waits for the job, and nothing where the
    # job is hidden, in the closed form and the simulator alike
    from hetsam.planning.plan import Plan
    from hetsam.profiling.merge import median_profile
    from hetsam.simulator import simulate

    h, trip = 0.004, 0.010
    d, a = "cpu:0[0]", "cpu:0[1]"
    for slowdown, waits in (([1.0, 1.0], True), ([1.3, 1.0], False)):  # equal pools: the job's path is the longer
        data = synthetic_profile_dict()
        data["contention"][0].update(slowdown=slowdown, handoff_seconds=h)
        plain = CostModel(Profile.from_dict(data))
        data["contention"][0]["round_trip_seconds"] = trip
        prof = Profile.from_dict(data)
        assert Profile.from_dict(prof.to_dict()) == prof  # the field round-trips
        cm = CostModel(prof)
        assert cm.job_latency_seconds(d, a) == cm.job_latency_seconds(a, d) == pytest.approx(trip - h)
        assert plain.job_latency_seconds(d, a) == 0.0 and cm.job_latency_seconds("cpu:0", "cpu:0") == 0.0
        plans = {"sampa": Plan("sampa", descent_device=d, ascent_device=a, batch_size=64),
                 "async_sam b'=64": Plan("async_sam", descent_device=d, ascent_device=a, batch_size=64,
                                         options={"ascent_batch_size": 64, "staleness": 1}),
                 "async_sam b'=8": Plan("async_sam", descent_device=d, ascent_device=a, batch_size=64,
                                        options={"ascent_batch_size": 8, "staleness": 1}),
                 "sliced": Plan("async_sam", descent_device="cpu:0", ascent_device="cpu:0", batch_size=64,
                                options={"ascent_batch_size": 16, "staleness": 1})}
        for name, plan in plans.items():
            added = simulate(plan, cm, iterations=200, jitter=False).iteration_seconds["p50"] - \
                simulate(plan, plain, iterations=200, jitter=False).iteration_seconds["p50"]
            closed = plan.spec.closed_form_seconds(_Ctx(cm), plan) - plan.spec.closed_form_seconds(_Ctx(plain), plan)
            if waits and name == "async_sam b'=64":  # its window also holds the update and h: part of r shows
                assert 0.0 < added <= trip - h and 0.0 < closed <= trip - h, name
                continue
            expected = trip - h if waits and name == "sampa" else 0.0
            assert added == pytest.approx(expected, abs=1e-9) and closed == pytest.approx(expected, abs=1e-9), name
    # a round trip under the hand-off adds nothing; merged profiles keep the median
    data["contention"][0]["round_trip_seconds"] = h / 2
    assert CostModel(Profile.from_dict(data)).job_latency_seconds(d, a) == 0.0
    trips = (0.002, 0.009, 0.003)
    merged = median_profile([Profile.from_dict({**data, "contention": [{**data["contention"][0], "round_trip_seconds": x}]})
                             for x in trips])
    assert merged.contention[0].round_trip_seconds == 0.003
    for bad in (-0.001, float("inf"), "1", 1e9):
        data["contention"][0]["round_trip_seconds"] = bad
        with pytest.raises(HetsamInputError, match="round_trip_seconds"):
            Profile.from_dict(data)


def test_handoff_out_of_bounds_is_refused():
    data = synthetic_profile_dict()
    for bad in (-0.001, float("inf"), "1"):
        data["contention"][0]["handoff_seconds"] = bad
        with pytest.raises(HetsamInputError, match="handoff_seconds"):
            Profile.from_dict(data)


class _Ctx:
    """The part of a PlanningContext the closed forms read."""

    def __init__(self, cm, batch_size=64):
        from hetsam.cost.closed_form import descent_step

        self.cm, self.batch_size, self.scale = cm, batch_size, None
        self.descent_step = lambda device, compute, perturbed=False: descent_step(cm, None, device, compute, perturbed)


def test_slowdowns_follow_the_jobs_batch_when_measured_at_several():
    # measured with the job at 16 and 64: exact there, linear in log(batch) between, the nearest beyond;
    # without a job batch (or without points) the profile's own factor
    from hetsam.profiling.pairs import at_job_batch

    data = synthetic_profile_dict()
    data["contention"][0]["by_job_batch"] = [{"batch": 16, "slowdown": [1.5, 1.8]}, {"batch": 64, "slowdown": [1.2, 1.25]}]
    prof = Profile.from_dict(data)
    assert Profile.from_dict(prof.to_dict()) == prof  # round-trips
    cm = CostModel(prof)
    d, a = "cpu:0[0]", "cpu:0[1]"
    assert cm.slowdown(d, a, 16) == 1.5 and cm.slowdown(a, d, 16) == 1.8
    assert cm.slowdown(d, a, 64) == 1.2 and cm.slowdown(a, d, 64) == 1.25
    assert cm.slowdown(d, a, 32) == pytest.approx(1.35)  # halfway in log(batch)
    assert cm.slowdown(d, a, 4) == 1.5 and cm.slowdown(d, a, 128) == 1.2
    assert cm.slowdown(d, a) == 1.2  # no job batch: the profile's factor
    assert CostModel(Profile.from_dict(synthetic_profile_dict())).slowdown(d, a, 16) == 1.2  # no points
    assert at_job_batch([(8, 2.0)], 1) == at_job_batch([(8, 2.0)], 100) == 2.0


@pytest.mark.parametrize("bad, match", [
    ([{"batch": 64, "slowdown": [1.2, 1.2]}, {"batch": 16, "slowdown": [1.5, 1.5]}], "strictly ascending"),
    ([{"batch": 0, "slowdown": [1.2, 1.2]}], "batch"),
    ([{"batch": 16, "slowdown": [1.2]}], "two slowdown factors"),
    ([{"batch": 16, "slowdown": [1.2, -1]}], "slowdown"),
    ([{"batch": 16}], "slowdown"),
    ("16", "by_job_batch"),
])
def test_bad_job_batch_slowdowns_are_refused(bad, match):
    data = synthetic_profile_dict()
    data["contention"][0]["by_job_batch"] = bad
    with pytest.raises(HetsamInputError, match=match):
        Profile.from_dict(data)


def test_the_planner_and_simulator_price_a_small_job_with_its_own_slowdowns():
    # the same plan costs more where the job at its b' is measured slower, in the closed form and the
    # simulator alike; at b' = b nothing changes
    from hetsam.planning.plan import Plan
    from hetsam.simulator import simulate

    base = synthetic_profile_dict()
    slower = synthetic_profile_dict()
    slower["contention"][0]["by_job_batch"] = [{"batch": 16, "slowdown": [2.0, 3.0]}, {"batch": 64, "slowdown": [1.2, 1.25]}]
    cms = [CostModel(Profile.from_dict(x)) for x in (base, slower)]
    for size, more in ((16, True), (64, False)):
        plan = Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64,
                    options={"ascent_batch_size": size})
        closed = [plan.spec.closed_form_seconds(_Ctx(cm), plan) for cm in cms]
        sim = [simulate(plan, cm, iterations=100, jitter=False).iteration_seconds["p50"] for cm in cms]
        assert (closed[1] > closed[0] and sim[1] > sim[0]) if more else (closed[1] == closed[0] and sim[1] == sim[0])


def test_median_profile_takes_medians_and_keeps_common_points_only():
    # the bench's per-round profiles merged: medians per point, contention with the job at each batch too
    from hetsam.profiling.merge import median_profile

    dicts = []
    for k, (s16, s64) in enumerate(((1.5, 1.2), (1.9, 1.4), (1.7, 1.3))):
        d = synthetic_profile_dict()
        d["devices"][0]["grad_seconds"]["median"] = [x * (1 + k / 10) for x in d["devices"][0]["grad_seconds"]["median"]]
        d["contention"][0]["slowdown"] = [s64, s64]
        d["contention"][0]["by_job_batch"] = [{"batch": 16, "slowdown": [s16, s16 + 1]}, {"batch": 64, "slowdown": [s64, s64]}]
        if k == 2:
            d["contention"][0]["by_job_batch"].insert(0, {"batch": 4, "slowdown": [3.0, 3.0]})  # only in one profile
        dicts.append(d)
    merged = median_profile([Profile.from_dict(d) for d in dicts])
    (c,) = merged.contention
    assert c.slowdown == (1.3, 1.3)
    assert c.by_job_batch == ((16, (1.7, 2.7)), (64, (1.3, 1.3)))
    assert merged.devices[0].grad_seconds.median == pytest.approx([x * 1.1 for x in dicts[0]["devices"][0]["grad_seconds"]["median"]])
    without = median_profile([Profile.from_dict(synthetic_profile_dict()), Profile.from_dict(dicts[0])])
    assert without.contention[0].by_job_batch == ()  # not measured in every profile: dropped
