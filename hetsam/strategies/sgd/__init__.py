"""SGD: the base optimizer alone, one gradient per step: θ_{t+1} = base(θ_t, g(θ_t; B_t)).

The baseline of every plan: the budget is a multiple of its step time on the fastest device.
Closed form and simulated iteration: ``load_t`` then ``t_D + u`` on D (``L + t_D + u``; at scale
DDP's ``max(t_D, e_K) + u``).
"""

from __future__ import annotations

from hetsam.strategies.registry import SGD
from hetsam.strategies.spec import StrategySpec

__all__ = ["SPEC", "SGDSpec"]


class SGDSpec(StrategySpec):
    name = SGD
    exact_share = 0.0
    title = "SGD"
    summary = "the base optimizer alone (one gradient per step): the baseline"
    uses_ascent = False
    baseline = True
    planned = False
    rule = "hetsam.strategies.sgd.rule:SGDRule"

    def closed_form_seconds(self, ctx, plan) -> float:
        d = plan.descent_device
        return ctx.descent_step(d, ctx.cm.grad_seconds(d, ctx.batch_size))

    def candidates(self, ctx):
        return self.on_each_descent_device(ctx)

    def simulation(self, w):
        return w.sgd_step


SPEC = SGDSpec()
