"""Strategies side by side on one machine, at the planner's own settings (torch-free).

For ``hetsam simulate --plot`` and ``--compare``: the planner runs once on the same profile,
batch size and budget, and every strategy contributes its best plan by the planner's objective
(``PlanReport.best_of``), so each row runs at the settings ``hetsam plan`` would use (MSAM's
radius, RST's p, AsyncSAM's b' ...). The given plan is a row of its own unless it is one of
those. Every row is simulated with the same seed and settings, and carries its share of SAM's
gain with its interval, the planner's objective value, and whether it fits the budget.

:func:`compare_strategies` returns SGD first and SAM second (the baselines the columns compare
with), then the others; :func:`ranked` orders the rows as the planner does, the way they are
shown: the planner's choice first, then the rest within the budget by objective value, then those
beyond it, each by objective value (ties: the faster).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hetsam import defaults, strategies
from hetsam.planning.objective import ratio_uncertainty, within_budget
from hetsam.planning.plan import Plan
from hetsam.strategies import SAM, SGD

__all__ = ["Comparison", "compare_strategies", "planner_report", "ranked"]


@dataclass(frozen=True)
class Comparison:
    """One row: a plan, its simulated time, its share of SAM's gain and the planner's verdict."""

    label: str
    plan: Plan
    iteration_seconds: float
    overhead_vs_sgd: float  # mean / SGD mean − 1
    speedup_vs_sam: float  # SAM mean / mean
    is_given: bool
    share: Any = None  # hetsam.evidence.Share
    objective_value: float = 0.0  # what the planner maximises (hetsam.planning.objective)
    fits_budget: bool = False
    is_choice: bool = False  # the planner's chosen plan
    rank: int = 0  # 1, 2, ... in the order of :func:`ranked`; 0 before ranking

    def share_cell(self) -> str:
        """``77% [54,101]``, ``100%`` (SAM), ``0.25*`` (a proxy), ``-`` (none)."""
        return self.share.cell() if self.share is not None else "-"

    def to_dict(self) -> dict:
        return {"label": self.label, "plan": self.plan.to_dict(), "iteration_seconds": self.iteration_seconds,
                "overhead_vs_sgd": self.overhead_vs_sgd, "speedup_vs_sam": self.speedup_vs_sam,
                "is_given": self.is_given, "is_choice": self.is_choice, "rank": self.rank,
                "fits_budget": self.fits_budget, "objective_value": self.objective_value,
                "share_cell": self.share_cell(), "share": self.share.to_dict() if self.share is not None else None}


def planner_report(cm, batch_size: int | None = None, *, budget: float = defaults.BUDGET,
                   objective: str = defaults.OBJECTIVE, base_optimizer: str | None = defaults.BASE_OPTIMIZER,
                   shares=None, also: tuple = (), **scale):
    """``hetsam.planning.search.plan`` on ``cm`` over every planned strategy (and those named in
    ``also``), as ``hetsam plan`` runs it; ``scale``: ``nodes``, ``devices_per_node`` and the
    network options."""
    from hetsam.planning.search import plan

    names = tuple(s.name for s in strategies.specs() if s.planned)
    names += tuple(n for n in dict.fromkeys(also) if n not in names)
    return plan(cm, batch_size=batch_size, budget=budget, objective=objective, base_optimizer=base_optimizer,
                shares=shares, strategies=names, **scale)


def compare_strategies(plan: Plan, profile, *, iterations: int = 2000, seed: int = 0, jitter: bool = True,
                       loader_seconds: float = 0.0, cluster=None, report=None, planner: dict | None = None
                       ) -> list[Comparison]:
    """Simulate the best plan of every strategy by the planner's objective and ``plan`` beside
    them (module docstring); SGD first, SAM second.

    ``report``: the planner's :class:`~hetsam.planning.report.PlanReport` on the same profile and
    batch size (default: :func:`planner_report` with ``planner``, its keyword arguments; its
    ``shares`` also place the given plan when the planner did not consider it). Rows are
    simulated on ``cluster`` (a :class:`hetsam.cost.cluster.Cluster`) when given.
    """
    from hetsam.simulator import simulate, typical_step
    from hetsam.simulator.api import cost_model

    cm = cost_model(profile)
    b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
    if report is None:
        report = planner_report(cm, b, also=(plan.strategy,), **(planner or {}))
    rows = _rows(plan, cm, b, report)
    times = []
    for p, _ in rows:
        kw = dict(iterations=iterations, seed=seed, timeline_iterations=0, loader_seconds=loader_seconds,
                  cluster=cluster)  # the typical step, as the planner ranks (hetsam.simulator.typical)
        times.append(typical_step(p, cm, **kw).seconds if jitter else
                     simulate(p, cm, jitter=False, **kw).iteration_seconds["mean"])
    sgd, sam = times[0], times[1]
    given, chosen = _key(plan, cm, b), _key(report.plan, cm, b)
    out = []
    for (p, verdict), s in zip(rows, times):
        share, value, fits = verdict if verdict is not None else _judge(p, b, report, s / sgd, cm, rows[0][0],
                                                                       (planner or {}).get("shares"))
        out.append(Comparison(p.spec.label(p, b), p, s, s / sgd - 1.0, sam / s, _key(p, cm, b) == given,
                              share, value, fits, _key(p, cm, b) == chosen))
    return out


def ranked(rows: list[Comparison]) -> list[Comparison]:
    """``rows`` in the planner's order (module docstring), numbered by ``rank``."""
    order = sorted(rows, key=lambda c: (not c.is_choice, not c.fits_budget, -c.objective_value, c.iteration_seconds))
    return [replace(c, rank=i + 1) for i, c in enumerate(order)]


def _rows(plan: Plan, cm, b: int, report) -> list[tuple[Plan, tuple | None]]:
    """(plan, (share, objective value, fits) or None) for SGD, SAM, every other strategy's best
    and the given plan; None where the planner did not consider the plan (judged after simulating)."""
    names = [SGD, SAM] + [s.name for s in strategies.specs() if s.name not in (SGD, SAM)]
    rows, keys = [], set()
    for name in names:
        best = report.best_of(name)
        if best is not None:
            rows.append((best.plan, (best.share, best.objective_value, best.fits_budget)))
            keys.add(_key(best.plan, cm, b))
    if len(rows) < 2 or rows[0][0].strategy != SGD or rows[1][0].strategy != SAM:
        from hetsam.errors import HetsamInputError

        raise HetsamInputError("the planner proposed no SGD or SAM plan to compare with on this profile")
    given = _key(plan, cm, b)
    if given not in keys:
        same = next((c for c in report.candidates if _key(c.plan, cm, b) == given), None)
        verdict = None if same is None else (same.share, same.objective_value, same.fits_budget)
        at = max(i for i, (p, _) in enumerate(rows) if p.strategy in (plan.strategy, SGD, SAM)) + 1
        rows.insert(at, (plan, verdict))
    return rows


def _judge(p: Plan, b: int, report, ratio_to_sgd: float, cm, sgd: Plan, shares) -> tuple:
    """The share, objective value and budget verdict of a plan the planner did not consider: its
    share from the evidence the planner read (the shipped records and ``shares``), and its
    simulated time against the budget, as a multiple of the SGD row's (``sgd``), with the same room
    for an unstable pool/socket ratio as the planner's (``hetsam.planning.objective``)."""
    from hetsam.evidence import share_model

    share = share_model(shares).share(p, b, report.base_optimizer)
    fits = within_budget(ratio_to_sgd, report.budget, ratio_uncertainty(cm, p, sgd.descent_device))
    return share, share.objective(report.objective_name), fits


def _key(p: Plan, cm, b: int) -> tuple:
    spec = p.spec
    ascent = cm.resolve(p.effective_ascent_device) if spec.uses_ascent else None
    # the strategy's own numbers as its spec reads them at b (b' = None and b' = b are one plan)
    return (p.strategy, cm.resolve(p.descent_device), ascent, spec.ascent_batch_size(p, b), spec.staleness(p),
            spec.sam_fraction(p), tuple(sorted(spec.evidence_settings(p, b).items())))
