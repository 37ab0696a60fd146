"""SAMPa-λ across a pair of ranks, as the official SAMPa code runs it on two GPUs.

Xie et al., "SAMPa: Sharpness-aware Minimization Parallelized" (NeurIPS 2024); the pairing of
the official ``LIONS-EPFL/SAMPa`` ``train.py`` (two DDP processes fed the same batches, rank 0
computes g_x, rank 1 computes g_y', one all-reduce combines them). The rule is that of
:mod:`hetsam.strategies.sampa.rule` (README, "SAMPa"); here its two gradients run on two ranks:

    pair i = ranks (2i, 2i+1), fed the same batches B_t (k = W/2 pairs shard the data)
    rank 2i   (role x):  x̃_t = x_t + ρ · g_y/‖g_y‖,          g_x  = g(x̃_t; B_{t−1})
    rank 2i+1 (role y):  y_{t+1} = x_t − η (g_y + wd·x_t + μ·buf_t),   g_y' = g(y_{t+1}; B_t)
    one all-reduce (sum) of [g_x | 0] from x ranks and [0 | g_y'] from y ranks, divided by k:
        ḡ_x = mean over pairs of g_x,   ḡ_y' = mean over pairs of g_y'
    every rank:  x_{t+1} = base(x_t, (1 − λ) · ḡ_x + λ · ḡ_y');   g_y ← ḡ_y'

Each rank computes one gradient per step, on its own descent device, through the unwrapped
module (no DDP hook fires; the combining all-reduce is hetsam's). Every rank ends the step with
the same parameters, base-optimizer state and g_y, so with one pair (W = 2) this is exactly
single-process SAMPa on the pair's batches (bit for bit when both ranks compute as the single
process would), and with k pairs it is SAMPa on the union of the pairs' batches.

Differences from the official code: its all-reduce carries the mix (1 − λ)·g_x + λ·g_y' (P
numbers) and rank 0 recovers g_y by dividing by λ, which cannot work at λ = 0 (README) and
only for one pair. hetsam's carries g_x and g_y' side by side (2P numbers, one all-reduce), so
λ = 0 works, any number of pairs works, and g_y is bit-identical on every rank; the price is
twice the bytes of the official all-reduce, after both passes rather than overlapped with them
(the cost model and the simulator price exactly that: one ring all-reduce of 2P bytes).

Also in the same all-reduce: rank 0's BatchNorm running statistics (every other rank
contributes zeros), which replace every rank's, as DDP's ``broadcast_buffers`` would; and the
two passes' losses. Both ranks of a pair update ``num_batches_tracked`` in their pass, so it
stays equal. ``step`` returns L(y_{t+1}; B_t) averaged over the pairs, as single-process SAMPa
returns L(y_{t+1}; B_t). The first step checks that both ranks of every pair got the same batch.
"""

from __future__ import annotations

import torch

from hetsam.execution.distributed import common_dtype, flatten, unflatten
from hetsam.optim.kernels import mix_
from hetsam.strategies.sampa.rule import SAMPaRule, optimistic_point_

__all__ = ["SAMPaPairRule"]


class SAMPaPairRule(SAMPaRule):
    """SAMPa-λ with g_x on the even rank and g_y' on the odd rank of each pair (module docstring).
    No executor: the partner rank is the other device."""

    def __init__(self, ctx):
        super().__init__(ctx, executor=False)
        self.dist = ctx.dist
        self._stats = [t for m in self.rt.layers for t in (m.running_mean, m.running_var) if t is not None]

    def step(self, batch, upcoming, accumulate):
        rt, ctx = self.rt, self.dist
        if self.t == 0:
            ctx.check_pair_batches(batch)
        g_y, self.g_y = self.g_y, None
        rt.save()  # x_t
        if ctx.pair_role == "x":
            prev = batch if self.prev_batch is None else self.prev_batch  # B_{t−1}; B_{−1} = B_0
            norm = None if rt.adaptive else self.g_y_norm
            moved = g_y is not None and rt.climb(g_y, scratch=True, norm=norm)  # params: x̃_t
            loss = rt.gradient(prev, accumulate=accumulate, update_stats=True, unscale=True, local=True)  # g_x
        else:
            moved = optimistic_point_(rt.base, g_y)  # params: y_{t+1}
            loss = rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=True, local=True)  # g_y'
        del g_y
        if moved:
            rt.restore()  # params: x_t
        rt.perturbation.release()
        g_x, g_y_new, loss_y = self._combine(rt.take_grads(), loss)
        scale = rt.loss_scale()
        self.g_y_norm = self._norm(g_y_new)
        finite = self.g_y_norm is not None
        if scale is not None:  # the update gradient is S · ((1 − λ) ḡ_x + λ ḡ_y'); the scaler unscales it
            torch._foreach_mul_(g_x, scale)
        if finite or scale is not None:
            mix_(g_x, g_y_new, 1.0 - self.lam, self.lam * (scale or 1.0))
        for p, g in zip(rt.params, g_x):
            p.grad = g
        rt.apply()  # x_{t+1} = base(x_t, (1 − λ) ḡ_x + λ ḡ_y')
        self.g_y = g_y_new if finite else None  # g_y ← ḡ_y'
        self.prev_batch = batch
        self.t += 1
        return loss_y

    def _combine(self, grads, loss):
        """One all-reduce: [g_x | g_y' | rank 0's running statistics | L_x, L_y] summed over the
        ranks, the gradients and losses divided by the number of pairs."""
        ctx, params = self.dist, self.rt.params
        sizes = [p.numel() for p in params]
        n, s = sum(sizes), sum(t.numel() for t in self._stats)
        dtype = common_dtype(list(params) + self._stats)
        flat = torch.zeros(2 * n + s + 2, dtype=dtype, device=ctx.device)
        role = ctx.pair_role
        flatten(grads, sizes, dtype, ctx.device, out=flat, offset=0 if role == "x" else n)
        if ctx.rank == 0 and s:
            flatten(self._stats, [t.numel() for t in self._stats], dtype, ctx.device, out=flat, offset=2 * n)
        flat[2 * n + s + (0 if role == "x" else 1)] = loss.to(dtype)
        ctx.all_reduce_sum_(flat)
        pairs = ctx.world // 2
        if pairs > 1:
            flat[:2 * n].div_(pairs)
            flat[2 * n + s:].div_(pairs)
        if s:
            with torch.no_grad():
                for t, v in zip(self._stats, unflatten(flat, self._stats, 2 * n)):
                    t.copy_(v)
        g_x = [v if v.dtype == p.dtype else v.to(p.dtype) for v, p in zip(unflatten(flat, params, 0), params)]
        g_y = [v if v.dtype == p.dtype else v.to(p.dtype) for v, p in zip(unflatten(flat, params, n), params)]
        return g_x, g_y, flat[-1].detach().float().clone()

    def state_dict(self) -> dict:
        state = super().state_dict()
        if state["g_y"] is not None:  # views of the all-reduce buffer: save them on their own
            state["g_y"] = [None if g is None else g.clone() for g in state["g_y"]]
        return state

    def stats(self) -> dict:
        return {**super().stats(), "pair_role": self.dist.pair_role}
