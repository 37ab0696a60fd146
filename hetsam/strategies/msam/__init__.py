"""Momentum-SAM (MSAM; Becker et al., 2024): SAM's perturbation along the momentum, no extra gradient.

Each step computes one gradient, at ``θ_t − ρ m_t/‖m_t‖`` with ``m_t`` the base optimizer's
momentum (SGD's buffer, Adam's first moment), and the base optimizer applies it at θ_t (README,
"The update rules"). So a step costs an SGD step plus the climb: ``t_D + u + c`` (+ the loop's
ℓ), in closed form and in the simulator alike. ρ is the plan's option ``rho``: MSAM's radius is
on another scale than SAM's (its authors use 0.3 to 3 where SAM uses 0.05 to 0.2).
"""

from __future__ import annotations

from hetsam.strategies.registry import MSAM
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "MSAMSpec", "TUNED_RADIUS"]

TUNED_RADIUS = -1.0  # where a record with a radius tuned per task, of unknown value, is placed

_RHOS = (0.3, 1.0)  # the radii the time-to-accuracy benchmark measures (README, "Accuracy per second")


class MSAMSpec(StrategySpec):
    name = MSAM
    title = "MSAM"
    summary = "Momentum-SAM: one gradient per step, at θ − ρ m/‖m‖ (m: the base optimizer's momentum)"
    options = (Option("rho", float, 0.3, 0.0, 100.0, "the radius along the normalised momentum"),)
    uses_ascent = False
    rule = "hetsam.strategies.msam.rule:MSAMRule"
    evidence_axis = "levels"
    own_radius = True
    guarded = True

    def evidence_point(self, settings, base_optimizer=None):
        # a radius transfers only within a base optimizer family (its scale differs: README); a
        # radius tuned per task (settings["tuned"]) of unknown value sits at TUNED_RADIUS
        rho = setting(settings, "rho", 0.0, 100.0)
        if rho is None and settings.get("tuned") is True:
            rho = TUNED_RADIUS
        return None if rho is None or base_optimizer is None else ((base_optimizer,), rho)

    def refuses(self, base_groups) -> str | None:
        if all(group.get("momentum", 0) or "betas" in group for group in base_groups):
            return None
        return ("msam perturbs along the base optimizer's momentum, but it has none here (momentum=0); use SGD "
                "with momentum > 0, or Adam/AdamW")

    def closed_form_seconds(self, ctx, plan) -> float:
        d = plan.descent_device
        return ctx.descent_step(d, ctx.cm.grad_seconds(d, ctx.batch_size), perturbed=True)

    def candidates(self, ctx):
        # ρ costs no time, so the planner compares the radii by their expected share of SAM's gain.
        # On the fastest device: the simulated SGD baseline plus the climb, exactly (like RST's).
        # only radii the evidence tested for this kind of base optimizer (none when it is unknown)
        rhos = _RHOS if ctx.evidence is None else ctx.evidence.tested(self.name, (ctx.base_optimizer,)) \
            if ctx.base_optimizer is not None else ()
        for d in ctx.descent_devices:
            for rho in rhos:
                plan = ctx.plan(self.name, descent_device=d, options={"rho": rho})
                if d == ctx.fastest:
                    g = ctx.cm.grad_seconds(d, ctx.batch_size)
                    climb = ctx.descent_step(d, g, perturbed=True) - ctx.descent_step(d, g)
                    yield Proposal(plan, ctx.sgd_seconds + climb, exact=True)
                else:
                    yield Proposal(plan, self.closed_form_seconds(ctx, plan))

    def simulation(self, w):
        def build(t: int) -> None:
            _, chain = w.start_of(t)
            w.descent_step(t, (chain,), chain, perturbed=t > 0)  # no momentum before the first update

        return build


SPEC = MSAMSpec()
