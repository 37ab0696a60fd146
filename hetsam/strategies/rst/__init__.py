"""RST / G-RST (Zhao, Zhang and Hu, 2022): a SAM step with probability p, an SGD step otherwise.

Expected step: ``(1 − p)·SGD + p·SAM`` exactly, so the planner takes it from the simulated SGD and
SAM baselines on the fastest device and proposes the p that meets the budget, the fidelity floor
and 0.5. Simulated: each step draws u from the strategy's own seeded stream (common to all
ranks) and is a SAM iteration if u < p, an SGD iteration otherwise.
"""

from __future__ import annotations

from hetsam import defaults
from hetsam.strategies.registry import RST
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "RSTSpec"]


class RSTSpec(StrategySpec):
    name = RST
    title = "RST"
    summary = "randomized SAM: a SAM step with probability p, else an SGD step"
    fields = ("ascent_device",)
    options = (Option("sam_probability", float, defaults.SAM_PROBABILITY, 0.0, 1.0,
                      "p: a step is a SAM step with probability p (AutoSAM also takes a schedule of it)", schedule=True),
               Option("grst_alpha", float, 1.0, 0.0, 1.0, "G-RST's α (1: plain RST)"))
    mixed_steps = True
    rule = "hetsam.strategies.rst.rule:RSTRule"
    evidence_axis = "sam_fraction"
    guarded = True  # skipped perturbations

    def evidence_settings(self, plan, batch_size: int) -> dict:
        return {"p": self.sam_fraction(plan)}

    def evidence_point(self, settings, base_optimizer=None):
        p = setting(settings, "p", 0.0, 1.0)  # a schedule's records give its mean p
        return None if p is None else ((), p)

    def sam_fraction(self, plan) -> float:
        return float(plan.options["sam_probability"])

    def settings(self, plan, batch_size: int) -> str:
        alpha = plan.options["grst_alpha"]
        return f"p={self.sam_fraction(plan):g}" + ("" if alpha == 1 else f" alpha={alpha:g}")

    def candidates(self, ctx):
        for p in sorted({ctx.p_budget, min(1.0, ctx.min_fraction), defaults.SAM_PROBABILITY}):
            plan = ctx.plan(self.name, descent_device=ctx.fastest, options={"sam_probability": p})
            yield Proposal(plan, self.closed_form_seconds(ctx, plan), exact=True)

    def simulation(self, w):
        coin = w.stream(self.name).random
        p = self.sam_fraction(w.plan)
        return lambda t: w.sam_step(t) if coin() < p else w.sgd_step(t)


SPEC = RSTSpec()
