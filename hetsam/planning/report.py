"""What the planner decided and why: candidates, the objective, the chosen plan (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hetsam.planning.plan import Plan
from hetsam.planning.prediction import Prediction

__all__ = ["Candidate", "PlanReport", "OBJECTIVE"]

OBJECTIVE = ("highest sharpness fidelity (ascent fraction b'/b or p, then smaller staleness, then higher p) "
             "among plans within {budget:g} x the SGD step on the fastest device; ties go to the faster plan")


@dataclass
class Candidate:
    """One plan the planner considered: its closed-form and predicted seconds per step."""

    plan: Plan
    closed_form_seconds: float
    predicted_seconds: float
    fidelity: tuple
    fits_budget: bool = False
    note: str = ""
    exact: bool = False  # the closed form is exact from the simulated baselines (not simulated)
    simulated: bool = False
    prediction: Prediction | None = None

    @property
    def ascent_fraction(self) -> float:
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

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.plan is self.plan)

    def alternatives(self) -> list[dict]:
        """The other candidates as ``{"plan": ..., "prediction": ..., "fits_budget": ...}``."""
        return [{"plan": c.plan.to_dict(), "prediction": c.prediction.to_dict(), "fits_budget": c.fits_budget}
                for c in self.candidates if c.plan is not self.plan]

    def to_dict(self) -> dict:
        d = {"plan": self.plan.to_dict(), "prediction": self.prediction.to_dict(), "budget_met": self.budget_met,
             "objective": self.objective, "budget": self.budget, "budget_seconds": self.budget_seconds,
             "batch_size": self.batch_size, "rst_probability_for_budget": self.rst_probability_for_budget,
             "alternatives": self.alternatives(), "notes": list(self.notes)}
        if self.cluster is not None:
            d["cluster"] = self.cluster
        return d
