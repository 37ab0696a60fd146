"""AutoSAM's checkpoints and report: ``state_dict`` holds everything a resumed run needs to
continue exactly, in torch's shape (``state``, ``param_groups``) plus hetsam's own key
(``hetsam``), so tools that read optimizer state find what they expect; ``stats`` says what ran."""

from __future__ import annotations

from typing import Any

from hetsam._warnings import warn_user
from hetsam.autosam.checkpoint_checks import FORMAT, Checked, check
from hetsam.optim.sam import share_groups
from hetsam.optim.state_checks import keys

__all__ = ["state_dict", "hetsam_state", "load_state_dict", "torch_shape", "stats", "FORMAT"]


def state_dict(opt) -> dict:
    """torch's shape: ``{"state", "param_groups"}`` exactly as ``torch.optim.Optimizer.state_dict()``
    gives them for the base optimizer's state over AutoSAM's groups (the two share them: integer
    parameter ids, each group's options with ``rho``/``adaptive``/``eta``), and ``"hetsam"``:
    :func:`hetsam_state`. AutoSAM's state-dict hooks run as torch runs them: the pre-hooks first,
    the post-hooks on the whole dict (``"hetsam"`` included; one may return a new dict); the base
    optimizer's own hooks run inside its ``state_dict``."""
    for hook in opt._optimizer_state_dict_pre_hooks.values():
        hook(opt)
    out = opt.base_optimizer.state_dict()
    out["hetsam"] = hetsam_state(opt)
    for hook in opt._optimizer_state_dict_post_hooks.values():
        result = hook(opt, out)
        if result is not None:
            out = result
    return out


def hetsam_state(opt) -> dict:
    """The plan, the rule's state (pending ascent gradients, g_y, RST's generator, MSAM's warm-up
    counters and last lrs), counters (steps, skipped perturbations and updates, ``warmup_steps``),
    the divergence guard's loss window and events (not its snapshot: the checkpoint holds the
    model) and the GradScaler it created.

    Before ``plan="auto"`` has chosen (frameworks ask before the first step), ``"plan"`` is None
    and there is no rule state; loading that is fine."""
    parts = opt._parts
    saved = {
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
        saved["scaler"] = opt.scaler.state_dict()
    return saved


def load_state_dict(opt, state_dict: dict) -> None:
    """Resume exactly from :func:`state_dict` (``plan="auto"`` before its first step adopts the saved
    plan); the older shape ``{"base", "hetsam"}`` loads too. As torch: a shallow copy goes through
    the load pre-hooks (one may return a new dict), the post-hooks run after loading. All or
    nothing: the whole dict is checked after the pre-hooks (:mod:`hetsam.autosam.checkpoint_checks`),
    so a refused one leaves ``opt`` exactly as it was.

    Without ``"hetsam"`` (torch's two keys alone, as ``torch.distributed.checkpoint``'s
    ``set_optimizer_state_dict`` hands over) only the base optimizer's state loads, with a warning:
    hetsam's own state stays as it was, so the run does not continue exactly."""
    state_dict = torch_shape(state_dict)
    for hook in opt._optimizer_load_state_dict_pre_hooks.values():
        result = hook(opt, state_dict)
        if result is not None:
            state_dict = result
    checked = check(opt, state_dict)
    if checked.saved is None:
        warn_user("AutoSAM.load_state_dict: the state dict has no 'hetsam' entry, so only the base optimizer's state "
                  "loaded; hetsam's own (step counter, pending ascent gradients, RST's generator, ...) did not and the "
                  "run does not continue exactly: save opt.state_dict()['hetsam'] too and load it under 'hetsam'",
                  RuntimeWarning)
        _load_base(opt, state_dict)
    else:
        _load_all(opt, checked, state_dict)
    for hook in opt._optimizer_load_state_dict_post_hooks.values():
        hook(opt)


def torch_shape(state_dict: Any) -> Any:
    """A shallow copy (torch's ``load_state_dict`` makes one for its hooks); a checkpoint in the older
    shape ``{"base": torch's dict, "hetsam": ...}`` becomes ``{**base, "hetsam": ...}``."""
    if not isinstance(state_dict, dict):
        return state_dict  # check() refuses it
    if set(state_dict) == {"base", "hetsam"}:
        return {**keys(state_dict["base"], "state_dict['base']", optional=None), "hetsam": state_dict["hetsam"]}
    return dict(state_dict)


def _load_base(opt, state_dict: dict) -> None:
    opt.base_optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != "hetsam"})
    share_groups(opt, opt.base_optimizer)  # torch's load_state_dict replaced the groups


def _load_all(opt, checked: Checked, state_dict: dict) -> None:
    saved, plan = checked.saved, checked.plan
    guard = saved.get("guard") or {}
    if checked.parts is not None:  # plan="auto" before its first step, or a run the divergence guard switched
        opt._use(plan, checked.parts)
        opt._plan_source = "from the checkpoint"
        if guard.get("events") and opt._controller is not None:
            opt._controller.adopt(plan, "the divergence guard (before the checkpoint)")
    _load_base(opt, state_dict)
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
            out["grad_norm"] = float(parts.runtime.grad_norm)
        if parts.executor is not None:
            out["executor"] = parts.executor.describe()
        if parts.dist is not None:
            out["distributed"] = parts.dist.describe()
    if opt._controller is not None:
        out["auto"] = opt._controller.stats()
    return out
