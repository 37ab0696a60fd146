"""The facts of one training run that a rule may need, in one object: :class:`RunContext`.

``AutoSAM`` owns one (``opt.run``) and hands it to every rule it builds (``RuleContext.run``), so a
strategy that needs a fact of the run reads it here, and nothing between (AutoSAM, its
checkpoints, the framework integrations) carries one strategy's need by name. A framework
integration fills in what it knows with :meth:`RunContext.learn` (the user's numbers win); a
checkpoint saves and restores the whole object. Torch-free.
"""

from __future__ import annotations

from typing import Any

from hetsam import _checks

__all__ = ["RunContext", "run_fact"]

_COUNT = 1 << 48  # the largest number of steps anything accepts (as hetsam.optim.state_checks.COUNT_LIMIT)
_LOW = {"total_steps": 1, "warmup_steps": 0}


class RunContext:
    """What a run is, as known now (each fact None until someone knows it).

    Attributes:
        total_steps: the run's planned number of steps T (late-phase SAM starts SAM at ⌊start·T⌋).
        warmup_steps: the learning rate's warm-up steps (MSAM does not climb in them).
        steps_before: steps taken under earlier plans (a re-plan builds a new rule at step 0).
        world_size: processes of a distributed job (1 without one).
    """

    FACTS = ("total_steps", "warmup_steps")  # the facts a checkpoint carries (steps_before: AutoSAM's own entry)

    def __init__(self, total_steps: int | None = None, warmup_steps: int | None = None):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.steps_before, self.world_size = 0, 1

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LOW:
            value = _checks.optional(_checks.integer, value, name, low=_LOW[name], high=_COUNT)
        elif name in ("steps_before", "world_size"):
            value = _checks.integer(value, name, low=0 if name == "steps_before" else 1, high=_COUNT)
        else:
            raise AttributeError(f"RunContext has no fact {name!r}; its facts: total_steps, warmup_steps, "
                                 "steps_before, world_size")
        object.__setattr__(self, name, value)

    def warmup_left(self) -> int | None:
        """How many of the current rule's first steps are still warm-up (None: unknown)."""
        return None if self.warmup_steps is None else self.warmup_steps - self.steps_before

    def learn(self, **facts: Any) -> None:
        """Set each fact that is still None (a framework's numbers never replace the user's)."""
        for name, value in facts.items():
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FACTS}

    def __repr__(self) -> str:
        facts = ", ".join(f"{k}={getattr(self, k)!r}" for k in (*self.FACTS, "steps_before", "world_size"))
        return f"RunContext({facts})"


def run_fact(name: str, doc: str) -> property:
    """A property of an object with a ``run`` (:class:`RunContext`) that reads and sets one fact."""
    return property(lambda self: getattr(self.run, name), lambda self, value: setattr(self.run, name, value), doc=doc)
