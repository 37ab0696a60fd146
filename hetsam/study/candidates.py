"""What a study runs: the planner's plans for this machine, one per strategy, plus SGD and SAM.

The candidates are the plans given (``plans={label: Plan}``: :func:`given_candidates`), or what
``AutoSAM(plan="auto")`` would weigh on this machine:
:func:`hetsam.autosam.controller.plan_for_model` plans for the user's model (on a profile cached
on disk, or ``planner_options["profile"]``), and each strategy runs at ``report.best_of(name)``,
its best plan by the planner's objective. SGD and SAM (with the user's ρ) always run: they are
the two ends every share is measured between.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hetsam import strategies as registry
from hetsam.errors import HetsamInputError

__all__ = ["Candidate", "plan_candidates", "given_candidates", "optimizer_name", "MAX_PLANS"]

MAX_PLANS = 1000
_MAX_LABEL = 200


@dataclass(frozen=True)
class Candidate:
    """One strategy of the study at its planned settings."""

    strategy: str
    plan: object  # hetsam.planning.Plan
    label: str  # e.g. "MSAM rho=1"
    predicted_seconds: float  # the planner's seconds per step (for time estimates before a run; 0: unknown)
    baseline: bool = False
    key: str = ""  # what the result is keyed by: the strategy's name for the planner's plans, else the label

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.strategy)


def optimizer_name(base_optimizer) -> str:
    """``"sgd"``, ``"adamw"``, ...: the base optimizer as evidence records name it."""
    return getattr(base_optimizer, "__name__", type(base_optimizer).__name__).lower()


def base_groups(base_optimizer, base_kwargs: dict) -> list[dict]:
    """The base optimizer's hyperparameters with the user's arguments (for ``StrategySpec.refuses``);
    building it on a dummy parameter also checks ``**base_kwargs`` before any training."""
    import torch

    try:
        opt = base_optimizer([torch.zeros(1, requires_grad=True)], **base_kwargs)
    except (TypeError, ValueError) as exc:
        raise HetsamInputError(f"base_optimizer {optimizer_name(base_optimizer)} refuses the study's arguments "
                               f"{sorted(base_kwargs)}: {str(exc).splitlines()[0] if str(exc) else exc!r}; "
                               "fix lr=, momentum=, ...") from None
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def _wanted(strategies, groups: list[dict]) -> tuple[str, ...]:
    """The strategies to study besides the baselines; an explicit one the base optimizer refuses
    is refused here, in one line."""
    if strategies is None:
        return tuple(s.name for s in registry.specs() if s.planned and not s.baseline and not s.refuses(groups))
    if isinstance(strategies, str) or not all(isinstance(s, str) for s in strategies):
        raise HetsamInputError("strategies must be a list of strategy names, e.g. ['rst', 'msam'], or None for "
                               "every one the planner plans")
    names = []
    for name in dict.fromkeys(strategies):
        spec = registry.get(name)  # an unknown name is refused with the known ones
        if spec.baseline:
            continue  # SGD and SAM always run
        why = spec.refuses(groups)
        if why is not None:
            raise HetsamInputError(f"strategies: {name}: {why}")
        names.append(name)
    return tuple(names)


def plan_candidates(model, loss_fn, sample_batch, *, base_optimizer, base_kwargs: dict, strategies, planner_options,
                    progress: bool, log) -> tuple[list[Candidate], object]:
    """The study's candidates, SGD and SAM first, and the planner's report."""
    from hetsam.autosam.controller import PlannerOptions, plan_for_model
    from hetsam.evidence import optimizer_family

    groups = base_groups(base_optimizer, base_kwargs)
    wanted = _wanted(strategies, groups)
    given = planner_options if isinstance(planner_options, dict) else {}
    options = PlannerOptions.from_value(planner_options)
    fill = {"strategies": tuple(dict.fromkeys((registry.SGD, registry.SAM) + wanted))}
    if "base_optimizer" not in given and not isinstance(planner_options, PlannerOptions):
        fill["base_optimizer"] = optimizer_family(optimizer_name(base_optimizer))
    if "progress" not in given and not isinstance(planner_options, PlannerOptions):
        fill["progress"] = progress
    options = replace(options, **fill)
    report = plan_for_model(model, loss_fn, sample_batch, options, log=log)
    out = []
    for name in (registry.SGD, registry.SAM) + wanted:
        best = report.best_of(name)
        if best is None:
            if strategies is not None and name in strategies:
                raise HetsamInputError(f"strategies: the planner has no {name} plan for this machine "
                                       "(no device it can use); leave it out")
            continue
        plan = best.plan
        out.append(Candidate(name, plan, plan.spec.label(plan, report.batch_size), best.predicted_seconds,
                             baseline=plan.spec.baseline))
    if [c.strategy for c in out[:2]] != [registry.SGD, registry.SAM]:
        raise HetsamInputError("the planner proposed no SGD or SAM plan for this model; a study needs both")
    return out, report


def given_candidates(plans, groups: list[dict]) -> list[Candidate]:
    """The candidates of ``plans`` (label -> Plan), SGD and SAM first: a given plan of SGD or SAM
    is that baseline under its label; a missing one is added, labelled by its strategy's name.
    Each plan is refused in one line when the base optimizer's settings rule it out."""
    from hetsam.planning.plan import Plan

    if not isinstance(plans, dict) or not plans or len(plans) > MAX_PLANS:
        raise HetsamInputError(f"plans must be a dict of 1 to {MAX_PLANS} labels -> hetsam.Plan, e.g. "
                               "{'rst p=0.5': Plan('rst', options={'sam_probability': 0.5})}")
    baselines: dict[str, Candidate] = {}
    others = []
    for label, plan in plans.items():
        if not isinstance(label, str) or not label.strip() or len(label) > _MAX_LABEL or "\n" in label:
            raise HetsamInputError(f"plans: label {str(label)[:40]!r} must be a one-line name of 1 to {_MAX_LABEL} "
                                   "characters")
        if not isinstance(plan, Plan):
            raise HetsamInputError(f"plans[{label!r}] is {type(plan).__name__}; give a hetsam.Plan, e.g. Plan('rst', "
                                   "options={'sam_probability': 0.5})")
        why = plan.spec.refuses(groups)
        if why is not None:
            raise HetsamInputError(f"plans[{label!r}]: {why}")
        c = Candidate(plan.strategy, plan, label, 0.0, baseline=plan.spec.baseline, key=label)
        if plan.strategy in (registry.SGD, registry.SAM):
            if plan.strategy in baselines:
                raise HetsamInputError(f"plans: {baselines[plan.strategy].label!r} and {label!r} are both "
                                       f"{plan.strategy} plans; a study has one of each baseline")
            baselines[plan.strategy] = c
        else:
            others.append(c)
    for name in (registry.SGD, registry.SAM):
        if name not in baselines:
            if name in plans:
                raise HetsamInputError(f"plans: the label {name!r} names the {name} baseline; give that plan "
                                       f"another label")
            baselines[name] = Candidate(name, Plan(name), name, 0.0, baseline=True, key=name)
    return [baselines[registry.SGD], baselines[registry.SAM], *others]
