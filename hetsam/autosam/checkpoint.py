"""AutoSAM's checkpoints: ``state_dict`` holds everything a resumed run needs to continue exactly."""

from __future__ import annotations

from hetsam.errors import HetsamInputError
from hetsam.optim.sam import share_groups
from hetsam.planning.plan import Plan

__all__ = ["state_dict", "load_state_dict", "FORMAT"]

FORMAT = 1  # version of AutoSAM.state_dict()'s "hetsam" entry


def state_dict(opt) -> dict:
    """``{"base": the base optimizer's state, "hetsam": the plan, the rule's state (pending ascent
    gradients, g_y, RST's generator), counters and the GradScaler it created}``."""
    if opt._parts is None:
        raise HetsamInputError("plan='auto' has not chosen a plan yet: take one step before state_dict()")
    hetsam_state = {
        "format": FORMAT,
        "plan": opt.plan.to_dict(),
        "strategy": opt._parts.rule.state_dict(),
        "skipped_perturbations": opt._parts.runtime.perturbation.skipped,
        "steps_before": opt._steps_before,
    }
    if opt._owns_scaler:
        hetsam_state["scaler"] = opt.scaler.state_dict()
    return {"base": opt.base_optimizer.state_dict(), "hetsam": hetsam_state}

def load_state_dict(opt, state_dict: dict) -> None:
    """Resume exactly from :func:`state_dict` (``plan="auto"`` before its first step adopts the saved plan)."""
    if not isinstance(state_dict, dict) or set(state_dict) != {"base", "hetsam"}:
        raise HetsamInputError("not an AutoSAM state dict: expected the keys 'base' and 'hetsam'")
    saved = state_dict["hetsam"]
    if saved.get("format") != FORMAT:
        raise HetsamInputError(f"AutoSAM state format {saved.get('format')!r} is not supported (expected {FORMAT})")
    plan = Plan.from_dict(saved["plan"])
    if opt._parts is None:  # plan="auto" before its first step: resume the saved plan
        opt._use(plan)
    if plan.strategy != opt.plan.strategy:
        raise HetsamInputError(
            f"the checkpoint was taken with strategy {plan.strategy!r}; this AutoSAM runs {opt.plan.strategy!r}"
        )
    opt.base_optimizer.load_state_dict(state_dict["base"])
    share_groups(opt, opt.base_optimizer)
    opt._parts.rule.load_state_dict(saved["strategy"])
    opt._parts.runtime.perturbation.skipped = int(saved["skipped_perturbations"])
    opt._steps_before = int(saved.get("steps_before", 0))
    if "scaler" in saved and opt._owns_scaler:
        opt.scaler.load_state_dict(saved["scaler"])
