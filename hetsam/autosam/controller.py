"""What ``AutoSAM(plan="auto")`` does: plan from a profile, then calibrate on the user's own steps.

- :func:`plan_for_model` plans on ``PlannerOptions.profile`` when one is given, else on a profile
  of ``model`` measured on this machine with the first batch as the sample (through
  :mod:`hetsam.profiling.cache`, so a second run of the same setup measures nothing), keeping the
  descent on the device the model lives on.
- :class:`StepWindow` collects the measured step *periods* (start of one step to the start of the
  next, so the training loop's own work between steps is in them) after ``warmup`` steps, and
  every ``window`` steps returns their median with a distribution-free confidence interval
  (:func:`hetsam.profiling.stats.median_ci`).
- :class:`PlanController` compares each window with the running plan's prediction. When the
  prediction lies inside the interval the difference is noise, and nothing happens. Otherwise it
  *calibrates* ℓ, the loop's own work per step on the descent device (data loading, logging,
  Python around ``step``). ℓ is timed, not inferred: AutoSAM hands over each step's *gap*, from
  the end of one ``step()`` to the start of the next, and ℓ is the median gap pooled over the
  windows since the plan started (their latest ``GAP_POOL`` gaps). A uniformly slower machine lengthens the passes, not the gaps,
  so drift never enters ℓ; the window's remaining difference is reported as the passes' drift.
  (A caller that gives only periods gets ℓ fitted so that the prediction meets the median.)
  Only when ℓ moved beyond the pooled gaps' interval does the controller plan again on the
  calibrated cost model (``CostModel.calibrated(ℓ)``, docs/architecture.md "Step costs"),
  without measuring anything; drift alone moves every plan alike and keeps the running one. The
  calibrated planner's choice replaces the running plan, at most ``max_replans`` times, when

  - the running plan no longer fits the calibrated budget beyond the noise: its predicted
    typical step exceeds ``budget × SGD``, both calibrated, by more than the interval's
    half-width; or
  - the choice's objective value (``Candidate.objective_value``: the share of SAM's gain the
    evidence supports, or its point estimate with ``objective="expected"``) beats the running
    plan's by more than a near-tie (``hetsam.defaults.NEAR_TIE``).

  Time alone never switches: a faster plan that keeps no more of SAM's gain is not worth a
  switch. Each decision between two plans is logged in one line with both shares. Identical runs
  therefore keep identical plans unless a difference is real; the step counters, schedules and
  statistics of AutoSAM continue across a switch.

ℓ is one number per step: a cost that scales with the number of passes (a slow ``loss_fn``)
is charged once per step whatever the strategy, so a calibration on a one-pass plan undercounts
it for SAM. ``stats()["auto"]["calibration"]`` reports every window that disagreed, what was
fitted and what was decided.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from hetsam.autosam.windows import StepWindow, calibrated_text
from hetsam.hardware.kinds import kind_of, torch_device_name
from hetsam.planning.options import PlannerOptions
from hetsam.profiling.stats import median, median_ci

GAP_POOL = 1024  # the most recent gaps ℓ is pooled over (34 windows of the default 30 steps)

__all__ = ["PlannerOptions", "plan_for_model", "StepWindow", "describe_choice", "PlanController", "controller_for"]

_FIT_ITERATIONS = 4  # fixed-point steps of ℓ (the period is not exactly additive in ℓ when an ascent is exposed)


def check_strategies(value) -> tuple[str, ...]:
    """``AutoSAM(strategies=...)``: a non-empty list of registered strategy names."""
    from hetsam import strategies as registry
    from hetsam.errors import HetsamInputError

    known = ", ".join(registry.names())
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise HetsamInputError(f"strategies={value!r} must be a list of strategy names, e.g. [{known.split(', ')[-1]!r}]"
                               f" (known: {known})")
    if not value:
        raise HetsamInputError(f"strategies=[] leaves the planner nothing to choose; name at least one of {known}, "
                               "or drop it for all")
    unknown = [v for v in value if v not in registry.names()]
    if unknown:
        raise HetsamInputError(f"strategies: {', '.join(map(repr, unknown))} is not a registered strategy; known: {known}")
    return tuple(dict.fromkeys(value))


def controller_for(plan, planner_options, model, log: Callable[[str], None], *, strategies=None,
                   base_family: str | None = None, step_costs=None) -> PlanController | None:
    """The controller of an AutoSAM whose plan the planner chooses: ``plan="auto"``, or a
    strategy name with ``planner_options["profile"]`` (the planner chooses its numbers). None
    for a given plan, which takes no planner options (``model`` is not read; the rank context
    comes later, :meth:`PlanController.bind_ranks`). ``strategies`` (AutoSAM's ``strategies=``)
    restricts ``plan="auto"``; ``base_family`` fills ``PlannerOptions.base_optimizer`` unless
    the user set it; ``step_costs``: :attr:`PlanController.step_costs`."""
    import dataclasses

    from hetsam import strategies as registry
    from hetsam.errors import HetsamInputError

    auto = isinstance(plan, str) and plan == "auto"
    if strategies is not None:
        if not auto:
            raise HetsamInputError(f"strategies= restricts the planner's choice, but plan={_short(plan)} is fixed; drop "
                                   "strategies=, or use plan='auto'")
        strategies = check_strategies(strategies)
    options = PlannerOptions.from_value(planner_options) if planner_options is not None else None
    if strategies is not None and options is not None and options.strategies is not None:
        raise HetsamInputError("strategies= and planner_options['strategies'] are both given; give the list once")
    strategy = None
    if isinstance(plan, str) and plan in registry.names() and options is not None and options.profile is not None:
        strategy, options = plan, dataclasses.replace(options, strategies=(plan,))
    elif not auto:
        if options is not None:
            raise HetsamInputError("planner_options applies to plan='auto', or to a strategy name with "
                                   "planner_options['profile'] (the planner then chooses its numbers); drop it")
        return None
    options = options or PlannerOptions()
    user_set = isinstance(planner_options, dict) and "base_optimizer" in planner_options or \
        isinstance(planner_options, PlannerOptions) and options.base_optimizer != PlannerOptions.base_optimizer
    if not user_set:
        options = dataclasses.replace(options, base_optimizer=base_family)
    if strategies is not None:
        options = dataclasses.replace(options, strategies=strategies)
    controller = PlanController(options, log, strategy=strategy)  # under DDP, bind_ranks follows (at construction)
    controller.step_costs = step_costs
    return controller


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_for_model(model, loss_fn, sample_batch, options: PlannerOptions, *, log=None, cost_model=None, step_costs=None):
    """Plan for ``model`` (module docstring); returns the :class:`~hetsam.planning.report.PlanReport`.
    ``cost_model``: plan on this (calibrated) model instead of the profile; ``step_costs``: adds
    a step's fixed costs timed in AutoSAM's own steps to a profile it measures
    (``hetsam.autosam.time_step_costs``)."""
    from hetsam.planning.search import plan

    kind = _device_kind(model)
    if cost_model is None:
        cost_model = _cost_model(model, loss_fn, sample_batch, options, log, step_costs)
    return plan(cost_model, budget=options.budget, max_staleness=options.max_staleness,
                min_ascent_fraction=options.min_ascent_fraction, reserve_cores=options.reserve_cores,
                descent_kind=kind, batch_size=_batch_size(sample_batch), strategies=options.strategies,
                shares=options.shares, objective=options.objective, base_optimizer=options.base_optimizer)


def _cost_model(model, loss_fn, sample_batch, options: PlannerOptions, log, step_costs):
    from hetsam.cost.model import CostModel

    if options.profile is not None:
        return CostModel(options.profile)
    from hetsam.profiling.cache import cached_profile

    devices = None if options.devices is None else list(options.devices)
    return CostModel(cached_profile(model, loss_fn, sample_batch, devices=devices,
                                    budget_seconds=options.profile_budget_seconds, name=type(model).__name__,
                                    progress=options.progress, log=log, finish=step_costs and (lambda prof: step_costs(
                                        prof, model, loss_fn, sample_batch, progress=options.progress, log=log))))


def _device_kind(model) -> str | None:
    device = next((p.device for p in model.parameters()), None)
    if device is None:
        return None  # nothing to place: any device may descend
    return kind_of(torch_device_name(device)).record_kind  # mps, meta, ...: a one-line refusal


def _batch_size(batch) -> int:
    from hetsam.execution.batches import batch_size

    return batch_size(batch)


def describe_choice(report, head: str | None = None) -> str:
    """The chosen plan in one line, for the log: its numbers, its share of SAM's gain with the
    interval and the evidence behind it, and the runner-up."""
    pred = report.prediction
    line = (f"{head or 'hetsam: plan ' + report.plan.describe()}; predicted {pred.iteration_seconds * 1e3:.1f} ms/step "
            f"({pred.vs_sgd_text()}, {pred.speedup_vs_sam:.2f}x SAM's speed)")
    share = pred.share
    if share is not None:
        line += f"; share of SAM's gain {share.text()}"
    runner = report.runner_up() if report.budget_met else None
    if runner is not None:
        line += f"; runner-up {runner.plan.describe()} ({runner.share.cell()})"
    if not report.budget_met:
        line += f"; budget {report.budget:g}x SGD not met"
    return line


class PlanController:
    """``plan="auto"`` (and a strategy name with a profile) for one AutoSAM (module docstring).

    ``choose(model, loss_fn, batch)`` plans and returns the Plan (``agree`` makes every DDP rank
    run rank 0's plan); ``observe(period)`` is called with every step's period and returns a Plan
    to switch to, or None; ``adopt(plan, why)`` records a plan chosen elsewhere (the divergence
    guard) and stops re-planning; ``history`` records every choice and ``calibration`` every
    window that disagreed with its prediction.
    """

    def __init__(self, options: PlannerOptions, log: Callable[[str], None], *, agree: Callable = None,
                 watch: bool = True, strategy: str | None = None):
        self.options = options
        self.log = log
        self.holder = "opt"  # how the messages name the AutoSAM the user holds (hetsam.autosam.framework)
        self.agree = agree or (lambda plan: plan)
        self.watch = watch  # False under DDP: ranks would decide at different steps
        self.strategy = strategy  # a fixed strategy whose numbers the planner chooses (no re-plans)
        self.step_costs = None  # times a step's fixed costs in AutoSAM's own steps, into a fresh profile (set by AutoSAM)
        self.report = None
        self.plan = None
        self.cm = None
        self.loop_seconds = 0.0
        self.replans = 0
        self.switch_reason = ""  # why the last re-plan switched
        self.history: list[dict] = []
        self.calibration: list[dict] = []
        self._window: StepWindow | None = None
        self._context: tuple | None = None
        # the timed gaps of the windows since the running plan started (the latest GAP_POOL: bounded memory and work)
        self._gaps: deque[float] = deque(maxlen=GAP_POOL)

    def bind_ranks(self, ranks) -> None:
        """Under DDP (``ranks``: the :class:`~hetsam.execution.distributed.RankContext`): every rank
        runs rank 0's choice (on its own GPU: ``localize``), which rank 0 logs, and nothing re-plans on drift (the ranks would decide
        at different steps)."""
        from hetsam.execution.distributed.context import agree_plan, localize

        self.agree, self.watch = (lambda plan: localize(agree_plan(ranks, plan), ranks)), False
        if ranks.rank != 0:  # rank 0 logs the plan every rank runs (another rank's own choice may differ)
            self.log = lambda line: None

    # ---- choosing ----------------------------------------------------------------------------
    def choose(self, model, loss_fn, batch, base_groups=None):
        """``base_groups``: the base optimizer's parameter groups; strategies that cannot run with
        them (MSAM without momentum) are left out of this and every later plan."""
        if base_groups is not None and self.strategy is None:
            self._leave_out_refusing(base_groups)
        self._context = (model, loss_fn, batch)
        report = plan_for_model(model, loss_fn, batch, self.options, log=self.log, step_costs=self.step_costs)
        self.cm = _base_model(report)
        chosen = self._pick(report, "the planner's choice")
        self.log(describe_choice(report) if self.strategy is None else describe_choice(
            report, f"hetsam: {self.strategy}: the planner chose {chosen.describe()} for this profile"))
        o = self.options
        self._window = StepWindow(o.calibration_window, o.calibration_warmup, o.confidence) \
            if self.watch and self.strategy is None else None
        return chosen

    def _leave_out_refusing(self, base_groups) -> None:
        from dataclasses import replace

        from hetsam.errors import HetsamInputError
        from hetsam.strategies import registry

        wanted = self.options.strategies
        names = wanted if wanted is not None else tuple(s.name for s in registry.specs() if s.planned)
        why = {n: registry.get(n).refuses(base_groups) for n in names}
        usable = tuple(n for n in names if not why[n])
        if wanted is not None and not usable:
            raise HetsamInputError(f"none of strategies={list(wanted)} can run with this base optimizer ("
                                   + "; ".join(why[n] for n in wanted) + ")")
        self.options = replace(self.options, strategies=usable)

    def _pick(self, report, why: str):
        if self.strategy is not None:
            best = report.best_of(self.strategy)
            if best is None:
                from hetsam.errors import HetsamInputError

                raise HetsamInputError(f"the planner has no {self.strategy} plan for this profile; give a Plan")
            report.plan, report.prediction = best.plan, best.prediction
        self.report, self.plan = report, self.agree(report.plan)
        self.history.append({"plan": self.plan.describe(), "predicted_seconds": report.prediction.iteration_seconds,
                             "loop_seconds": self.loop_seconds, "why": why})
        return self.plan

    def adopt(self, plan, why: str) -> None:
        """Run ``plan``, chosen elsewhere (the divergence guard), and plan no more."""
        self.plan, self._window = plan, None
        self.history.append({"plan": plan.describe(), "predicted_seconds": None, "loop_seconds": self.loop_seconds,
                             "why": why})

    # ---- calibrating -------------------------------------------------------------------------
    def observe(self, seconds: float, gap: float | None = None):
        """Record one step period (and the timed gap before it, the loop's own work); returns the
        Plan to run from the next step on, or None."""
        if self._window is None:
            return None
        window = self._window.observe(seconds, gap)
        if window is None:
            return None
        m, low, high, gaps = window
        self._gaps.extend(gaps)
        predicted = self._predict(self.plan, self.loop_seconds)  # the median the window should see
        if low <= predicted <= high:
            return None  # the prediction is inside the noise: nothing to learn
        before = self.loop_seconds
        entry = {"median_seconds": m, "interval": [low, high], "predicted_seconds": predicted}
        if self._gaps:  # timed: the median gap, pooled over the windows since the plan started
            loop = median(self._gaps)
            g_low, g_high = median_ci(self._gaps, self.options.confidence)
            with_loop = self._predict(self.plan, loop)
            entry.update(loop_seconds=loop, loop_interval=[g_low, g_high], loop_timed=True,
                         pass_drift=(m - loop) / max(with_loop - loop, 1e-12) - 1.0)
            moved = not g_low <= before <= g_high
        else:
            loop, moved = self._fit(m), True
            entry.update(loop_seconds=loop, loop_timed=False)
        self.loop_seconds = loop
        self.calibration.append(entry)
        if len(self.calibration) == 1:  # later ones go to stats() only, unless they switch plans
            self.log(f"hetsam: measured {m * 1e3:.2f} ms/step (95% interval {low * 1e3:.2f}-{high * 1e3:.2f}), predicted "
                     f"{predicted * 1e3:.2f}: {calibrated_text(entry)} (later calibrations: {self.holder}.stats()['auto'])")
        if not moved:
            entry["decision"] = (f"kept: the loop's own work is unchanged ({before * 1e3:.2f} ms/step within the timed "
                                 "interval); the difference is the machine's speed, which moves every plan alike")
            return None
        if self.replans >= self.options.max_replans:
            entry["decision"] = f"kept: {self.options.max_replans} re-plan(s) already done"
            return None
        model, loss_fn, batch = self._context
        report = plan_for_model(model, loss_fn, batch, self.options, cost_model=self.cm.calibrated(loop))
        candidate = self.agree(report.plan)
        if candidate == self.plan:
            entry["decision"] = "kept: the calibrated planner chose the same plan"
            return None
        reason = self._reason_to_switch(report, loop, (high - low) / 2)
        mine, theirs = self._share(self.plan, report), report.chosen.share
        if reason is None:
            entry["decision"] = (f"kept {self.plan.describe()} (share {mine.cell()}) over {candidate.describe()} "
                                 f"(share {theirs.cell()}): it fits the calibrated budget and the choice's "
                                 f"{report.objective_name} share is within a near-tie of it")
            self.log(f"hetsam: {entry['decision']}")
            return None
        self.replans += 1
        entry["decision"] = self.switch_reason = (
            f"switching from {self.plan.describe()} (share {mine.cell()}) to {candidate.describe()} (share "
            f"{theirs.cell()}): {reason}, with the loop's own work calibrated to {loop * 1e3:.2f} ms/step")
        self.log(f"hetsam: {entry['decision']}")
        self._pick(report, entry["decision"])
        self._window = StepWindow(self.options.calibration_window, self.options.calibration_warmup,
                                  self.options.confidence)
        self._gaps.clear()
        return self.plan

    def _reason_to_switch(self, report, loop: float, half: float) -> str | None:
        """Why the calibrated planner's choice should replace the running plan (module docstring), or None."""
        from hetsam import defaults

        current = self._predict(self.plan, loop, typical=True)
        over = current - report.budget_seconds
        if over > half:
            return (f"{self.plan.strategy} no longer fits the calibrated budget ({current * 1e3:.2f} ms/step against "
                    f"{report.budget_seconds * 1e3:.2f}, {over * 1e3:.2f} ms over; noise ±{half * 1e3:.2f} ms)")
        mine = self._share(self.plan, report).objective(report.objective_name)
        theirs = report.chosen.objective_value
        if report.budget_met and theirs > mine + defaults.NEAR_TIE:
            return (f"its {report.objective_name} share of SAM's gain is {theirs:.0%} against {mine:.0%}, more than a "
                    f"near-tie ({defaults.NEAR_TIE:.0%}) ahead")
        return None

    def _share(self, plan, report):
        """The plan's Share as the report reads it (the evidence, for a plan it did not propose)."""
        found = next((c for c in report.candidates if c.plan == plan and c.share is not None), None)
        if found is not None:
            return found.share
        from hetsam.evidence import share_model

        return share_model(self.options.shares).share(plan, report.batch_size, report.base_optimizer)

    def _predict(self, plan, loop: float, typical: bool = False) -> float:
        """The simulated *median* step period: what a window's median estimates, also for a
        strategy that mixes two kinds of steps. ``typical``: the step the planner's budget
        compares (``hetsam.simulator.typical_step``; for mixed steps the expectation at the medians)."""
        from hetsam import defaults
        from hetsam.simulator import simulate, typical_step

        cm = self.cm.calibrated(loop)
        if typical:
            return typical_step(plan, cm, iterations=defaults.PLANNER_ITERATIONS, seed=0).seconds
        return float(simulate(plan, cm, iterations=defaults.PLANNER_ITERATIONS, seed=0).iteration_seconds["p50"])

    def _fit(self, measured: float) -> float:
        """ℓ ≥ 0 with predict(plan, ℓ) = measured (a few fixed-point steps; 0 when even ℓ = 0 is slower)."""
        loop = 0.0
        for _ in range(_FIT_ITERATIONS):
            loop = max(0.0, loop + measured - self._predict(self.plan, loop))
        return loop

    def stats(self) -> dict[str, Any]:
        return {"replans": self.replans, "plans": list(self.history), "loop_seconds": self.loop_seconds,
                "timed_loop_seconds": median(self._gaps) if self._gaps else None,  # since the running plan started
                "calibration": list(self.calibration), "objective": self.options.objective,
                "base_optimizer": self.options.base_optimizer}


def _base_model(report):
    """The uncalibrated cost model the report was planned on."""
    return report.cost_model
