"""The torch half of a strategy: its update rule, run by ``AutoSAM`` one step at a time.

A rule is built by its spec's ``build_rule(ctx)`` from a :class:`RuleContext`; its ``step(batch,
upcoming, accumulate)`` does one whole update of the training model through the
:class:`~hetsam.execution.runtime.Runtime`, and hands the gradients that may run elsewhere to an
executor as jobs. Every rule passes the contract test cases of :class:`hetsam.testing.StrategyContract`.

Notation (README, "The update rules"): θ_t the parameters before step t, B_t its batch, g(θ; B)
the mean-loss gradient, e the SAM perturbation ρ T² ĝ / ‖T ĝ‖, ``base`` the base optimizer.

BatchNorm: in every rule exactly one pass per step updates the running statistics, the pass
whose gradient the update applies. Every other pass uses batch statistics and leaves the running
statistics alone.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from hetsam.execution.runtime import Runtime
from hetsam.strategies.run import RunContext

__all__ = ["RuleContext", "StrategyRule"]


@dataclass
class RuleContext:
    """What a rule is built from (filled by ``hetsam.autosam``).

    ``make_executor()`` builds the executor bound to the plan's ascent device (wrapped for the
    ranks under DDP), once, when a rule asks for it; ``dist`` is the
    :class:`~hetsam.execution.distributed.RankContext` of a DDP model (else None); ``run`` the
    facts of the run (:class:`~hetsam.strategies.run.RunContext`: planned steps, warm-up, steps of
    earlier plans, world size), kept current by AutoSAM; ``overrides`` run-time values of the plan's
    options that a plan cannot hold (a schedule of RST's p; :meth:`option` reads them first);
    ``seed`` AutoSAM's seed.
    """

    plan: Any
    runtime: Runtime
    make_executor: Callable[[], Any] = None
    dist: Any = None
    run: RunContext = field(default_factory=RunContext)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    _executor: Any = field(default=None, repr=False)

    def option(self, name: str) -> Any:
        """The plan's option ``name`` as this run uses it: AutoSAM's run-time value, else the plan's."""
        return self.overrides[name] if name in self.overrides else self.plan.option(name)

    def executor(self):
        """The executor for the plan's ascent jobs (built on first use)."""
        if self._executor is None:
            self._executor = self.make_executor()
        return self._executor

    def agreed_seed(self) -> int | None:
        """The seed, the same on every rank (rank 0's) under DDP."""
        return self.dist.agree_seed(self.seed) if self.dist is not None else self.seed


class StrategyRule(abc.ABC):
    """One strategy's step rule (the contract every rule passes): a subclass must define ``step``;
    the other methods are hooks with defaults (a rule that keeps state between steps overrides
    ``state_dict``/``load_state_dict``, one with jobs in flight ``pending``).

    Attributes:
        lookahead: how many upcoming batches ``step`` wants in ``upcoming`` (0: none).
        executor: the executor it sends jobs to, or None.
        t: steps taken.
    """

    lookahead = 0

    def __init__(self, ctx: RuleContext):
        self.ctx = ctx
        self.rt = ctx.runtime
        self.executor = None
        self.t = 0

    @abc.abstractmethod
    def step(self, batch: Any, upcoming: Sequence[Any] | None, accumulate: int) -> Tensor:
        """One update; returns the step's loss as a detached 0-dim tensor."""

    def base_step(self, batch: Any, accumulate: int) -> Tensor:
        """θ_{t+1} = base(θ_t, g(θ_t; B_t)); returns L(θ_t; B_t)."""
        loss = self.rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False, update=True)
        self.rt.apply()
        return loss

    def pending(self) -> list:
        """Futures of jobs submitted but not yet consumed (waited for before a rule is retired)."""
        return []

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])

    def held_tensors(self) -> list[Tensor]:
        """Parameter-sized tensors the rule holds between steps (memory accounting)."""
        return []

    def stats(self) -> dict:
        """What ran (counters, the policy that ran); ``AutoSAM.stats()`` reports it."""
        return {}
