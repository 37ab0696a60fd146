"""MSAM's rule: θ̃ = θ_t − ρ m_t/‖m_t‖, g = g(θ̃; B_t), θ_{t+1} = base(θ_t, g).

``m_t`` is the base optimizer's momentum before the step (SGD's ``momentum_buffer``, Adam's
``exp_avg``), the global L2 norm over every parameter; the climb goes through the runtime's
perturbation (back up θ, move, restore exactly), so the update is applied at θ_t. Before the first
update there is no momentum and the step is plain. The returned loss is L(θ̃; B_t), the only loss
the step computes. Weight decay is the base optimizer's, at θ_t.

**No climb during the learning rate's warm-up**, as MSAM's authors run it: step t is plain
(θ̃ = θ_t) when

- t < ``warmup_steps`` (AutoSAM's ``warmup_steps=``; the Hugging Face integration passes the
  Trainer's), or
- any parameter group's lr at step t is higher than at step t − 1 (the schedule is still rising:
  a linear or one-cycle warm-up, a cyclic schedule's rising half).

Those steps are counted in ``stats()["msam"]["warmup_steps_skipped"]``; the previous step's lrs
travel in the checkpoint, so a resumed run decides as the uninterrupted one.
"""

from __future__ import annotations

from hetsam.errors import HetsamInputError
from hetsam.optim.kernels import AscentGroup
from hetsam.optim.state_checks import counter, keys, real
from hetsam.strategies.rule import StrategyRule

__all__ = ["MSAMRule"]

_MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")  # SGD, Adam/AdamW/NAdam
_RISE = 1e-9  # lr_t > lr_{t-1} (1 + _RISE) is a rise: a chainable scheduler's rounding on a flat lr is not


class MSAMRule(StrategyRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.rho = ctx.plan.spec.option(ctx.plan, "rho")
        problem = ctx.plan.spec.refuses(self.rt.base.param_groups)
        if problem:
            raise HetsamInputError(f"{type(self.rt.base).__name__}: {problem}")
        self.climbs = 0
        self.warmup_skipped = 0  # steps with momentum left plain: lr rising, or t < warmup_steps
        self._last_lrs: list[float] | None = None  # every group's lr at the previous step

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

    def _warming_up(self) -> bool:
        """Whether step t is in the warm-up (module docstring); records this step's lrs."""
        lrs = [float(group["lr"]) for group in self.rt.base.param_groups]
        before, self._last_lrs = self._last_lrs, lrs
        warmup = self.ctx.run.warmup_left()  # AutoSAM's warmup_steps less the steps of earlier plans
        if warmup is not None and self.t < warmup:
            return True
        return before is not None and any(now > last * (1 + _RISE) for now, last in zip(lrs, before))

    def step(self, batch, upcoming, accumulate):
        rt = self.rt
        warming = self._warming_up()
        groups = self._momentum() if self.rho > 0 else None
        if groups is not None and warming:
            groups = None
            self.warmup_skipped += 1
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

    def state_dict(self) -> dict:
        return {"t": self.t, "climbs": self.climbs, "warmup_skipped": self.warmup_skipped, "last_lrs": self._last_lrs}

    def check_state(self, state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads."""
        keys(state, where, ("t",), ("climbs", "warmup_skipped", "last_lrs"))
        t = counter(state["t"], f"{where}['t']")
        for key in ("climbs", "warmup_skipped"):
            if key in state:
                counter(state[key], f"{where}[{key!r}]", high=t)
        lrs = state.get("last_lrs")
        if lrs is not None:
            if not isinstance(lrs, list):
                raise HetsamInputError(f"{where}['last_lrs'] must be a list of learning rates or None")
            for i, lr in enumerate(lrs):
                real(lr, f"{where}['last_lrs'][{i}]", low=0.0)

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.climbs = int(state.get("climbs", 0))
        self.warmup_skipped = int(state.get("warmup_skipped", 0))
        lrs = state.get("last_lrs")
        self._last_lrs = None if lrs is None else [float(x) for x in lrs]

    def stats(self) -> dict:
        return {"perturbed_steps": self.climbs,
                "msam": {"perturbed_steps": self.climbs, "warmup_steps_skipped": self.warmup_skipped}}
