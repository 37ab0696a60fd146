"""A strategy written outside the package: SAM on every k-th step, SGD otherwise.

It is the proof that adding a strategy is one spec and one rule: nothing in hetsam knows its name,
and no file of hetsam changes. Register it with ``registered()`` (a context manager that
unregisters it afterwards; a package would call ``strategies.register(SPEC)`` on import).
``register`` checks the spec and imports the rule at once; ``test_strategy_registry.py`` runs
``hetsam.testing.StrategyContract`` on it, as a third party's own tests would, then plans,
simulates and trains with it.
"""

from __future__ import annotations

import contextlib

from hetsam import strategies
from hetsam.strategies import Option, Proposal, StrategySpec

NAME = "every_k"


class EveryKSpec(StrategySpec):
    name = NAME
    title = "SAM every k"
    summary = "SAM on every k-th step, SGD otherwise"
    fields = ("ascent_device",)
    options = (Option("k", int, 2, 1, 1000, "SAM on the steps t with t % k == 0"),)
    mixed_steps = True
    rule = "_toy_strategy:EveryKRule"

    def sam_fraction(self, plan) -> float:
        return 1.0 / self.option(plan, "k")

    def candidates(self, ctx):
        for k in (2, 4, 8):
            plan = ctx.plan(self.name, descent_device=ctx.fastest, options={"k": k})
            yield Proposal(plan, self.closed_form_seconds(ctx, plan), exact=True)

    def simulation(self, w):
        k = self.option(w.plan, "k")
        return lambda t: w.sam_step(t) if t % k == 0 else w.sgd_step(t)


def _rule_base():
    from hetsam.strategies.sam.rule import ScheduledSAMRule

    return ScheduledSAMRule


class EveryKRule(_rule_base()):
    """θ_{t+1} = SAM step if t % k == 0, else base(θ_t, g(θ_t; B_t))."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.k = ctx.plan.spec.option(ctx.plan, "k")

    def is_sam_step(self, t: int) -> bool:
        return t % self.k == 0


SPEC = EveryKSpec()


@contextlib.contextmanager
def registered():
    strategies.register(SPEC)
    try:
        yield SPEC
    finally:
        strategies.unregister(NAME)
