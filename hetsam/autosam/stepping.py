"""One ``AutoSAM.step`` around its rule: what comes before it (the checks, the plan's choice and
its one log line) and after it (an update skipped for a non-finite loss, the divergence guard,
re-planning)."""

from __future__ import annotations

from typing import Any

import torch

from hetsam import _checks
from hetsam._warnings import warn_user
from hetsam.autosam.framework import check_wrappers
from hetsam.autosam.guard import fallback_plan
from hetsam.autosam.params import warn_unoptimized
from hetsam.autosam.report import base_family, given_plan_line, share_of
from hetsam.errors import HetsamInputError, NonFiniteUpdate
from hetsam.execution.batches import batch_size
from hetsam.execution.distributed import unwrap

__all__ = ["begin", "result", "end", "guard_step", "skip"]


def begin(opt, batch, closure, upcoming, accumulate: int, descent_closure: bool):
    """Check the step's arguments, choose (``plan="auto"``) and log the plan at its first step;
    returns the upcoming batches for lookahead."""
    if opt._closed:
        raise RuntimeError("AutoSAM.step() after close()")
    if batch is None:
        raise HetsamInputError("AutoSAM.step() needs the step's batch: step(batch) (a closure alone cannot run the "
                               "ascent); in Lightning call self.optimizers().step(batch=batch)")
    if closure is not None and not callable(closure):
        raise HetsamInputError(f"closure={_short(closure)} must be callable")
    _checks.integer(accumulate, "accumulate", low=1, high=1 << 20, hint="micro-batches per step")
    queued = opt._prefetcher.take(batch)  # the k-th batch a wrapper yielded is the k-th step's
    upcoming = queued if upcoming is None else upcoming
    if opt._parts is None:
        opt._sample_batch = batch  # profiled now, and again if the step time drifts
        opt._use(opt._controller.choose(unwrap(opt.model), opt.loss_fn, batch, opt.param_groups))
        opt._plan_logged = True  # the controller logged it
    if opt._batch_size is None:
        check_wrappers(opt)  # a framework's wrapper that would train wrongly (hetsam.autosam.framework)
        opt._batch_size = batch_size(batch)
    if not opt._plan_logged:
        opt._log(given_plan_line(opt.plan, opt._batch_size, base_family(opt.base_optimizer), opt._plan_source))
        opt._plan_logged = True
    if descent_closure:
        opt._parts.check_descent_closure(closure, accumulate)
    if opt._default_params and not opt._warned_idle:
        opt._warned_idle = warn_unoptimized(opt)
    return upcoming


def result(opt, loss: Any):
    """The step's loss as ``step`` returns it: a detached tensor on the descent device, as torch
    optimizers return the closure's loss; no host sync (a rule whose loss came back from another
    device or as a number, e.g. SAMPa's g_y' pass, is moved or wrapped)."""
    params = opt._parts.runtime.params
    device = params[0].device if params else None
    if not isinstance(loss, torch.Tensor):
        return torch.tensor(float(loss), device=device)
    loss = loss.detach()
    return loss if device is None or loss.device == device else loss.to(device)


def end(opt, loss: Any, descent_closure: bool, period: float | None, gap: float | None = None) -> None:
    """After the rule's step: skipped updates and the guard, then the controller's window."""
    rt = opt._parts.runtime
    no_loss = descent_closure and not _is_tensor(rt.closure_result)  # a framework closure without a loss
    if guard_step(opt, loss, rt.take_skipped(), no_loss):
        return
    if opt._controller is not None and period is not None:
        switch = opt._controller.observe(period, gap)
        if switch is not None:
            opt._use(switch)
            if not switch.spec.guarded:
                opt._guard.release()


def guard_step(opt, loss: Any, skipped: str | None, no_loss: bool = False) -> bool:
    """Count and report an update skipped because ``skipped`` was not finite (:func:`skip`), let the
    guard watch the loss, and on a divergence switch to :func:`~hetsam.autosam.guard.fallback_plan`.
    Returns whether the guard switched plans."""
    guard, steps = opt._guard, opt._steps_before + opt._parts.rule.t
    if skipped:
        skip(opt, skipped, steps)
    if no_loss:
        return False
    reason = guard.observe(opt, loss, steps, skipped)
    if reason is None:
        return False
    old, controller = opt.plan, opt._controller
    report = controller.report if controller is not None else None
    new = fallback_plan(old, report)
    opt._use(new)  # retires the old rule (its pending jobs end) before the snapshot comes back
    family = report.base_optimizer if report is not None else base_family(opt.base_optimizer)
    share = share_of(new, opt._batch_size, family, controller.options.shares if controller is not None else None)
    guard.trip(opt, reason, steps, old, new, share.text())
    if controller is not None:
        controller.adopt(new, f"the divergence guard: {reason}")
    return True


def skip(opt, what: str, step: int) -> None:
    """Step ``step`` (1-based) applied nothing because ``what`` was not finite: count it; warn at the
    1st, 2nd, 4th, 8th, ... such step (a run that keeps diverging does not flood the log), or with
    ``nonfinite="raise"`` raise :class:`~hetsam.errors.NonFiniteUpdate`."""
    opt._skipped_updates += 1
    n = opt._skipped_updates
    line = (f"AutoSAM: step {step}: {what} is not finite, so this step's update was skipped: nothing reached the "
            f"parameters or the optimizer's state")
    if opt._nonfinite == "raise":
        exc = NonFiniteUpdate(f"{line} (nonfinite='raise'; {n} skipped so far)")
        exc.step, exc.reason = step, what
        raise exc
    if n & (n - 1) == 0:
        warn_user(f"{line} ({n} so far, stats()['skipped_updates']; warned again when {2 * n} are)", RuntimeWarning)


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
