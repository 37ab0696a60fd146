"""Simulate a plan next to the baselines and the other strategies its devices allow.

Used by ``hetsam simulate --plot`` for the bar chart. The set is small and fixed, not a
search (that is the planner's job): SGD, SAM and RST p = 0.5 on the plan's descent device,
the plan itself, AsyncSAM (τ = 1, b' = b/4 unless the plan sets b') and SAMPa on the plan's
device pair and on the fastest device that does not share cores with the descent, and
AsyncSAM time-sliced on the descent device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hetsam.cost.network import Cluster
from hetsam.planning.plan import Plan

from .api import cost_model, simulate

__all__ = ["Comparison", "compare_strategies", "comparison_plans"]


@dataclass(frozen=True)
class Comparison:
    label: str
    plan: Plan
    iteration_seconds: float
    overhead_vs_sgd: float  # mean / SGD mean − 1
    speedup_vs_sam: float  # SAM mean / mean
    is_given: bool

    def to_dict(self) -> dict:
        return {"label": self.label, "plan": self.plan.to_dict(), "iteration_seconds": self.iteration_seconds,
                "overhead_vs_sgd": self.overhead_vs_sgd, "speedup_vs_sam": self.speedup_vs_sam,
                "is_given": self.is_given}


def _label(p: Plan, b: int) -> str:
    if p.strategy == "sgd":
        return "SGD"
    if p.strategy == "sam":
        return "SAM"
    if p.strategy == "rst":
        return f"RST p={p.probability:g}"
    where = p.effective_ascent_device
    if p.strategy == "sampa":
        return f"SAMPa-{p.sampa_lambda:g}\n{p.descent_device} + {where}"
    shared = " (sliced)" if where == p.descent_device else ""
    return f"AsyncSAM b'={p.ascent_size(b)} τ={p.staleness}\n{p.descent_device} + {where}{shared}"


def comparison_plans(plan: Plan, cm, cluster=None) -> list[tuple[str, Plan]]:
    """(label, plan) pairs to compare, the given plan among them, without duplicates. With a
    ``cluster`` of several ranks per node, only devices a rank owns are ascent partners."""
    b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
    d = cm.resolve(plan.descent_device)
    quarter = plan.ascent_batch_size if plan.strategy == "async_sam" and plan.ascent_batch_size else max(1, b // 4)
    out = [Plan("sgd", d, batch_size=b), Plan("sam", d, batch_size=b), Plan("rst", d, batch_size=b, sam_probability=0.5)]
    out.append(replace(plan, predicted={}))
    partners = []
    if plan.strategy in ("async_sam", "sampa"):
        partners.append(cm.resolve(plan.effective_ascent_device))
    others = (cluster or Cluster(cm)).ascent_devices(d)
    if others:
        partners.append(min(others, key=lambda x: cm.grad_seconds(x, b)))
    for a in dict.fromkeys(partners):
        out.append(Plan("async_sam", d, a, batch_size=b, ascent_batch_size=quarter, staleness=1))
        if not cm.shares_cores(d, a):
            out.append(Plan("sampa", d, a, batch_size=b, sampa_lambda=plan.sampa_lambda))
    out.append(Plan("async_sam", d, d, batch_size=b, ascent_batch_size=quarter, staleness=1))
    seen, pairs = set(), []
    for p in out:
        key = _key(p, cm, b)
        if key not in seen:
            seen.add(key)
            pairs.append((_label(p, b), p))
    return pairs


def _key(p: Plan, cm, b: int) -> tuple:
    a = cm.resolve(p.effective_ascent_device)
    return (p.strategy, cm.resolve(p.descent_device), a if p.strategy != "sgd" else None, p.ascent_size(b) if p.strategy == "async_sam" else None,
            p.staleness if p.strategy == "async_sam" else None, p.probability if p.strategy == "rst" else None,
            p.sampa_lambda if p.strategy == "sampa" else None)


def compare_strategies(plan: Plan, profile, *, iterations: int = 2000, seed: int = 0, jitter: bool = True,
                       loader_seconds: float = 0.0, cluster=None) -> list[Comparison]:
    """Simulate every plan of :func:`comparison_plans`; SGD first, SAM second (on ``cluster``,
    a :class:`hetsam.cost.network.Cluster`, when given)."""
    cm = cost_model(profile)
    b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
    given = _key(plan, cm, b)
    rows = []
    for label, p in comparison_plans(plan, cm, cluster):
        r = simulate(p, cm, iterations=iterations, seed=seed, jitter=jitter, timeline_iterations=0,
                     loader_seconds=loader_seconds, cluster=cluster)
        rows.append((label, p, r.iteration_seconds["mean"]))
    sgd, sam = rows[0][2], rows[1][2]
    return [Comparison(label, p, s, s / sgd - 1.0, sam / s, _key(p, cm, b) == given) for label, p, s in rows]
