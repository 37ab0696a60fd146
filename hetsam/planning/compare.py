"""Strategies side by side on one machine, for ``hetsam simulate --plot`` (torch-free).

Beside a given plan, every registered strategy contributes the plans it would run on the same
descent device (its spec's ``what_if_plans``), with the ascent on the given plan's ascent device
and on the fastest other device one rank may use; each is simulated with the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hetsam import strategies
from hetsam.cost.cluster import Cluster
from hetsam.planning.plan import Plan
from hetsam.strategies import SAM, SGD

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


def comparison_plans(plan: Plan, cm, cluster=None) -> list[tuple[str, Plan]]:
    """(label, plan) pairs to compare, SGD first and SAM second, the given plan among them, without
    duplicates. With a ``cluster`` of several ranks per node, only devices a rank owns are partners."""
    b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
    d = cm.resolve(plan.descent_device)
    partners = []
    if plan.spec.uses_executor:
        partners.append(cm.resolve(plan.effective_ascent_device))
    others = (cluster or Cluster(cm)).ascent_devices(d)
    if others:
        partners.append(min(others, key=lambda x: cm.grad_seconds(x, b)))
    partners = [a for a in dict.fromkeys(partners) if not cm.shares_cores(d, a)]  # the time-sliced one: from d
    specs = strategies.specs()
    ordered = [strategies.get(SGD), strategies.get(SAM)] + [s for s in specs if s.name not in (SGD, SAM)]
    out = []
    for i, spec in enumerate(ordered):
        out += spec.what_if_plans(plan, d, partners, b, Plan)
        if i == 1:
            out.append(plan)  # the given plan right after the two baselines
    seen, pairs = set(), []
    for p in out:
        key = _key(p, cm, b)
        if key not in seen:
            seen.add(key)
            pairs.append((p.spec.label(p, b), p))
    return pairs


def _key(p: Plan, cm, b: int) -> tuple:
    spec = p.spec
    ascent = cm.resolve(p.effective_ascent_device) if spec.uses_ascent else None
    fields = tuple(getattr(p, f) for f in spec.fields if f not in ("ascent_device", "ascent_batch_size"))
    return (p.strategy, cm.resolve(p.descent_device), ascent, spec.ascent_batch_size(p, b), spec.staleness(p),
            spec.sam_fraction(p), fields, tuple(sorted(p.options.items())))


def compare_strategies(plan: Plan, profile, *, iterations: int = 2000, seed: int = 0, jitter: bool = True,
                       loader_seconds: float = 0.0, cluster=None) -> list[Comparison]:
    """Simulate every plan of :func:`comparison_plans`; SGD first, SAM second (on ``cluster``,
    a :class:`hetsam.cost.cluster.Cluster`, when given)."""
    from hetsam.simulator import simulate
    from hetsam.simulator.api import cost_model

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
