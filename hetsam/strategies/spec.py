"""The torch-free half of a strategy: what the planner, the simulator and the command line ask.

A strategy is registered once (:mod:`hetsam.strategies.registry`) as a :class:`StrategySpec`.
Nothing outside ``hetsam/strategies/`` compares strategy names: the planner, the simulator, the
command line, the benchmark harness and ``AutoSAM`` all ask the spec. The spec answers:

- **the plan**: which :class:`~hetsam.planning.Plan` fields it reads (``fields``), its own
  parameters (``options``, carried in ``Plan.options``), its staleness τ, its ascent batch b',
  its fidelity to SAM, and a one-line description;
- **the planner**: its closed-form step time and its candidate plans on a machine
  (:class:`PlanningContext`; ``docs/architecture.md`` gives the closed forms);
- **the simulator**: how one training iteration maps to tasks on devices and links
  (:meth:`StrategySpec.simulation`, over the primitives of ``hetsam.simulator.model.Workload``);
- **AutoSAM**: its update rule, a torch class loaded only when a rule is built
  (:meth:`StrategySpec.build_rule`).

This module imports neither torch nor the planner.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = ["Option", "Proposal", "PlanningContext", "StrategySpec", "FIELDS", "setting"]

# Plan fields a spec may read besides strategy, descent_device, batch_size and its own options
FIELDS = ("ascent_device",)


def setting(settings: dict, name: str, low: float, high: float) -> float | None:
    """A number of an evidence record's ``settings`` within [low, high], else None."""
    value = settings.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        return None
    return float(value)


@dataclass(frozen=True)
class Option:
    """A strategy's own parameter, carried in ``Plan.options``: a bounded int or float, or one of
    ``choices`` (``kind=str``). ``optional``: None is a value too (its meaning is in ``help``)."""

    name: str
    kind: type  # int, float or str
    default: Any
    low: float = 0
    high: float = 0
    help: str = ""
    choices: tuple = ()
    optional: bool = False
    schedule: bool = False  # AutoSAM also takes a schedule of it (a callable t -> value), run-time only

    def check(self, value: Any, where: str = "Plan.options") -> Any:
        name = f"{where}[{self.name!r}]"
        if value is None and self.optional:
            return None
        if self.kind is str:
            return _checks.choice(value, name, self.choices)
        if self.kind is int:
            return _checks.integer(value, name, low=int(self.low), high=int(self.high))
        return _checks.number(value, name, low=self.low, high=self.high)

    def show(self, value: Any) -> str:
        """The value in a few characters (numbers as ``:g``)."""
        return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


class Proposal:
    """A candidate plan and its closed-form step time.

    ``exact``: the closed form is exact from the simulated SGD and SAM baselines (RST's
    expectation), so the planner need not simulate it. (A plain class: the planner's import
    time is part of every ``hetsam plan``.)
    """

    __slots__ = ("plan", "seconds", "note", "exact")

    def __init__(self, plan: Any, seconds: float, note: str = "", exact: bool = False):
        self.plan, self.seconds, self.note, self.exact = plan, seconds, note, exact


@dataclass
class PlanningContext:
    """What a spec needs to propose plans for one machine (filled by ``hetsam.planning.search``).

    ``cm`` is the cost model (at scale, one whose gradient times are the slowest rank's);
    ``descent_devices`` and ``pairs`` (descent, ascent) are the devices and pairs a plan may
    use, pairs already filtered to those the cost model can price; ``floor`` is the smallest
    ascent batch (samples) and ``min_fraction`` the fidelity floor; ``fastest``, ``sgd_seconds``
    and ``sam_extra`` describe the SGD baseline on the fastest descent device and what a SAM
    step adds to it; ``p_budget`` is the SAM share that meets the budget exactly.
    """

    cm: Any
    batch_size: int
    budget_seconds: float
    floor: int
    min_fraction: float
    max_staleness: int
    ascent_batches: str
    descent_devices: list
    pairs: list
    fastest: str
    sgd_seconds: float
    sam_extra: float
    p_budget: float
    scale: Any = None  # a hetsam.cost.cluster.Cluster of n > 1 ranks, or None
    plan_type: Callable[..., Any] = None  # hetsam.planning.Plan (passed in: specs do not import planning)
    descent_step: Callable[..., float] = None  # (device, compute seconds, perturbed=False) -> one descent step
    evidence: Any = None  # a hetsam.evidence.ShareModel: what the evidence tested (MSAM's radii)
    base_optimizer: str | None = None  # the base optimizer family ("sgd", "adam"), None when unknown

    def plan(self, strategy: str, **fields) -> Any:
        fields.setdefault("batch_size", self.batch_size)
        return self.plan_type(strategy, **fields)


class StrategySpec(abc.ABC):
    """The torch-free description of one strategy; subclass it and register an instance.

    A subclass must define ``simulation`` (abstract), ``name``, ``title``, ``summary`` and ``rule``,
    and ``closed_form_seconds`` unless ``mixed_steps``; :func:`hetsam.strategies.register` checks
    them (:mod:`hetsam.strategies.checks`). The other methods are optional hooks with defaults.

    Class attributes:
        name: the ``Plan.strategy`` value.
        title: a short human name (``"AsyncSAM"``).
        summary: one line for help texts.
        fields: the Plan fields it reads (of :data:`FIELDS`); ``hetsam simulate`` refuses the
            others' flags for it.
        options: its own parameters (:class:`Option`: type, bounds, default), in ``Plan.options``;
            a plan of this strategy carries every one of them and no other.
        uses_ascent: it computes a second (ascent) gradient on some steps.
        uses_executor: its rule hands gradient jobs to an executor (a replica of the model on
            the ascent device); under DDP such passes must not run collectives.
        rank_pairs: under DDP with n > 1 ranks, its two gradients run on a pair of ranks.
        jobs_enter_update: its executor's gradients are mixed into the update (SAMPa's g_y'),
            so under DDP (without rank pairs) they are averaged over the ranks; an ascent
            gradient that only perturbs (AsyncSAM's) stays per rank.
        closure_descent: its update gradient is one pass on the step's own batch at the current
            parameters, so a framework's training closure can compute it (``descent_closure``).
        mixed_steps: its steps are of two kinds (SGD steps and SAM steps), so a step-time
            median means nothing; ``sam_fraction`` is the expected share of SAM steps.
        baseline: proposed on every plan (SGD) whatever strategies are asked for.
        planned: the planner considers it unless told which strategies to consider.
        rule: ``"module:Class"`` of its torch rule (a ``hetsam.strategies.rule.StrategyRule``).
        evidence_axis: how its evidence records are placed and read (``hetsam.evidence``):
            ``"sam_fraction"`` (a share of SAM steps, anchored at 0 → share 0 and 1 → share 1),
            ``"ascent_fraction"`` (AsyncSAM's b'/b, anchored at 0 → 0), ``"levels"`` (only the
            tested points, e.g. MSAM's radii), or None (one point).
        exact_share: the share of SAM's gain it keeps by definition (SGD 0, SAM 1), else None.
        own_radius: it perturbs with a radius of its own, not the user's ρ (MSAM): not
            SAM-faithful, so the planner prefers the faithful strategies on near-ties, and its
            radius is one the evidence tested for the user's kind of base optimizer.
        guarded: it changes SAM's algorithm (its own radius, or skipped perturbations), so
            AutoSAM's divergence guard watches its loss.
    """

    name: str = ""
    title: str = ""
    summary: str = ""
    fields: tuple = ()
    options: tuple = ()
    uses_ascent: bool = True
    uses_executor: bool = False
    rank_pairs: bool = False
    jobs_enter_update: bool = False
    closure_descent: bool = True
    mixed_steps: bool = False
    baseline: bool = False
    planned: bool = True
    rule: str = ""
    evidence_axis: str | None = None
    exact_share: float | None = None
    own_radius: bool = False
    guarded: bool = False

    # ---- the plan -----------------------------------------------------------------------------
    def check(self, plan) -> None:  # noqa: B027 - optional: most strategies need no extra check
        """Extra validation of a plan of this strategy (beyond the Plan's own field checks)."""

    def option(self, plan, name: str) -> Any:
        """The value of one of this strategy's options in ``plan`` (its default when absent)."""
        for opt in self.options:
            if opt.name == name:
                return plan.options.get(name, opt.default)
        have = ", ".join(o.name for o in self.options) or "none"
        raise KeyError(f"strategy {self.name!r} has no option {name!r} (its options: {have})")

    def check_options(self, given, where: str = "Plan.options") -> dict:
        """``given`` (a mapping) checked against the declared options, every absent one at its
        default; an option of another strategy is refused in one line naming this one's."""
        declared = {o.name: o for o in self.options}
        unknown = sorted(_checks._show(k) for k in given if k not in declared)
        if unknown:
            have = ", ".join(declared) or "none"
            raise HetsamInputError(f"{where}: strategy {self.name!r} has no option {', '.join(unknown)} "
                                   f"(its options: {have})")
        return {k: o.check(given[k], where) if k in given else o.default for k, o in sorted(declared.items())}

    def staleness(self, plan) -> int:
        """τ: how many steps old the ascent gradient is (0: fresh)."""
        return 0

    def ascent_batch_size(self, plan, batch_size: int) -> int:
        """b': the samples of a batch the ascent gradient is taken on."""
        return batch_size

    def sam_fraction(self, plan) -> float:
        """Expected share of steps that compute the ascent gradient."""
        return 1.0 if self.uses_ascent else 0.0

    def fidelity(self, plan, batch_size: int) -> tuple[float, int, float]:
        """``(ascent fraction, −staleness, SAM share)``; larger is more faithful to SAM."""
        share = self.sam_fraction(plan)
        fraction = share * self.ascent_batch_size(plan, batch_size) / batch_size
        return (fraction, -self.staleness(plan), share)

    def refuses(self, base_groups) -> str | None:
        """Why this strategy cannot run with the base optimizer's parameter groups (plain dicts of
        hyperparameters), or None. The planner in AutoSAM leaves out a strategy that refuses."""
        return None

    def settings(self, plan, batch_size: int) -> str:
        """This strategy's numbers in a few characters (``b'=24 τ=1``), '' when none."""
        return " ".join(f"{o.name}={o.show(self.option(plan, o.name))}" for o in self.options)

    def describe(self, plan) -> str:
        """The plan in one line, for logs."""
        s = f"{plan.strategy} descent={plan.descent_device}"
        if self.uses_ascent and plan.ascent_device:
            s += f" ascent={plan.effective_ascent_device}"
        if plan.batch_size is not None:
            s += f" b={plan.batch_size}"
        tail = self.settings(plan, plan.batch_size) if plan.batch_size is not None else self.settings(plan, 0)
        return f"{s} {tail}" if tail else s

    def label(self, plan, batch_size: int) -> str:
        """A label for comparison charts."""
        tail = self.settings(plan, batch_size)
        return f"{self.title} {tail}".strip()

    # ---- the evidence (hetsam.evidence) -----------------------------------------------------------
    def evidence_settings(self, plan, batch_size: int) -> dict:
        """The plan's own numbers as an evidence record's ``settings`` (what ``hetsam.study`` writes)."""
        return {o.name: self.option(plan, o.name) for o in self.options}

    def evidence_point(self, settings: dict, base_optimizer: str | None = None) -> tuple[tuple, float] | None:
        """Where a record with these ``settings`` sits: ``(curve, x)``, the curve a hashable key
        (records on one curve pool along x) and x its coordinate on ``evidence_axis``; None when
        the settings cannot be placed. ``base_optimizer`` is the task's family ("sgd", "adam")."""
        return ((), 0.0)

    # ---- the planner ----------------------------------------------------------------------------
    def closed_form_seconds(self, ctx: PlanningContext, plan) -> float:
        """Seconds of one step of ``plan`` by the closed form (docs/architecture.md). For a
        strategy of two kinds of steps (``mixed_steps``), the expectation from the simulated
        baselines on the fastest device: ``SGD + (SAM − SGD) · sam_fraction``."""
        if self.mixed_steps:
            return ctx.sgd_seconds + self.sam_fraction(plan) * ctx.sam_extra
        raise NotImplementedError(f"strategy {self.name!r} has no closed form")

    def candidates(self, ctx: PlanningContext) -> Iterable[Proposal]:
        """The plans of this strategy worth considering on this machine."""
        return ()

    def on_each_descent_device(self, ctx: PlanningContext) -> Iterable[Proposal]:
        """One plan per descent device, with its closed form (for one-device strategies)."""
        for d in ctx.descent_devices:
            plan = ctx.plan(self.name, descent_device=d)
            yield Proposal(plan, self.closed_form_seconds(ctx, plan))

    # ---- the simulator ----------------------------------------------------------------------------
    @abc.abstractmethod
    def simulation(self, w) -> Callable[[int], None]:
        """A function ``build(t)`` that adds iteration t's tasks to the workload ``w``
        (``hetsam.simulator.model.Workload``); it may keep state across iterations."""
        raise NotImplementedError(f"strategy {self.name!r} has no simulator iteration")

    # ---- the rule ----------------------------------------------------------------------------------
    def rule_class(self):
        """The torch rule class (a ``StrategyRule`` subclass), imported now: by ``register()``
        (unless ``lazy=True``) and when a rule is built. A one-line error when ``rule`` names none."""
        module, _, name = self.rule.partition(":")
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError as exc:
            raise HetsamInputError(f"strategy {self.name!r}: its rule {self.rule!r} cannot be imported ({exc}); "
                                   "set rule = 'module:Class' to an importable StrategyRule subclass") from None
        base = importlib.import_module("hetsam.strategies.rule").StrategyRule
        if not (isinstance(found, type) and issubclass(found, base)):
            what = "nothing" if found is None else type(found).__name__ if not isinstance(found, type) else found.__name__
            raise HetsamInputError(f"strategy {self.name!r}: rule {self.rule!r} is {what}, not a StrategyRule subclass; "
                                   "point rule = 'module:Class' at a hetsam.strategies.rule.StrategyRule subclass")
        return found

    def build_rule(self, ctx):
        """The rule that runs ``ctx.plan`` (``ctx``: a ``hetsam.strategies.rule.RuleContext``)."""
        return self.rule_class()(ctx)

    def __repr__(self) -> str:
        return f"<strategy {self.name!r}: {self.summary}>"

