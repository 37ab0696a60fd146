"""What AutoSAM says about the plan it runs: one log line per plan, and ``plan_report()``.

Every plan is logged once, at its first step, whoever chose it: the planner (``plan="auto"``:
:func:`hetsam.autosam.controller.describe_choice`), the user (a strategy name or a
:class:`~hetsam.Plan`: :func:`given_plan_line`), a re-plan or the divergence guard (their one-line
decisions). Each line carries the plan's share of SAM's gain with its interval and the evidence
behind it (:class:`hetsam.evidence.Share`), read for the base optimizer's family.
"""

from __future__ import annotations

from typing import Any

import torch

from hetsam.hardware.names import parse_device

__all__ = ["base_family", "share_of", "given_plan_line", "plan_report"]

_ADAM_LIKE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam)


def base_family(base: torch.optim.Optimizer) -> str | None:
    """The evidence's family of the base optimizer: SGD with momentum (in every group), or
    Adam/AdamW/NAdam/RAdam; None for anything else (MSAM then has no tested radius)."""
    from hetsam.evidence import optimizer_family

    if isinstance(base, torch.optim.SGD):
        momentum = all(group.get("momentum", 0) for group in base.param_groups)
        return optimizer_family(torch.optim.SGD.__name__) if momentum else None
    if isinstance(base, _ADAM_LIKE):
        return optimizer_family(torch.optim.Adam.__name__)
    return None


def share_of(plan, batch_size: int | None, family: str | None, shares: Any = None):
    """The plan's :class:`~hetsam.evidence.Share` for a new task (``batch_size``: b, for b'/b)."""
    from hetsam.evidence import share_model

    b = plan.batch_size or batch_size or 1  # b unknown: b' = b (the share of b'/b is the same at b = 1)
    return share_model(shares).share(plan, b, family)


def _sliced(plan) -> str:
    """A note when the ascent shares the descent's hardware (it then takes turns with it)."""
    spec = plan.spec
    if not (spec.uses_ascent and spec.uses_executor):
        return ""
    descent, ascent = plan.descent_device, plan.effective_ascent_device
    if parse_device(descent).overlaps(parse_device(ascent)):
        return f" (the ascent is time-sliced on {descent}, which both roles share)"
    return f" (the ascent runs on {ascent}, beside the descent on {descent})"


def given_plan_line(plan, batch_size: int | None, family: str | None, source: str = "as given") -> str:
    """The one line for a plan the user named or gave (``source``: where it came from)."""
    share = share_of(plan, batch_size, family)
    return f"hetsam: plan {plan.describe()}{_sliced(plan)}, {source}; share of SAM's gain {share.text()}"


def plan_report(opt) -> dict:
    """``AutoSAM.plan_report()``: the plan that runs, its share, the prediction when the planner made
    one, and why it runs."""
    controller, plan = opt._controller, opt.plan
    if plan is None:
        return {"plan": None, "describe": None, "share": None, "prediction": None, "chosen_by": "planner",
                "why": "plan='auto' chooses at the first step"}
    guard_events = opt._guard.events
    report = controller.report if controller is not None else None
    candidate = None
    if report is not None:
        candidate = next((c for c in report.candidates if c.plan == plan), None)
    family = report.base_optimizer if report is not None else base_family(opt.base_optimizer)
    share = candidate.share if candidate is not None and candidate.share is not None else \
        share_of(plan, opt._batch_size, family, controller.options.shares if controller else None)
    if guard_events:
        chosen_by, why = "guard", f"the divergence guard: {guard_events[-1]['reason']}"
    elif report is not None and plan == report.plan:
        chosen_by, why = "planner", report.why()
    elif controller is not None and controller.replans:
        chosen_by, why = "planner", controller.switch_reason
    elif opt._plan_source != "as given":
        chosen_by, why = "checkpoint", f"resumed {opt._plan_source}"
    else:
        chosen_by, why = "you", "given: " + ("a hetsam.Plan" if opt._given_plan_object else "a strategy name, "
                                               "with the Plan defaults on the model's device")
    return {"plan": plan.to_dict(), "describe": plan.describe(), "share": share.to_dict(), "share_text": share.text(),
            "prediction": candidate.prediction.to_dict() if candidate is not None and candidate.prediction else None,
            "chosen_by": chosen_by, "why": why, "base_optimizer": family}
