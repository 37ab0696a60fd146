"""Momentum-SAM (MSAM; Becker et al., 2024): SAM's perturbation along the momentum, no extra gradient.

Each step computes one gradient, at ``θ_t − ρ m_t/‖m_t‖`` with ``m_t`` the base optimizer's
momentum (SGD's buffer, Adam's first moment), and the base optimizer applies it at θ_t (README,
"The update rules"). So a step costs an SGD step plus the climb: ``t_D + u + c`` (+ the loop's
ℓ), in closed form and in the simulator alike. ρ is the plan's option ``rho``: MSAM's radius is
on another scale than SAM's (its authors use 0.3 to 3 where SAM uses 0.05 to 0.2).
"""

from __future__ import annotations

from hetsam.strategies.registry import MSAM
from hetsam.strategies.spec import Option, StrategySpec

__all__ = ["SPEC", "MSAMSpec"]


class MSAMSpec(StrategySpec):
    name = MSAM
    title = "MSAM"
    summary = "Momentum-SAM: one gradient per step, at θ − ρ m/‖m‖ (m: the base optimizer's momentum)"
    options = (Option("rho", float, 0.3, 0.0, 100.0, "the radius along the normalised momentum"),)
    uses_ascent = False
    rule = "hetsam.strategies.msam.rule:MSAMRule"

    def closed_form_seconds(self, ctx, plan) -> float:
        d = plan.descent_device
        return ctx.descent_step(d, ctx.cm.grad_seconds(d, ctx.batch_size), perturbed=True)

    def candidates(self, ctx):
        return self.on_each_descent_device(ctx)

    def what_if_plans(self, given, descent, partners, batch_size, make_plan):
        return self.plan_on(descent, batch_size, make_plan)

    def simulation(self, w):
        def build(t: int) -> None:
            _, chain = w.start_of(t)
            w.descent_step(t, (chain,), chain, perturbed=t > 0)  # no momentum before the first update

        return build


SPEC = MSAMSpec()
