"""SAM (Foret et al., ICLR 2021): both gradients of a step, one after the other.

    e = ρ · g(θ_t; B_t) / ‖g(θ_t; B_t)‖,    θ_{t+1} = base(θ_t, g(θ_t + e; B_t))

Closed form on D: ``t_D + (t_D + u)`` (at scale ``t_D`` plus DDP's descent step: the ascent is
per rank, never all-reduced). Simulated: the ascent gradient (on A with both copies when the plan
names another ascent device), then the descent.
"""

from __future__ import annotations

from hetsam.strategies.registry import SAM
from hetsam.strategies.spec import StrategySpec

__all__ = ["SPEC", "SAMSpec"]


class SAMSpec(StrategySpec):
    name = SAM
    exact_share = 1.0
    title = "SAM"
    summary = "sharpness-aware minimization: the ascent gradient, then the descent at θ + e"
    fields = ("ascent_device",)
    baseline = True
    rule = "hetsam.strategies.sam.rule:SAMRule"

    def closed_form_seconds(self, ctx, plan) -> float:
        d = plan.descent_device
        t = ctx.cm.grad_seconds(d, ctx.batch_size)
        if ctx.scale is None:
            return 2 * t + ctx.cm.step_seconds(d, perturbed=True)  # 2·t_D + u + ℓ + c
        return t + ctx.descent_step(d, t, perturbed=True)  # the ascent is per rank, never all-reduced

    def candidates(self, ctx):
        return self.on_each_descent_device(ctx)

    def simulation(self, w):
        return w.sam_step


SPEC = SAMSpec()
