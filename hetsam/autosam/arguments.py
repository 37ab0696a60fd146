"""AutoSAM's constructor arguments, each refused in one line (``HetsamInputError``) before anything
is built, and the base optimizer, built with what it refuses said in one line too."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.execution.executor import FAILURE_POLICIES, Executor
from hetsam.execution.factory import EXECUTORS
from hetsam.optim.options import check_like, show
from hetsam.optim.sam import check_base_optimizer, check_group

__all__ = ["NONFINITE", "check_arguments", "build_base", "short", "strategy_options", "StrategyOptions"]

NONFINITE = ("skip", "raise")  # AutoSAM(nonfinite=...): a non-finite step's update is skipped, or raises too


def check_arguments(model, loss_fn, base_optimizer, executor, on_worker_failure, max_grad_norm, ascent_timeout,
                    options: dict, *, nonfinite: Any = "skip", seed: Any = None, log: Any = None, scaler: Any = None,
                    sampa_pairs: Any = None) -> None:
    """AutoSAM's arguments that need no model state; ``options``: ρ, ``adaptive``, ``eta`` and the
    base optimizer's keyword arguments (every numeric one finite, as in any group)."""
    if not isinstance(model, nn.Module):
        raise HetsamInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise HetsamInputError(f"loss_fn={short(loss_fn)} must be a callable loss_fn(model, batch) -> scalar tensor")
    check_base_optimizer(base_optimizer)
    if not (isinstance(executor, Executor) or (isinstance(executor, str) and executor in EXECUTORS)):
        raise HetsamInputError(f"executor={short(executor)} is unknown; choose 'threads', 'inline' or an Executor")
    _checks.optional(_checks.choice, on_worker_failure, "on_worker_failure", FAILURE_POLICIES)
    _checks.optional(_checks.number, max_grad_norm, "max_grad_norm", low=0.0, high=1e12, low_open=True)
    if ascent_timeout is not None and not (isinstance(ascent_timeout, float) and ascent_timeout == float("inf")):
        _checks.number(ascent_timeout, "ascent_timeout", low=0.0, high=1e7, low_open=True,
                       hint="seconds, float('inf') for never, or None for the default")
    _checks.choice(nonfinite, "nonfinite", NONFINITE,
                   hint="'skip' skips a non-finite step's update with a warning; 'raise' raises hetsam.NonFiniteUpdate")
    _checks.optional(_checks.integer, seed, "seed", low=0, high=2**63 - 1, hint="or None")
    _checks.optional(_checks.choice, sampa_pairs, "sampa_pairs", (True, False))
    if log is not None and not callable(log):
        raise HetsamInputError(f"log={short(log)} must be a callable taking one line, or None for stderr")
    if scaler not in (None, False) and not all(callable(getattr(scaler, m, None)) for m in ("scale", "step", "update")):
        raise HetsamInputError(f"scaler={short(scaler)} must be a torch.amp.GradScaler, None (AutoSAM's own for "
                               "float16) or False (none)")
    check_group(options)


def build_base(base_optimizer, groups: list, kwargs: dict) -> torch.optim.Optimizer:
    """``base_optimizer(groups, **kwargs)``; what it refuses (a negative lr, an unknown keyword) in one line."""
    try:
        base = base_optimizer(groups, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        name = getattr(base_optimizer, "__name__", type(base_optimizer).__name__)
        text = str(exc).strip().splitlines()
        raise HetsamInputError(f"the base optimizer {name} refused its arguments: "
                               f"{text[0] if text else type(exc).__name__}") from exc
    for i, group in enumerate(base.param_groups):  # what its constructor does not check in groups
        check_like(group, base.defaults, f"param group {i}")
    return base


def short(value: Any) -> str:
    return show(value)


def _plain(value: Any) -> bool:
    """A value a plan can hold (a number, a string, None), not a schedule."""
    return value is None or isinstance(value, (int, float, str))


class StrategyOptions:
    """AutoSAM's ``options=`` and its deprecated keywords of one strategy (``sam_probability``,
    ``grst_alpha``), sorted into the plan's values and run-time schedules (``RuleContext.overrides``)."""

    def __init__(self, given: dict, deprecated: dict):
        self.given, self.deprecated = given, deprecated

    def apply(self, plan):
        """``plan`` with the options given (a name its strategy lacks is refused in one line) and the
        deprecated keywords' numbers where its strategy has them (as before they were deprecated)."""
        declared = {o.name for o in plan.spec.options}
        old = {k: v for k, v in self.deprecated.items() if k in declared and _plain(v)}
        merged = {**plan.options, **old, **{k: v for k, v in self.given.items() if _plain(v)}}
        if self.given.keys() - declared:  # a schedule under a name the strategy lacks
            plan.spec.check_options(self.given, "AutoSAM options")
        return plan if merged == dict(plan.options) else dataclasses.replace(plan, options=merged)

    def overrides(self, plan) -> dict:
        """The run-time values: schedules where the plan's strategy takes one (``Option.schedule``);
        with ``plan="auto"`` (``plan`` None) every deprecated keyword's value, read by the strategy
        chosen if it has that option, as before they were deprecated."""
        if plan is None:
            if self.given:
                raise HetsamInputError("options= sets the numbers of a strategy you choose: give plan='rst' (a strategy "
                                       "name) or a hetsam.Plan; plan='auto' lets the planner choose them")
            return {k: _checked_somewhere(k, v) for k, v in self.deprecated.items()}
        takes = {o.name for o in plan.spec.options if o.schedule}
        for name, value in self.given.items():
            if not _plain(value) and name not in takes:
                raise HetsamInputError(f"options[{name!r}] is a {type(value).__name__}, but strategy {plan.strategy!r} "
                                       f"takes a schedule only for {', '.join(sorted(takes)) or 'none of its options'}; "
                                       "give a number")
        old = {k: v for k, v in self.deprecated.items() if k in takes and not _plain(v)}
        return {**old, **{k: v for k, v in self.given.items() if not _plain(v)}}


def strategy_options(options: Any, deprecated: dict) -> StrategyOptions:
    """AutoSAM's ``options=`` checked as a mapping, and its deprecated keywords (None: not given),
    each given one warned about once (FutureWarning)."""
    if options is not None and not isinstance(options, Mapping):
        raise HetsamInputError(f"options={short(options)} must be a mapping of the strategy's option names to values, "
                               "e.g. options={'sam_probability': 0.3}")
    old = {k: v for k, v in deprecated.items() if v is not None}
    for name in old:
        warnings.warn(f"AutoSAM({name}=...) is deprecated: pass options={{{name!r}: ...}} (or a hetsam.Plan with "
                      "those options)", FutureWarning, stacklevel=3)
    return StrategyOptions(dict(options or {}), old)


def _checked_somewhere(name: str, value: Any) -> Any:
    """A deprecated keyword's value checked by the option of that name (plan="auto": any strategy's)."""
    from hetsam import strategies

    for spec in strategies.specs():
        for opt in spec.options:
            if opt.name == name:
                return opt.check(value, "AutoSAM") if _plain(value) else value
    return value
