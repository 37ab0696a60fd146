"""What the planner decided and why: candidates, the objective, the chosen plan (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hetsam.planning.plan import Plan
from hetsam.planning.prediction import Prediction

__all__ = ["Candidate", "PlanReport", "OBJECTIVE"]

OBJECTIVE = ("highest expected share of SAM's gain (a measured table; see hetsam.planning.shares) among plans "
             "within {budget:g} x the SGD step on the fastest device; ties go to the more faithful, then the faster plan")


@dataclass
class Candidate:
    """One plan the planner considered: its closed-form and predicted seconds per step."""

    plan: Plan
    closed_form_seconds: float
    predicted_seconds: float
    fidelity: tuple  # (expected share of SAM's gain, *the strategy's own fidelity): larger is better
    fits_budget: bool = False
    note: str = ""
    exact: bool = False  # the closed form is exact from the simulated baselines (not simulated)
    simulated: bool = False
    prediction: Prediction | None = None
    share: Any = None  # hetsam.planning.shares.Share: the value, its standard error and source

    @property
    def expected_share(self) -> float:
        """The expected share of SAM's gain (what the floor ``min_ascent_fraction`` applies to)."""
        return self.fidelity[0]


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

        The chosen plan first; then the other plans within the budget, most faithful first (ties:
        the faster); then, for each strategy with no plan within the budget, its fastest plan.
        A plan another one beats on both fidelity and time (dominated) is left out unless
        ``everything``, as are a strategy's slower plans beyond the budget.
        """
        if everything:
            rest = sorted((c for c in self.candidates if c.plan is not self.plan),
                          key=lambda c: (not c.fits_budget, [-x for x in c.fidelity], c.predicted_seconds))
            return [self.chosen, *rest], 0
        fitting = [c for c in self.candidates if c.fits_budget and c.plan is not self.plan and not _dominated(c, self.candidates)]
        fitting.sort(key=lambda c: ([-x for x in c.fidelity], c.predicted_seconds))
        seen = {c.plan.strategy for c in [self.chosen, *fitting]}
        over: dict[str, Candidate] = {}
        for c in self.candidates:
            s = c.plan.strategy
            if not c.fits_budget and s not in seen and (s not in over or c.predicted_seconds < over[s].predicted_seconds):
                over[s] = c
        rows = [self.chosen, *fitting, *sorted(over.values(), key=lambda c: c.predicted_seconds)]
        return rows, len(self.candidates) - len(rows)

    def why(self) -> str:
        """One sentence: why the chosen plan won, under the objective."""
        c = self.chosen
        if not self.budget_met:
            return ("no plan at the floor (its expected share of SAM's gain) fits the budget, so the fastest plan at the "
                    "floor was chosen; "
                    f"RST with p = {self.rst_probability_for_budget:.3f} meets the budget")
        others = [x for x in self.candidates if x.fits_budget and x.plan is not self.plan]
        if not others:
            return "it is the only plan within the budget"
        runner = max(others, key=lambda x: (x.fidelity, -x.predicted_seconds))
        if runner.fidelity == c.fidelity:
            return (f"it keeps the most of SAM's gain within the budget, and is faster than {runner.plan.describe()}, "
                    f"which keeps as much")
        return (f"it keeps the most of SAM's gain within the budget (expected share {c.expected_share:.0%}; the next "
                f"best, {runner.plan.describe()}, {runner.expected_share:.0%})")

    def alternatives(self) -> list[dict]:
        """The other candidates as ``{"plan": ..., "prediction": ..., "fits_budget": ...}``."""
        return [{"plan": c.plan.to_dict(), "prediction": c.prediction.to_dict(), "fits_budget": c.fits_budget}
                for c in self.candidates if c.plan is not self.plan]

    def to_dict(self) -> dict:
        d = {"plan": self.plan.to_dict(), "prediction": self.prediction.to_dict(), "budget_met": self.budget_met,
             "objective": self.objective, "budget": self.budget, "budget_seconds": self.budget_seconds,
             "batch_size": self.batch_size, "rst_probability_for_budget": self.rst_probability_for_budget,
             "alternatives": self.alternatives(), "notes": list(self.notes), "why": self.why()}
        if self.cost_model is not None:  # the fixed per-step terms on the descent device, in seconds
            d["step_costs"] = self.cost_model.step_terms(self.plan.descent_device)
        if self.cluster is not None:
            d["cluster"] = self.cluster
        return d


def _dominated(c: Candidate, candidates: list[Candidate]) -> bool:
    """Whether another candidate is at least as faithful and as fast, and better in one."""
    return any(o is not c and o.fidelity >= c.fidelity and o.predicted_seconds <= c.predicted_seconds
               and (o.fidelity > c.fidelity or o.predicted_seconds < c.predicted_seconds) for o in candidates)
