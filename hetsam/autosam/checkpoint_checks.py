"""AutoSAM's checkpoints (torch's ``state`` and ``param_groups``, and ``hetsam``) checked whole
before anything loads, so ``load_state_dict`` is all or nothing: a corrupted or foreign entry
raises one ``HetsamInputError`` naming the key (a path such as
``state_dict['hetsam']['strategy']['pending'][3]['grads'][1]``) and leaves the optimizer exactly
as it was.

Checked: the entry's keys and types; every counter an integer >= 0 (steps, skipped updates and
perturbations, ``total_steps`` >= 1, ``warmup_steps``); the base optimizer's state (torch's two
keys) against the live parameters (:func:`hetsam.optim.state_checks.check_optimizer_state`:
groups, shapes, dtypes, finite options); the plan (valid, on the model's device, the running
strategy unless AutoSAM adopts the saved plan); the strategy's own state, by its rule
(``check_state``); the divergence guard's events and loss window; the GradScaler's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hetsam.autosam.assemble import Assembly, assembly_for, resolve_plan
from hetsam.autosam.guard import DivergenceGuard
from hetsam.errors import HetsamInputError
from hetsam.optim.options import show
from hetsam.optim.state_checks import (
    COUNT_LIMIT,
    check_optimizer_state,
    counter,
    keys,
    real,
)
from hetsam.planning.plan import Plan

__all__ = ["FORMAT", "Checked", "check"]

FORMAT = 1  # version of AutoSAM.state_dict()'s "hetsam" entry
REQUIRED = ("format", "plan", "strategy", "skipped_perturbations")
OPTIONAL = ("steps_before", "total_steps", "warmup_steps", "skipped_updates", "guard", "scaler")  # older entries lack them
ROOT = "state_dict['hetsam']"


@dataclass
class Checked:
    """A checked entry (None for a state dict without one): the saved plan (or None), and the parts
    built for it when AutoSAM adopts it (``plan="auto"`` before its first step, or a run the
    divergence guard switched), else None."""

    saved: dict | None
    plan: Plan | None
    parts: Assembly | None = None

    def discard(self) -> None:
        if self.parts is not None:
            self.parts.close()
            self.parts = None


def check(opt, state_dict: Any) -> Checked:
    """Everything :func:`hetsam.autosam.checkpoint.load_state_dict` will load, checked; changes nothing
    of ``opt`` (parts for an adopted plan are built aside)."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise HetsamInputError("not an optimizer state dict: expected the keys 'state', 'param_groups' and 'hetsam' "
                               "(AutoSAM.state_dict())")
    if "hetsam" not in state_dict:  # torch's keys alone: only the base optimizer's state loads
        check_optimizer_state(opt.base_optimizer, state_dict, "state_dict")
        return Checked(None, None)
    saved = state_dict["hetsam"]
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        got = saved.get("format") if isinstance(saved, dict) else saved
        raise HetsamInputError(f"AutoSAM state format {show(got)} is not supported (expected {FORMAT})")
    keys(saved, ROOT, REQUIRED, OPTIONAL)
    for key in ("skipped_perturbations", "steps_before", "skipped_updates"):
        if key in saved:
            counter(saved[key], f"{ROOT}[{key!r}]")
    for key, low in (("total_steps", 1), ("warmup_steps", 0)):
        if saved.get(key) is not None:
            counter(saved[key], f"{ROOT}[{key!r}]")
            if saved[key] < low:
                raise HetsamInputError(f"{ROOT}[{key!r}]={saved[key]} must be at least {low}")
    guard = saved.get("guard")
    if guard is not None:
        DivergenceGuard.check_state(guard, f"{ROOT}['guard']")
    if "scaler" in saved:
        _check_scaler(saved["scaler"], f"{ROOT}['scaler']")
    check_optimizer_state(opt.base_optimizer, state_dict, "state_dict")
    if saved["plan"] is None:
        if saved["strategy"] is not None:
            raise HetsamInputError(f"{ROOT}['strategy'] must be None when 'plan' is (a checkpoint before the first step)")
        return Checked(saved, None)
    if not isinstance(saved["plan"], dict):
        raise HetsamInputError(f"{ROOT}['plan'] must be a plan (a dict) or None, not a {type(saved['plan']).__name__}")
    try:
        plan = Plan.from_dict(saved["plan"])
    except HetsamInputError as exc:
        raise HetsamInputError(_one_line(f"{ROOT}['plan']: {exc}")) from None
    checked = Checked(saved, plan)
    events = (guard or {}).get("events")
    if opt._parts is None or (events and plan != opt.plan):  # the saved plan will run: build its parts aside
        try:
            resolve_plan(plan, opt.model)  # a plan for this model's device
            checked.parts = assembly_for(opt, plan)
        except HetsamInputError as exc:
            raise HetsamInputError(_one_line(f"{ROOT}['plan'] cannot run here: {exc}")) from None
        rule = checked.parts.rule
    else:
        if plan.strategy != opt.plan.strategy:
            raise HetsamInputError(
                f"the checkpoint was taken with strategy {plan.strategy!r}; this AutoSAM runs {opt.plan.strategy!r}")
        rule = opt._parts.rule
    try:
        check_rule_state(rule, saved["strategy"], f"{ROOT}['strategy']")
    except BaseException:
        checked.discard()
        raise
    return checked


def check_rule_state(rule, state: Any, where: str) -> None:
    """The rule's ``check_state``; a rule without one (a strategy registered from outside) needs its
    step counter ``t``."""
    own = getattr(rule, "check_state", None)
    if own is not None:
        own(state, where)
    else:
        counter(keys(state, where, ("t",), optional=None)["t"], f"{where}['t']")


def _check_scaler(state: Any, where: str) -> None:
    """A ``torch.amp.GradScaler`` state: a positive finite scale, growth > 1, backoff in (0, 1)."""
    keys(state, where, ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"))
    if real(state["scale"], f"{where}['scale']") <= 0:
        raise HetsamInputError(f"{where}['scale'] must be positive")
    if real(state["growth_factor"], f"{where}['growth_factor']") <= 1:
        raise HetsamInputError(f"{where}['growth_factor'] must be above 1")
    if not 0 < real(state["backoff_factor"], f"{where}['backoff_factor']") < 1:
        raise HetsamInputError(f"{where}['backoff_factor'] must be in (0, 1)")
    if counter(state["growth_interval"], f"{where}['growth_interval']", high=COUNT_LIMIT) < 1:
        raise HetsamInputError(f"{where}['growth_interval'] must be at least 1")
    counter(state["_growth_tracker"], f"{where}['_growth_tracker']")


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a field name from the file may hold a newline
