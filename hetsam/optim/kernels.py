"""The SAM perturbation, written once with ``torch._foreach_*`` ops and shared by every rule.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization" (ICLR 2021),
and Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization" (ICML 2021):

    e = ρ · T² ĝ / ‖T ĝ‖,    T = diag(|θ| + η) for ASAM (``adaptive=True``), T = I for SAM,

with ‖·‖ the global L2 norm over every parameter (of every group), ĝ the ascent gradient, and
a 1e-12 guard in the denominator. The arithmetic follows the ``davda54/sam`` reference order:
per-tensor norms, the norm of their stack, ``scale = ρ / (‖·‖ + 1e-12)`` as a tensor, then
``e = (θ² if adaptive) · ĝ · scale`` and ``θ ← θ + e``.

:class:`Perturbation` keeps the single extra copy of the parameters that SAM needs: θ is saved
before the climb and copied back afterwards (a copy, not ``θ + e − e``, so the restore is exact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hetsam._warnings import warn_user

__all__ = ["AscentGroup", "ascent_norm", "Perturbation", "mix_", "optimistic_point_", "EPS"]

EPS = 1e-12  # the denominator guard of davda54/sam


@dataclass
class AscentGroup:
    """Parameters perturbed together with one ρ, one ``adaptive`` switch and one η.

    ``params[i]`` is perturbed along ``grads[i]``; parameters without an ascent gradient are
    simply left out of the group (as ``davda54/sam`` skips ``p.grad is None``). With
    ``adaptive``, T = |θ| + η: η = 0 is ``davda54/sam``'s element-wise ASAM, η > 0 (0.01 in
    the ASAM paper's code) the official one.
    """

    params: list[Tensor]
    grads: list[Tensor]
    rho: float
    adaptive: bool = False
    eta: float = 0.0

    def scale_factors(self) -> list[Tensor]:
        """T = |θ| + η, element-wise (new tensors)."""
        t = torch._foreach_abs(self.params)
        if self.eta:
            torch._foreach_add_(t, self.eta)
        return t


def ascent_norm(groups: Sequence[AscentGroup]) -> Tensor | None:
    """‖T ĝ‖: the global L2 norm over all groups (T = |θ| where a group is adaptive).

    Returns a 0-dim tensor on the device of the first gradient, or None when no parameter
    has an ascent gradient.
    """
    norms: list[Tensor] = []
    for g in groups:
        if not g.grads:
            continue
        if g.adaptive:
            scaled = g.scale_factors()
            torch._foreach_mul_(scaled, g.grads)  # T ĝ
            norms.extend(torch._foreach_norm(scaled))
        else:
            norms.extend(torch._foreach_norm(g.grads))
    if not norms:
        return None
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


class Perturbation:
    """θ ← θ + e(ĝ) and back, with one persistent backup buffer of θ.

    Usage: ``save(params)`` copies θ into the backup; ``perturb(groups)`` climbs (or skips,
    see below); ``restore()`` copies θ back into the saved parameters.

    A zero or non-finite ‖T ĝ‖ skips the climb for that step (the descent is then taken at θ),
    so a bad ascent gradient can never put NaN into the parameters. Skips are counted in
    ``skipped``; the first one warns.
    """

    def __init__(self, owner: str = "SAM"):
        self._owner = owner
        self._backup: dict[Tensor, Tensor] = {}  # parameter -> its backup buffer (reused every step)
        self._saved: tuple[list[Tensor], list[Tensor]] | None = None
        self.skipped = 0

    # ---- backup ---------------------------------------------------------------------------
    @torch.no_grad()
    def save(self, params: Sequence[Tensor]) -> None:
        """Copy θ into the backup buffer (allocated once per parameter, then reused)."""
        params = list(params)
        backup = self._backup
        for p in params:
            if p not in backup:
                backup[p] = torch.empty_like(p, memory_format=torch.preserve_format)
        buffers = [backup[p] for p in params]
        if params:
            torch._foreach_copy_(buffers, params)
        self._saved = (params, buffers)

    @torch.no_grad()
    def restore(self) -> None:
        """θ ← backup, for the parameters of the last :meth:`save` (exact)."""
        if self._saved is None:
            return
        params, buffers = self._saved
        if params:
            torch._foreach_copy_(params, buffers)

    def release(self) -> None:
        """Forget the saved parameters (the buffers stay allocated for the next step)."""
        self._saved = None

    def buffers(self) -> list[Tensor]:
        """The backup buffers (for memory accounting)."""
        return list(self._backup.values())

    # ---- climb ----------------------------------------------------------------------------
    @torch.no_grad()
    def perturb(self, groups: Sequence[AscentGroup], *, scratch: bool = False, norm: Tensor | None = None) -> bool:
        """θ ← θ + ρ T² ĝ / (‖T ĝ‖ + 1e-12) for every group; returns whether it climbed.

        ``scratch=True`` lets the ascent gradients be overwritten in place (they become e), so
        no temporary copy is made; the caller must not use them afterwards. ``norm`` is ‖T ĝ‖
        when the caller has it already (:func:`ascent_norm` of the same groups).
        """
        if norm is None:
            norm = ascent_norm(groups)
        value = float(norm) if norm is not None else 0.0  # one host sync: a zero or non-finite norm skips the climb
        if not math.isfinite(value) or value == 0.0:
            self._skip(value)
            return False
        for g in groups:
            if not g.grads:
                continue
            scale = g.rho / (norm + EPS)  # a tensor, as in davda54/sam
            if g.adaptive and g.eta:
                t = g.scale_factors()
                e = torch._foreach_mul(g.grads, t)
                torch._foreach_mul_(e, t)  # (ĝ T) T, the official ASAM's order
                _foreach_scale(e, scale, inplace=True)
            elif g.adaptive:
                e = torch._foreach_pow(g.params, 2)
                torch._foreach_mul_(e, g.grads)  # θ² ĝ (davda54/sam's order)
                _foreach_scale(e, scale, inplace=True)
            else:
                e = _foreach_scale(g.grads, scale, inplace=scratch)
            # e = T² ĝ · ρ / (‖T ĝ‖ + ε); climb to θ + e
            torch._foreach_add_(g.params, e)
        return True

    def _skip(self, value: float) -> None:
        self.skipped += 1
        if self.skipped == 1:
            kind = "zero" if value == 0.0 else "non-finite"
            warn_user(
                f"{self._owner}: the ascent gradient has a {kind} norm ({value}); this step skips the "
                "perturbation and descends at the unperturbed parameters. Further skips are counted "
                "silently (see the `skipped_perturbations` counter)."
            )


def _foreach_scale(tensors: list[Tensor], scale: Tensor, *, inplace: bool) -> list[Tensor]:
    """``tensors · scale`` (in place or as new tensors), with the 0-dim ``scale`` cast to each
    tensor's device and dtype (``scale.to(p)`` in davda54/sam)."""
    kinds = {(t.device, t.dtype) for t in tensors}
    if len(kinds) == 1:
        (device, dtype), = kinds
        s = scale.to(device=device, dtype=dtype)
        if inplace:
            torch._foreach_mul_(tensors, s)
            return tensors
        return list(torch._foreach_mul(tensors, s))
    out = []
    for t in tensors:
        s = scale.to(device=t.device, dtype=t.dtype)
        out.append(t.mul_(s) if inplace else t * s)
    return out


@torch.no_grad()
def mix_(dst: Sequence[Tensor | None], other: Sequence[Tensor | None], w_dst: float, w_other: float) -> None:
    """dst ← w_dst · dst + w_other · other, in place, wherever both tensors exist.

    Used for G-RST's (1−α)·g(θ) + α·g(θ+e) and SAMPa's (1−λ)·g_x + λ·g_y'. A zero weight
    skips its term entirely, so e.g. SAMPa-0 never touches g_y' (and cannot pick up a NaN from it).
    """
    pairs = [(d, o) for d, o in zip(dst, other) if d is not None and o is not None]
    if not pairs:
        return
    ds, os_ = [d for d, _ in pairs], [o for _, o in pairs]
    if w_dst != 1.0:
        torch._foreach_mul_(ds, w_dst)
    if w_other != 0.0:
        torch._foreach_add_(ds, os_, alpha=w_other)


@torch.no_grad()
def optimistic_point_(base: torch.optim.Optimizer, g_y: Sequence[Tensor | None] | None) -> bool:
    """Move the parameters from x_t to y_{t+1} = x_t − η (g_y + wd x_t + μ buf_t) in place.

    ``g_y`` is aligned with the parameters of ``base.param_groups`` (None: absent). The
    weight-decay and momentum terms apply to parameters of an SGD base optimizer that have a
    momentum buffer; the rest move by −η g_y. Returns whether any parameter moved.
    """
    sgd = isinstance(base, torch.optim.SGD)
    moved = False
    offset = 0
    for group in base.param_groups:
        params = group["params"]
        grads = list(g_y[offset:offset + len(params)]) if g_y is not None else [None] * len(params)
        offset += len(params)
        lr = float(group["lr"])
        heavy, light = [], []  # with a momentum buffer / without
        for p, g in zip(params, grads):
            buf = base.state[p].get("momentum_buffer") if sgd and p in base.state else None
            if buf is not None:
                heavy.append((p, g, buf))
            elif g is not None:
                light.append((p, g))
        if heavy:
            xs = [p for p, _, _ in heavy]
            d = torch._foreach_mul(xs, float(group["weight_decay"]))  # wd · x
            torch._foreach_add_(d, torch._foreach_mul([b for _, _, b in heavy], float(group["momentum"])))  # + μ · buf
            with_g = [(di, g) for di, (_, g, _) in zip(d, heavy) if g is not None]
            if with_g:
                torch._foreach_add_([di for di, _ in with_g], [g for _, g in with_g])  # + g_y
            torch._foreach_mul_(d, lr)
            torch._foreach_sub_(xs, d)  # y = x − η · d
            moved = True
        if light:
            step = torch._foreach_mul([g for _, g in light], lr)
            torch._foreach_sub_([p for p, _ in light], step)  # y = x − η · g_y
            moved = True
    return moved
