"""RST / G-RST's rule (Zhao et al. 2022): a SAM step with probability p(t), an SGD step otherwise.

The trial is drawn before any pass, from the rule's own seeded generator (under DDP rank 0's seed
on every rank). p is the plan's option ``sam_probability``, or a schedule of it given to AutoSAM
(``options={"sam_probability": callable or schedule}``); α the option ``grst_alpha``. Returns
L(θ_t; B_t) either way.
"""

from __future__ import annotations

from hetsam.optim.rst import SamTrials, check_alpha
from hetsam.optim.state_checks import counter, keys
from hetsam.strategies.sam.rule import SAMRule

__all__ = ["RSTRule"]


class RSTRule(SAMRule):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.trials = SamTrials(ctx.option("sam_probability"), ctx.agreed_seed(), name="sam_probability")
        self.alpha = check_alpha(ctx.option("grst_alpha"))

    def step(self, batch, upcoming, accumulate):
        if self.trials.draw():
            loss = self.sam_step(batch, accumulate, self.alpha)
        else:
            loss = self.base_step(batch, accumulate)
        self.t += 1
        return loss

    def state_dict(self) -> dict:
        return {"t": self.t, "trials": self.trials.state_dict()}

    def check_state(self, state, where: str) -> None:
        counter(keys(state, where, ("t", "trials"))["t"], f"{where}['t']")
        SamTrials.check_state(state["trials"], f"{where}['trials']")

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.trials.load_state_dict(state["trials"])

    def stats(self) -> dict:
        steps = self.trials.steps
        return {"coin_flips": steps, "sam_steps": self.trials.sam_steps, "seed": self.trials.seed,
                "sam_fraction_ran": self.trials.sam_steps / steps if steps else None}
