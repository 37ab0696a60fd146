"""A strategy's settings are its plan's options: AutoSAM takes them through the plan or one
``options=`` mapping (its old keywords of one strategy still work, with one FutureWarning), and
the facts of a run reach every rule through one RunContext."""

import warnings

import pytest
import torch
from _alg_refs import batches, loss_fn, mlp

from hetsam import AutoSAM, HetsamInputError, Plan
from hetsam.strategies.run import RunContext


def run(steps=4, **kwargs):
    torch.manual_seed(0)
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, executor="inline", lr=0.1, log=lambda line: None, seed=3,
                 **kwargs) as opt:
        losses = [opt.step(b) for b in opt.prefetch(batches(steps))]
        return opt.plan, losses, opt.stats()


def test_options_of_a_named_strategy_become_the_plans():
    plan, losses, stats = run(plan="rst", options={"sam_probability": 0.25, "grst_alpha": 0.5})
    assert plan == Plan("rst", options={"sam_probability": 0.25, "grst_alpha": 0.5})
    given, same, _ = run(plan=Plan("rst", options={"sam_probability": 0.25, "grst_alpha": 0.5}))
    assert given == plan and same == losses
    # options= replaces a given Plan's
    replaced, _, _ = run(plan=Plan("async_sam", options={"staleness": 1}), options={"ascent_batch_size": 4})
    assert replaced.options == {"ascent_batch_size": 4, "staleness": 1, "ascent_batches": "lookahead"}


@pytest.mark.parametrize("kwargs, words", [
    (dict(plan="sgd", options={"sampa_lambda": 0.9}), "strategy 'sgd' has no option 'sampa_lambda' (its options: none)"),
    (dict(plan="async_sam", options={"sam_probability": 0.5}), "its options: ascent_batch_size, staleness, ascent_batches"),
    (dict(plan="rst", options={"sam_probability": 1.5}), "'sam_probability']=1.5"),
    (dict(plan="auto", options={"sam_probability": 0.5}), "plan='auto' lets the planner choose them"),
    (dict(plan="sampa", options={"sampa_lambda": lambda t: 0.5}), "takes a schedule only for none"),
    (dict(plan="rst", options=[("sam_probability", 0.5)]), "must be a mapping"),
])
def test_options_are_refused_in_one_line(kwargs, words):
    with pytest.raises(HetsamInputError) as info:
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, executor="inline", lr=0.1, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_schedule_of_an_option_that_takes_one_runs():
    plan, _, stats = run(steps=6, plan="rst", options={"sam_probability": lambda t: 1.0 if t % 2 else 0.0})
    assert plan.option("sam_probability") == 0.5  # the plan keeps a number; the schedule is the run's
    assert stats["sam_steps"] == 3 and stats["coin_flips"] == 6


@pytest.mark.parametrize("old, new", [
    (dict(sam_probability=0.25), dict(options={"sam_probability": 0.25})),
    (dict(grst_alpha=0.5), dict(options={"grst_alpha": 0.5})),
])
def test_a_deprecated_keyword_warns_once_and_still_works(old, new):
    with pytest.warns(FutureWarning, match=f"AutoSAM\\({next(iter(old))}=...\\) is deprecated") as caught:
        plan, losses, _ = run(plan="rst", **old)
    assert len([w for w in caught if issubclass(w.category, FutureWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new form warns about nothing
        want_plan, want, _ = run(plan="rst", **new)
    assert plan == want_plan and losses == want
    with pytest.warns(FutureWarning):  # a strategy without that setting ignores it, as before
        assert run(plan="sgd", **old)[0] == Plan("sgd")


def test_a_deprecated_keyword_with_plan_auto_is_checked_now():
    with pytest.warns(FutureWarning), pytest.raises(HetsamInputError, match="grst_alpha'\\]=1.5"):
        AutoSAM(mlp(), loss_fn, torch.optim.SGD, lr=0.1, grst_alpha=1.5)


def test_the_run_context_carries_the_runs_facts_to_every_rule():
    ctx = RunContext(total_steps=10)
    ctx.learn(total_steps=99, warmup_steps=2)  # a framework's numbers never replace the user's
    assert (ctx.total_steps, ctx.warmup_steps) == (10, 2)
    ctx.steps_before = 1
    assert ctx.warmup_left() == 1 and ctx.state_dict() == {"total_steps": 10, "warmup_steps": 2}
    with pytest.raises(HetsamInputError, match="total_steps"):
        ctx.total_steps = 0
    with pytest.raises(AttributeError, match="its facts"):
        ctx.sam_probability = 0.5
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=Plan("late_phase", options={"start": 0.5}), executor="inline",
                 lr=0.1, log=lambda line: None) as opt:
        opt.run.learn(total_steps=4)  # as an integration does
        assert opt.total_steps == 4 and opt._parts._ctx.run is opt.run
        for b in batches(4):
            opt.step(b)
        assert opt.stats()["first_sam_step"] == 2 and opt.stats()["sam_steps"] == 2
        state = opt.state_dict()
    assert state["hetsam"]["total_steps"] == 4
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, plan=Plan("late_phase", options={"start": 0.5}), executor="inline",
                 lr=0.1, log=lambda line: None) as resumed:
        resumed.load_state_dict(state)
        assert resumed.run.total_steps == 4
