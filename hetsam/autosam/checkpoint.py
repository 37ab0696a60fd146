"""AutoSAM's checkpoints and report: ``state_dict`` holds everything a resumed run needs to
continue exactly; ``stats`` says what ran."""

from __future__ import annotations

from typing import Any

from hetsam.autosam.checkpoint_checks import FORMAT, check
from hetsam.optim.sam import share_groups

__all__ = ["state_dict", "load_state_dict", "stats", "FORMAT"]


def state_dict(opt) -> dict:
    """``{"base": the base optimizer's state, "hetsam": the plan, the rule's state (pending ascent
    gradients, g_y, RST's generator, MSAM's warm-up counters and last lrs), counters (steps,
    skipped perturbations and updates, ``warmup_steps``), the divergence guard's loss window and
    events (not its snapshot: the checkpoint holds the model) and the GradScaler it created}``.

    Before ``plan="auto"`` has chosen (frameworks ask before the first step), ``"plan"`` is None
    and there is no rule state; loading that is fine."""
    parts = opt._parts
    hetsam_state = {
        "format": FORMAT,
        "plan": opt.plan.to_dict() if opt.plan is not None else None,
        "strategy": parts.rule.state_dict() if parts is not None else None,
        "skipped_perturbations": parts.runtime.perturbation.skipped if parts is not None else 0,
        "steps_before": opt._steps_before,
        **opt.run.state_dict(),  # the run's facts (hetsam.strategies.run): total_steps, warmup_steps
        "skipped_updates": opt._skipped_updates,
        "guard": opt._guard.state_dict(),
    }
    if opt._owns_scaler:
        hetsam_state["scaler"] = opt.scaler.state_dict()
    return {"base": opt.base_optimizer.state_dict(), "hetsam": hetsam_state}


def load_state_dict(opt, state_dict: dict) -> None:
    """Resume exactly from :func:`state_dict` (``plan="auto"`` before its first step adopts the saved
    plan). All or nothing: the whole entry is checked first (:mod:`hetsam.autosam.checkpoint_checks`),
    so a refused one leaves ``opt`` exactly as it was."""
    checked = check(opt, state_dict)
    saved, plan = checked.saved, checked.plan
    guard = saved.get("guard") or {}
    if checked.parts is not None:  # plan="auto" before its first step, or a run the divergence guard switched
        opt._use(plan, checked.parts)
        opt._plan_source = "from the checkpoint"
        if guard.get("events") and opt._controller is not None:
            opt._controller.adopt(plan, "the divergence guard (before the checkpoint)")
    opt.base_optimizer.load_state_dict(state_dict["base"])
    share_groups(opt, opt.base_optimizer)
    if plan is not None:
        opt._parts.rule.load_state_dict(saved["strategy"])
        opt._parts.runtime.perturbation.skipped = saved["skipped_perturbations"]
    opt._steps_before = saved.get("steps_before", 0)
    opt._skipped_updates = saved.get("skipped_updates", 0)
    opt._guard.load_state_dict(guard)
    opt.run.learn(**{k: saved.get(k) for k in opt.run.FACTS})  # the run's facts resume too (the user's win)
    if "scaler" in saved and opt._owns_scaler:
        opt.scaler.load_state_dict(saved["scaler"])


def stats(opt) -> dict[str, Any]:
    """What ran (see ``AutoSAM.stats``)."""
    out: dict[str, Any] = {"plan": None, "steps": opt._steps_before}
    parts = opt._parts
    if parts is not None:
        # the rule's own counters first: AutoSAM's (steps over every plan run so far) win a clash
        out = {**parts.rule.stats(), "plan": opt.plan.describe(), "steps": opt._steps_before + parts.rule.t,
               "skipped_perturbations": parts.runtime.perturbation.skipped}
    out["skipped_updates"], out["warmup_steps"], out["guard"] = opt._skipped_updates, opt.warmup_steps, opt._guard.stats()
    if parts is not None:
        if parts.runtime.grad_norm is not None:
            out["grad_norm"] = parts.runtime.grad_norm
        if parts.executor is not None:
            out["executor"] = parts.executor.describe()
        if parts.dist is not None:
            out["distributed"] = parts.dist.describe()
    if opt._controller is not None:
        out["auto"] = opt._controller.stats()
    return out
