"""What the planner decided and why: candidates, the objective, the chosen plan (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hetsam.planning import objective as _objective
from hetsam.planning.plan import Plan
from hetsam.planning.prediction import Prediction

__all__ = ["Candidate", "PlanReport"]


@dataclass
class Candidate:
    """One plan the planner considered: its closed-form and predicted seconds per step."""

    plan: Plan
    closed_form_seconds: float
    predicted_seconds: float
    fidelity: tuple  # (objective value, *the strategy's own fidelity): larger is better
    fits_budget: bool = False
    note: str = ""
    exact: bool = False  # the closed form is exact from the simulated baselines (not simulated)
    simulated: bool = False
    prediction: Prediction | None = None
    share: Any = None  # hetsam.evidence.Share: the point estimate, its interval and evidence
    ratio_uncertainty: tuple | None = None  # (median, worst) of t(pool)/t(socket) when it runs on pools against a socket

    @property
    def objective_value(self) -> float:
        """What the planner maximises (``hetsam.planning.objective``)."""
        return self.fidelity[0]

    @property
    def expected_share(self) -> float:
        """The point estimate of the share of SAM's gain (what the floor ``min_ascent_fraction`` applies to)."""
        return self.share.value if self.share is not None else self.fidelity[0]


@dataclass
class PlanReport:
    """The planner's answer: ``plan`` and its ``prediction``, every candidate, the baselines."""

    plan: Plan
    prediction: Prediction
    candidates: list[Candidate]
    batch_size: int
    budget: float
    budget_seconds: float
    sgd_seconds: float
    sam_seconds: float
    budget_met: bool
    rst_probability_for_budget: float
    objective: str
    notes: list[str] = field(default_factory=list)
    cluster: dict | None = None  # the data-parallel layout when n > 1 ranks (Cluster.to_dict + describe)
    cost_model: Any = field(default=None, repr=False)  # the CostModel it planned on
    objective_name: str = "robust"  # hetsam.planning.objective.OBJECTIVES
    base_optimizer: str | None = None  # the base optimizer family the shares were read for

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.plan is self.plan)

    def best_of(self, strategy: str) -> Candidate | None:
        """The best candidate of one strategy by the planner's objective: the most faithful within
        the budget (ties: the faster), else the fastest (None when it has no candidate)."""
        mine = [c for c in self.candidates if c.plan.strategy == strategy]
        within = [c for c in mine if c.fits_budget]
        if within:
            return max(within, key=lambda c: (c.fidelity, -c.predicted_seconds))
        return min(mine, key=lambda c: (c.predicted_seconds, [-x for x in c.fidelity]), default=None)

    def shown(self, everything: bool = False) -> tuple[list[Candidate], int]:
        """The candidates in the order a person reads them, and how many were left out.

        The chosen plan first, then the runner-up (the best plan of another strategy); then the
        other plans within the budget by the objective (ties: the faster); then, for each strategy
        not shown yet, its best plan (``best_of``). A plan another one beats on both the objective
        and time (dominated) is left out unless ``everything``, as are a strategy's other plans
        beyond the budget and SGD off the fastest device; a plan the notes or the ``why`` line
        name is always shown.
        """
        if everything:
            rest = sorted((c for c in self.candidates if c.plan is not self.plan),
                          key=lambda c: (not c.fits_budget, [-x for x in c.fidelity], c.predicted_seconds))
            return [self.chosen, *rest], 0
        rows: list[Candidate] = [self.chosen]
        runner = self.runner_up() if self.budget_met else None
        if runner is not None:
            rows.append(runner)
        fitting = [c for c in self.candidates if c.fits_budget and c.plan.spec.exact_share != 0.0
                   and not _dominated(c, self.candidates)]
        fitting.sort(key=lambda c: ([-x for x in c.fidelity], c.predicted_seconds))
        rows += [c for c in fitting if all(c is not r for r in rows)]
        for name in dict.fromkeys(c.plan.strategy for c in self.candidates):
            if all(r.plan.strategy != name for r in rows):
                rows.append(self.best_of(name))
        named = " ".join([*self.notes, self.why()])
        rows += [c for c in self.candidates if c.plan.describe() in named and all(c is not r for r in rows)]
        return rows, len(self.candidates) - len(rows)

    def why(self) -> str:
        """One sentence: why the chosen plan won, by how much, and the runner-up."""
        return _objective.why(self)

    def runner_up(self) -> Candidate | None:
        """The best plan of another strategy within the budget, by the objective."""
        return _objective.runner_up(self.chosen, self.candidates)

    def alternatives(self) -> list[dict]:
        """The other candidates as ``{"plan": ..., "prediction": ..., "fits_budget": ...}``."""
        return [{"plan": c.plan.to_dict(), "prediction": c.prediction.to_dict(), "fits_budget": c.fits_budget}
                for c in self.candidates if c.plan is not self.plan]

    def to_dict(self) -> dict:
        d = {"plan": self.plan.to_dict(), "prediction": self.prediction.to_dict(), "budget_met": self.budget_met,
             "objective": self.objective, "budget": self.budget, "budget_seconds": self.budget_seconds,
             "batch_size": self.batch_size, "rst_probability_for_budget": self.rst_probability_for_budget,
             "alternatives": self.alternatives(), "notes": list(self.notes), "why": self.why(),
             "objective_name": self.objective_name, "base_optimizer": self.base_optimizer}
        r = self.runner_up() if self.budget_met else None
        if r is not None:
            d["runner_up"] = {"plan": r.plan.to_dict(), "prediction": r.prediction.to_dict()}
        if self.cost_model is not None:  # the fixed per-step terms on the descent device, in seconds
            d["step_costs"] = self.cost_model.step_terms(self.plan.descent_device)
        if self.cluster is not None:
            d["cluster"] = self.cluster
        return d


def _dominated(c: Candidate, candidates: list[Candidate]) -> bool:
    """Whether another candidate is at least as good by the objective and as fast, and better in
    one; of plans equal in both, the first listed stands for the others."""
    for i, o in enumerate(candidates):
        if o is c or o.fidelity < c.fidelity or o.predicted_seconds > c.predicted_seconds:
            continue
        if o.fidelity > c.fidelity or o.predicted_seconds < c.predicted_seconds:
            return True
        if o.plan.strategy == c.plan.strategy and i < candidates.index(c):
            return True
    return False
