"""The typical step of a plan: the centre every comparison of step times uses.

A step time measured on a busy machine has a heavy right tail, and so does the simulator's draw
of it (a lognormal matched to the measured median and spread, ``hetsam.cost.jitter``). Its mean
grows with the spread as ``exp(σ²/2)``, so a mean would move the centre with the noise. The
centre here is what the bench measures (``hetsam bench``, medians of interleaved rounds):

- a plan of one kind of step: the median (p50) of the simulated iteration times;
- a plan of two kinds of steps (RST, interval, late phase; ``StrategySpec.mixed_steps``):
  ``(1 − f)·median(SGD step) + f·median(SAM step)`` at its share f of SAM steps, which is the
  mean of a simulation without jitter (every draw at its median).

The spread only widens the range: ``low`` and ``high`` are the 5th and 95th percentiles of the
jittered iteration times. Never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TypicalStep", "typical_step"]


@dataclass(frozen=True)
class TypicalStep:
    """``seconds``: the centre (module docstring); ``low``/``high``: 90% of steps lie between."""

    seconds: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "p05": self.low, "p95": self.high}


def typical_step(plan, profile, **kwargs) -> TypicalStep:
    """The typical step of ``plan`` on ``profile``; ``kwargs`` go to :func:`hetsam.simulator.simulate`
    (``jitter`` must not be among them: the range needs it on, the centre decides itself)."""
    from .api import simulate

    if "jitter" in kwargs:
        raise TypeError("typical_step decides the jitter itself")
    jittered = simulate(plan, profile, **kwargs)
    q = jittered.iteration_seconds
    if not jittered.plan.spec.mixed_steps:
        return TypicalStep(q["p50"], q["p05"], q["p95"])
    # two kinds of steps: a median of the mixture would be one kind's; take the expectation at the medians
    centre = simulate(plan, profile, jitter=False, **kwargs).iteration_seconds["mean"]
    return TypicalStep(centre, min(q["p05"], centre), max(q["p95"], centre))
