"""Leave-one-setting-out cross-validation of the intervals for a new task (torch-free).

For every numeric record of a strategy (a setting: one task at one point of the strategy's
axis), the model is refitted on all the other records and asked for the share at that record's
point, as for a new task. The held-out share is itself measured with its standard error se, so
the interval it should fall in is the predictive one widened by that noise:
mean ± t · √(sd² + se²), with sd the new-task predictive sd (half-width / t). ``covered`` counts
those; ``covered_task`` counts the interval hetsam shows (without the record's own noise).
``tests/test_evidence.py`` runs it on the shipped store; README, "Accuracy per second", reports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hetsam import strategies as registry
from hetsam.evidence.model import ShareModel, as_pooled, optimizer_family
from hetsam.evidence.pooling import t_quantile

__all__ = ["Fold", "CrossValidation", "leave_one_out"]


@dataclass(frozen=True)
class Fold:
    record_id: str
    strategy: str
    share: float
    se: float
    mean: float
    low: float
    high: float
    covered: bool  # by the interval widened with the record's own se
    covered_task: bool  # by the interval hetsam shows


@dataclass(frozen=True)
class CrossValidation:
    level: float
    folds: tuple

    @property
    def coverage(self) -> float:
        return sum(f.covered for f in self.folds) / len(self.folds) if self.folds else float("nan")

    @property
    def coverage_task(self) -> float:
        return sum(f.covered_task for f in self.folds) / len(self.folds) if self.folds else float("nan")

    def by_strategy(self) -> dict[str, dict]:
        """Per strategy: folds, coverage, and the median width of the shown interval."""
        out = {}
        for name in dict.fromkeys(f.strategy for f in self.folds):
            mine = [f for f in self.folds if f.strategy == name]
            widths = sorted(f.high - f.low for f in mine)
            out[name] = {"folds": len(mine), "coverage": sum(f.covered for f in mine) / len(mine),
                         "median_width": widths[len(widths) // 2]}
        return out

    def text(self) -> str:
        lines = [f"leave-one-setting-out: {len(self.folds)} settings; {self.level:.0%} intervals cover "
                 f"{self.coverage:.0%} of the held-out shares (with their own noise), {self.coverage_task:.0%} without"]
        for name, row in self.by_strategy().items():
            lines.append(f"  {name:10s} {row['folds']:3d} settings  coverage {row['coverage']:4.0%}  "
                         f"median interval width {row['median_width']:.0%}")
        return "\n".join(lines)


def leave_one_out(records, level: float = 0.8) -> CrossValidation:
    """Refit without each numeric, placed, non-relative record and check its coverage."""
    records = [as_pooled(r) for r in records]
    folds = []
    for r in records:
        if not r.has_number or r.relative or r.strategy is None:
            continue
        try:
            spec = registry.get(r.strategy)
        except Exception:  # a strategy this process does not know: nothing to predict
            continue
        point = spec.evidence_point(r.settings, optimizer_family(r.base_optimizer))
        if point is None or spec.evidence_axis is None and spec.exact_share is not None:
            continue
        model = ShareModel([x for x in records if x is not r], level=level)
        share = model.estimate(r.strategy, *point)
        if share.is_proxy:
            continue  # no other evidence on its curve: nothing to predict it from
        df = max(1, model.spread(r.strategy)[0].df)
        t = t_quantile((1 + level) / 2, df)
        sd = (share.high - share.low) / 2 / t
        half = t * math.sqrt(sd * sd + r.se * r.se)
        folds.append(Fold(r.id, r.strategy, r.share, r.se, share.value, share.low, share.high,
                          abs(r.share - share.value) <= half, share.low <= r.share <= share.high))
    return CrossValidation(level, tuple(folds))
