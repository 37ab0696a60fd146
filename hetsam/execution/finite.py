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
    values = [x.detach().reshape(()) for x in losses]  # the step's passes, in order
    by_kind: dict = {}
    for g in grads:
        g = g.coalesce().values() if g.is_sparse else g
        by_kind.setdefault((g.device, g.dtype), []).append(g)
    for (_, dtype), tensors in by_kind.items():
        # ‖g‖₂ (5x faster than max |g| on CPU); a 16-bit ‖g‖₂ can overflow, so there max |g|. An fp32 ‖g‖₂
        # overflows only past |g| ~ 1e19, which no update survives either
        values.extend(torch._foreach_norm(tensors, float("inf") if torch.finfo(dtype).bits <= 16 else 2.0))
    if not values:
        return None
    device = values[0].device  # float(): a finite 16-bit value stays finite, inf and NaN stay what they are
    finite = torch.isfinite(torch.stack([v.to(device=device, dtype=torch.float32) for v in values]))
    if finite.all().item():  # the one host sync; what failed is read only when something did
        return None
    ok = finite.tolist()
    if not all(ok[:len(losses)]):  # the first pass's loss is the one the step returns (SAM's ascent)
        return "the loss" if ok[0] is False or len(losses) == 1 else "the update pass's loss"
    return "the update gradient"
