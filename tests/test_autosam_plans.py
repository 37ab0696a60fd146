"""How AutoSAM chooses, logs and reports its plan, and MSAM's warm-up, against real torch.

- ``strategies=`` restricts the planner (validated); the base optimizer's family reaches it;
- every plan is logged once at its first step with its share and interval, and
  ``plan_report()`` says the same;
- re-planning after a calibration compares by the planner's objective, not by time alone;
- MSAM does not climb while the learning rate rises, nor in ``warmup_steps``.
"""

from __future__ import annotations

import random

import pytest
import torch
from _alg_refs import batches, flat, loss_fn, mlp, save_load
from _profiles import synthetic_profile_dict

from hetsam import AutoSAM, HetsamInputError, Plan
from hetsam.autosam.controller import PlanController
from hetsam.planning.options import PlannerOptions
from hetsam.profiling.schema import Profile

SGD_MOMENTUM = dict(lr=0.1, momentum=0.9)


def cpu_profile():
    """The synthetic profile's two CPU devices (no GPU): planning needs no measurement."""
    d = synthetic_profile_dict()
    d["devices"] = d["devices"][:2]
    d["links"] = d["links"][1:]
    return Profile.from_dict(d)


def auto(base=torch.optim.SGD, planner_options=None, **kw):
    lines = []
    options = {"profile": cpu_profile(), **(planner_options or {})}
    kw = {**(SGD_MOMENTUM if base is torch.optim.SGD else {"lr": 1e-3}), **kw}
    opt = AutoSAM(mlp(), loss_fn, base, planner_options=options, executor="inline", log=lines.append, **kw)
    return opt, lines


# ---- strategies= and the base optimizer's family --------------------------------------------------
@pytest.mark.parametrize("value, match", [
    ("rst", "must be a list of strategy names"),
    ([], "leaves the planner nothing"),
    (["rst", "adam"], "'adam' is not a registered strategy"),
    ([1], "must be a list"),
])
def test_strategies_must_be_a_list_of_registered_names(value, match):
    with pytest.raises(HetsamInputError, match=match):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, strategies=value, **SGD_MOMENTUM)


def test_strategies_with_a_fixed_plan_or_twice_is_refused():
    for plan in ("sam", Plan("rst")):
        with pytest.raises(HetsamInputError, match="plan=.* is fixed"):
            AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=plan, strategies=["rst"], **SGD_MOMENTUM)
    with pytest.raises(HetsamInputError, match="both given"):
        auto(planner_options={"strategies": ["rst"]}, strategies=["rst"])


@pytest.mark.parametrize("wanted", [["rst"], ["interval", "late_phase"], ["sam"]])
def test_strategies_restrict_the_planners_choice(wanted):
    opt, lines = auto(strategies=wanted, total_steps=100)
    with opt:
        opt.step(batches(1)[0])
    assert opt.plan.strategy in (*wanted, "sgd", "sam")  # the baselines are always candidates
    assert {c.plan.strategy for c in opt.planner_report.candidates} <= {*wanted, "sgd", "sam"}


def test_strategies_that_cannot_run_are_named():
    opt, _ = auto(strategies=["msam"], momentum=0.0)
    with pytest.raises(HetsamInputError, match="none of strategies=\\['msam'\\] can run.*momentum"):
        opt.step(batches(1)[0])


@pytest.mark.parametrize("base, kw, family", [
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, "sgd"),
    (torch.optim.SGD, {"lr": 0.1}, None),  # no momentum: no family (and no MSAM)
    (torch.optim.Adam, {"lr": 1e-3}, "adam"),
    (torch.optim.AdamW, {"lr": 1e-3}, "adam"),
    (torch.optim.NAdam, {"lr": 1e-3}, "adam"),
    (torch.optim.RAdam, {"lr": 1e-3}, "adam"),
    (torch.optim.Adagrad, {"lr": 1e-2}, None),
])
def test_the_base_optimizers_family_reaches_the_planner(base, kw, family):
    opt = AutoSAM(mlp(), loss_fn, base, planner_options={"profile": cpu_profile()}, log=lambda _: None, **kw)
    assert opt._controller.options.base_optimizer == family
    # the user's own setting wins, in a dict or in PlannerOptions
    mine = AutoSAM(mlp(), loss_fn, base, planner_options={"profile": cpu_profile(), "base_optimizer": "sgd"}, **kw)
    assert mine._controller.options.base_optimizer == "sgd"
    given = PlannerOptions(profile=cpu_profile(), base_optimizer="adam")
    assert AutoSAM(mlp(), loss_fn, base, planner_options=given, **kw)._controller.options.base_optimizer == "adam"


def test_msam_radii_follow_the_family():
    """The evidence tested MSAM's radii for SGD only: with Adam the planner proposes none."""
    for base, has_msam in ((torch.optim.SGD, True), (torch.optim.Adam, False)):
        opt, _ = auto(base)
        with opt:
            opt.step(batches(1)[0])
        strategies = {c.plan.strategy for c in opt.planner_report.candidates}
        assert ("msam" in strategies) == has_msam, strategies


# ---- every plan is logged once ------------------------------------------------------------------
def plan_lines(lines):
    return [x for x in lines if x.startswith("hetsam: plan ")]


@pytest.mark.parametrize("plan", ["async_sam", Plan("async_sam", options={"ascent_batch_size": 8}), "sam", "msam"],
                         ids=["name", "Plan", "sam", "msam"])
def test_a_named_or_given_plan_is_logged_once_with_its_share(plan):
    lines = []
    data = batches(4)
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=plan, executor="inline", log=lines.append, **SGD_MOMENTUM) as opt:
        assert lines == []  # at the first step, when the batch size is known
        for b in data:
            opt.step(b, upcoming=[b])
        report = opt.plan_report()
    (line,) = plan_lines(lines)
    assert opt.plan.describe() in line and "share of SAM's gain" in line and "\n" not in line
    assert report["share_text"] in line and report["chosen_by"] == "you" and report["prediction"] is None
    if opt.plan.strategy == "async_sam":
        assert "time-sliced on cpu" in line and "interval" in line
        assert report["share"]["share_interval"] is not None
    if opt.plan.strategy == "sam":
        assert "100% (by definition)" in line


def test_plan_auto_logs_its_numbers_share_interval_and_runner_up_once():
    opt, lines = auto()
    with opt:
        for b in batches(3):
            opt.step(b, upcoming=[b])
        report = opt.plan_report()
    (line,) = plan_lines(lines)
    chosen = opt.planner_report.chosen
    assert "ms/step" in line and chosen.share.text() in line and "runner-up" in line
    assert report["chosen_by"] == "planner" and report["why"] == opt.planner_report.why()
    assert report["prediction"]["iteration_seconds"] == chosen.prediction.iteration_seconds
    assert report["share"] == chosen.share.to_dict() and report["base_optimizer"] == "sgd"


def test_plan_report_before_the_first_step():
    opt, _ = auto()
    assert opt.plan_report()["plan"] is None and "first step" in opt.plan_report()["why"]


# ---- re-planning by the objective ----------------------------------------------------------------
def controller(budget=1.3, **kw):
    opts = PlannerOptions(profile=cpu_profile(), budget=budget, calibration_window=30, calibration_warmup=0,
                          strategies=("rst",), **kw)
    lines = []
    c = PlanController(opts, lines.append)
    first = c.choose(mlp(), loss_fn, batches(1, b=64)[0])
    return c, first, lines


def run_windows(c, slower, seed=1, windows=1):
    """Step periods of the running RST plan, ``slower`` times the profile's, with 2% noise."""
    rng, p = random.Random(seed), c.report.plan.option("sam_probability")
    out = []
    for _ in range(30 * windows):
        base = c.report.sam_seconds if rng.random() < p else c.report.sgd_seconds
        out.append(c.observe(slower * base * rng.lognormvariate(0.0, 0.02)))
    return [x for x in out if x is not None]


def test_a_better_objective_switches_and_the_line_has_both_shares():
    c, first, lines = controller()
    (switched,) = run_windows(c, 2.0)
    (decision,) = [x for x in lines if "switching from" in x]
    assert first.describe() in decision and switched.describe() in decision and decision.count("share") >= 2
    assert "more than a near-tie" in decision
    assert c.stats()["plans"][-1]["why"] == c.switch_reason


def test_a_choice_within_a_near_tie_keeps_the_running_plan():
    """A slightly slower loop lets RST's p grow a little: the calibrated planner prefers it, but by
    less than a near-tie of the objective, and the running plan still fits: nothing switches."""
    c, first, lines = controller()
    assert run_windows(c, 1.06, windows=3) == []
    decisions = [e.get("decision", "") for e in c.calibration]
    assert any(d.startswith("kept " + first.describe()) and "near-tie" in d for d in decisions), decisions
    assert c.plan == first and c.replans == 0
    assert any(x.startswith("hetsam: kept") and x.count("share") >= 2 for x in lines)


def test_a_plan_beyond_the_calibrated_budget_is_replaced():
    """A running plan that no longer fits the calibrated budget beyond the noise is replaced
    even when the choice keeps less of SAM's gain (here: SAM, 2x SGD, under a 1.3x budget)."""
    from hetsam.planning.search import plan as plan_for

    c, first, _ = controller()
    c.plan = Plan("sam", descent_device=first.descent_device, batch_size=64)
    report = plan_for(c.cm.calibrated(0.0), batch_size=64, budget=1.3, descent_kind="cpu", strategies=("rst",))
    reason = c._reason_to_switch(report, 0.0, half=0.001)
    assert reason is not None and "no longer fits the calibrated budget" in reason
    assert c._reason_to_switch(report, 0.0, half=10.0) is None  # within the noise: the objective decides (SAM's 100%)


# ---- MSAM's warm-up --------------------------------------------------------------------------------
def msam_run(steps, *, warmup_iters=None, warmup_steps=None, data_seed=1, state=None, start=0):
    model = mlp()
    opt = AutoSAM(model, loss_fn, torch.optim.SGD, plan=Plan("msam", options={"rho": 0.5}), executor="inline",
                  warmup_steps=warmup_steps, log=lambda _: None, **SGD_MOMENTUM)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=warmup_iters) \
        if warmup_iters else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
    climbed = []
    with opt:
        for b in batches(steps, seed=data_seed)[start:]:
            before = opt.stats()["perturbed_steps"] if opt.stats()["plan"] else 0
            opt.step(b)
            climbed.append(opt.stats()["perturbed_steps"] > before)
            if sched is not None:
                sched.step()
        snapshot = save_load({"model": model.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict() if sched else None})
        return climbed, opt.stats(), model, snapshot


def test_msam_does_not_climb_while_a_linear_warmup_raises_the_lr():
    n, steps = 10, 30
    climbed, stats, _, _ = msam_run(steps, warmup_iters=n)
    # step 0 has no momentum; steps 1..n run at a higher lr than the step before
    assert climbed == [False] * (n + 1) + [True] * (steps - n - 1)
    assert stats["msam"]["warmup_steps_skipped"] == n and stats["perturbed_steps"] == steps - n - 1


def test_msam_warmup_steps_forces_plain_steps():
    climbed, stats, _, _ = msam_run(20, warmup_steps=7)
    assert climbed == [False] * 7 + [True] * 13  # constant lr: only the warm-up count holds it back
    assert stats["msam"]["warmup_steps_skipped"] == 6 and stats["warmup_steps"] == 7


def test_msam_warmup_counters_resume_exactly_from_a_checkpoint():
    whole, stats, model, _ = msam_run(24, warmup_iters=12)
    first, _, _, state = msam_run(8, warmup_iters=12)
    rest, again, resumed, _ = msam_run(24, warmup_iters=12, state=state, start=8)
    assert first + rest == whole  # the lr of the step before travels in the checkpoint
    assert again["msam"] == stats["msam"] and torch.equal(flat(resumed), flat(model))


def test_warmup_steps_is_bounded():
    with pytest.raises(HetsamInputError, match="warmup_steps"):
        AutoSAM(mlp(), loss_fn, plan="msam", warmup_steps=-1, **SGD_MOMENTUM)
    opt = AutoSAM(mlp(), loss_fn, plan="msam", **SGD_MOMENTUM)
    with pytest.raises(HetsamInputError, match="warmup_steps"):
        opt.warmup_steps = 1.5
