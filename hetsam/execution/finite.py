"""The check that stops a non-finite step from updating: one host sync per step.

AutoSAM runs it before every base update (``hetsam.autosam.assemble.CheckedRuntime``), and the
profiler times the update with it (``hetsam.profiling.ladder``), so what is profiled is what runs.
"""

from __future__ import annotations

import math

import torch

__all__ = ["not_finite"]


def not_finite(losses: list, grads: list, groups: list) -> str | None:
    """What of a step's losses, update gradient and learning rates is not finite (one host sync), or None."""
    for i, group in enumerate(groups):  # a scheduler may have set it
        lr = group.get("lr")
        if isinstance(lr, (int, float)) and not math.isfinite(lr):
            return f"the learning rate of param group {i} ({lr})"
    # one norm per tensor, the step's losses among them (|x| of a scalar is finite iff x is), by kind
    by_kind: dict = {}
    for x in [x.detach().float() for x in losses] + [g.coalesce().values() if g.is_sparse else g for g in grads]:
        by_kind.setdefault((x.device, x.dtype), []).append(x)
    if not by_kind:
        return None
    device = next(iter(by_kind))[0]
    parts = []
    for (_, dtype), tensors in by_kind.items():
        # ‖g‖₂ (5x faster than max |g| on CPU); a 16-bit ‖g‖₂ can overflow, so there max |g|. An fp32 ‖g‖₂
        # overflows only past |g| ~ 1e19, which no update survives either
        norms = torch._foreach_norm(tensors, float("inf") if torch.finfo(dtype).bits <= 16 else 2.0)
        parts.append(torch.stack(norms).to(device=device, dtype=torch.float32))  # a finite 16-bit norm stays finite
    finite = torch.isfinite(parts[0] if len(parts) == 1 else torch.cat(parts))
    if finite.all().item():  # the one host sync; what failed is read only when something did
        return None
    bad = [not math.isfinite(float(x)) for x in losses]  # a skipped step: the reason may cost syncs
    if any(bad):  # the first pass's loss is the one the step returns (SAM's ascent)
        return "the loss" if bad[0] or len(losses) == 1 else "the update pass's loss"
    return "the update gradient"
