"""MSAM's rule: θ̃ = θ_t − ρ m_t/‖m_t‖, g = g(θ̃; B_t), θ_{t+1} = base(θ_t, g).

``m_t`` is the base optimizer's momentum before the step (SGD's ``momentum_buffer``, Adam's
``exp_avg``), the global L2 norm over every parameter; the climb goes through the runtime's
perturbation (back up θ, move, restore exactly), so the update is applied at θ_t. Before the first
update there is no momentum and the step is plain. The returned loss is L(θ̃; B_t), the only loss
the step computes. Weight decay is the base optimizer's, at θ_t.
"""

from __future__ import annotations

from hetsam.errors import HetsamInputError
from hetsam.optim.kernels import AscentGroup
from hetsam.strategies.rule import StrategyRule

__all__ = ["MSAMRule"]

_MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")  # SGD, Adam/AdamW/NAdam


class MSAMRule(StrategyRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rho = ctx.plan.spec.option(ctx.plan, "rho")
        problem = ctx.plan.spec.refuses(self.rt.base.param_groups)
        if problem:
            raise HetsamInputError(f"{type(self.rt.base).__name__}: {problem}")
        self.climbs = 0

    def _momentum(self):
        """One AscentGroup per parameter group along −m (None when no parameter has momentum yet)."""
        groups, found = [], False
        for group in self.rt.base.param_groups:
            pairs = []
            for p in group["params"]:
                state = self.rt.base.state.get(p, {})
                m = next((state[k] for k in _MOMENTUM_KEYS if state.get(k) is not None), None)
                if m is not None:
                    pairs.append((p, m))
            found = found or bool(pairs)
            # e = −ρ m/‖m‖: a negative radius along m (the kernels' norm is over every group)
            groups.append(AscentGroup([p for p, _ in pairs], [m for _, m in pairs], -self.rho))
        return groups if found else None

    def step(self, batch, upcoming, accumulate):
        rt = self.rt
        groups = self._momentum() if self.rho > 0 else None
        climbed = False
        if groups is not None:
            rt.save()
            climbed = rt.perturbation.perturb(groups)  # the momentum itself is left untouched
        loss = rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False, update=True)
        if climbed:
            rt.restore()
            self.climbs += 1
        rt.perturbation.release()
        rt.apply()
        self.t += 1
        return loss

    def stats(self) -> dict:
        return {"perturbed_steps": self.climbs}
