"""From evidence records to a plan's share of SAM's gain for a new task (torch-free).

For each strategy, every numeric record (not a relative's, not the user's) is placed by the
strategy's spec (``StrategySpec.evidence_point``) on a curve at a coordinate x: RST's p,
interval's 1/k, late-phase's 1 − start, AsyncSAM's b'/b (one curve per batch policy), SAMPa's λ,
MSAM's ρ (one curve per base optimizer family: a radius does not transfer between SGD and Adam).
Records at one x form a group. Then (``hetsam.evidence.pooling``):

1. **The spread between tasks**, τ², is estimated from the strategy's groups and its relatives'
   (LookSAM for ``interval``, MSAM at a radius tuned per task). With fewer than ``MIN_OWN_DF``
   degrees of freedom it is borrowed from every strategy's groups and the methods hetsam does not
   run (ESAM, MESA: same-table evidence of how cheap SAM variants vary between tasks), the larger
   of the two, and the share says so.
2. **Each group** gets its random-effects mean and the interval for a new task at ``level``
   (80%): mean ± t · √(τ² + Var(mean)).
3. **The user's own study** (records of kind ``user``) is the task being planned: at the points
   it measured, its estimate is shrunk towards the pool by empirical Bayes (τ² at least the spread
   of every method between tasks), so that with enough seeds the user's task dominates. A share
   beyond [−100%, 200%] (a ratio of two gains, unstable where SAM's gain is small) is pooled at
   the bound with its se at most 0.15: it says clearly that the method fails or wins.
4. **Between points**, the mean and the interval's half-width are interpolated linearly. On
   ``sam_fraction`` axes the ends are known (share 0 at x = 0, 1 at x = 1, no spread); on
   ``ascent_fraction`` only x = 0; the means are made monotone along both (weighted
   pool-adjacent-violators). On ``levels`` axes (MSAM's radii, SAMPa's λ) only tested points
   speak; another point reads the nearest tested one and says so.

A plan the evidence cannot place gets the old proxy (b'/b or p) with no interval, which the
robust objective counts as 0.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

from hetsam import strategies as registry
from hetsam.errors import HetsamInputError
from hetsam.evidence.pooling import (
    GroupEstimate,
    Spread,
    common_tau2,
    pool_group,
    t_quantile,
    target_task,
    weighted_isotonic,
)
from hetsam.evidence.records import Record
from hetsam.evidence.share import Share

__all__ = ["ShareModel", "LEVEL", "MIN_OWN_DF", "TAU2_FLOOR", "FAMILIES", "optimizer_family", "as_pooled"]

LEVEL = 0.8
MIN_OWN_DF = 3
# the least between-task variance the user's own task is shrunk with (a share's sd of 10 points):
# every strategy with enough evidence varies more than that between tasks, and with τ² = 0 a
# study would never move the estimate
TAU2_FLOOR = 0.01
FAMILIES = ("sgd", "adam")
# A share is a ratio of two gains, so where SAM's own gain is small its standard error explodes
# and a method that clearly fails (far below the base) would count for nothing. Beyond these
# bounds a share says "fails" or "wins" clearly: it is pooled at the bound with se at most 0.15.
SHARE_BOUNDS = (-1.0, 2.0)
CLIPPED_SE = 0.15
_ANCHORED = {"sam_fraction": ((0.0, 0.0), (1.0, 1.0)), "ascent_fraction": ((0.0, 0.0),)}
_FAMILIES = {"sgd": "sgd", "sgdm": "sgd", "sgd-momentum": "sgd", "sgd-nesterov": "sgd", "nesterov": "sgd",
             "adam": "adam", "adamw": "adam", "nadam": "adam", "radam": "adam", "adamax": "adam", "lamb": "adam"}


def optimizer_family(name) -> str | None:
    """``"sgd"`` (SGD with momentum), ``"adam"`` (Adam, AdamW, NAdam, ...) or None."""
    return _FAMILIES.get(name.strip().lower()) if isinstance(name, str) else None


class _Point:
    """One tested x of a curve after pooling: the mean, the interval's half-width, what is behind it."""

    __slots__ = ("x", "mean", "half", "counts", "mine")

    def __init__(self, x: float, mean: float, half: float, counts: Counter, mine: bool = False):
        self.x, self.mean, self.half, self.counts, self.mine = x, mean, half, counts, mine


class ShareModel:
    """Shares of SAM's gain for new tasks from evidence records (module docstring)."""

    def __init__(self, records, *, level: float = LEVEL):
        if not 0.5 <= level < 1.0:
            raise HetsamInputError(f"share interval level {level!r} must be in [0.5, 1)")
        self.records = tuple(records)
        self.level = level
        self._prior: dict[str, list] = defaultdict(list)  # strategy -> [(curve, x, record)]
        self._user: dict[str, list] = defaultdict(list)
        self._relatives: dict[str, dict] = defaultdict(lambda: defaultdict(list))
        self._context: dict = defaultdict(list)  # methods hetsam does not run (ESAM, MESA): the family's spread
        self._claims: Counter = Counter()
        self.unplaced: list[Record] = []  # records no spec could place (unknown strategy, bad settings)
        for r in self.records:
            self._add(r)
        self._spread_cache: dict[str, tuple[Spread, str | None]] = {}

    def _add(self, r: Record) -> None:
        r = as_pooled(r)
        if r.strategy is None:  # a method hetsam does not run: its spread between tasks only
            if r.has_number:
                self._context[(r.method, json.dumps(r.settings, sort_keys=True, default=str))].append((r.share, r.se))
            return
        try:
            spec = registry.get(r.strategy)
        except HetsamInputError:
            self.unplaced.append(r)
            return
        if not r.has_number:
            self._claims[r.strategy] += 1
            return
        if r.relative:
            key = (r.method, json.dumps(r.settings, sort_keys=True, default=str))
            self._relatives[r.strategy][key].append((r.share, r.se))
            return
        point = spec.evidence_point(r.settings, optimizer_family(r.base_optimizer))
        if point is None:
            self.unplaced.append(r)
            return
        (self._user if r.kind == "user" else self._prior)[r.strategy].append((point[0], point[1], r))

    # ---- the spread ------------------------------------------------------------------------------
    def _groups(self, strategy: str) -> dict:
        """Records by (curve, x); on a levels axis the records of a radius tuned per task form one
        group of their own (for the spread; ``_curve_groups`` adds them to every level)."""
        groups = defaultdict(list)
        for curve, x, r in self._prior.get(strategy, ()):
            groups[(curve, "tuned" if _tuned(r) else round(x, 9))].append(r)
        return groups

    def _curve_groups(self, strategy: str, curve: tuple) -> dict:
        """x -> records of one curve. A record tuned per task counts at every tested level: the
        share at a fixed radius is pooled with what a tuned radius kept on other tasks."""
        groups, tuned = defaultdict(list), []
        for c, x, r in self._prior.get(strategy, ()):
            if c != curve:
                continue
            if _tuned(r):
                tuned.append(r)
                if x >= 0:
                    groups.setdefault(round(x, 9), [])
            else:
                groups[round(x, 9)].append(r)
        return {x: recs + tuned for x, recs in groups.items()}

    def _group_lists(self, strategy: str) -> list:
        own = [[(r.share, r.se) for r in g] for g in self._groups(strategy).values()]
        return own + list(self._relatives.get(strategy, {}).values())

    def spread(self, strategy: str) -> tuple[Spread, str | None]:
        """τ² for ``strategy`` and, when it was borrowed, a note saying from what."""
        if strategy not in self._spread_cache:
            own = common_tau2(self._group_lists(strategy))
            note = None
            if own.df < MIN_OWN_DF:
                family = self.family_spread()
                if family.df > own.df:
                    note = (f"between-task spread borrowed from {family.settings} settings of every strategy "
                            f"({own.df} degree(s) of freedom of its own)")
                    own = Spread(max(own.tau2, family.tau2), family.df, family.settings)
            self._spread_cache[strategy] = (own, note)
        return self._spread_cache[strategy]

    def family_spread(self) -> Spread:
        """τ² over every strategy's groups and the methods hetsam does not run."""
        if "" not in self._spread_cache:
            names = sorted(set(self._prior) | set(self._relatives))
            groups = [g for name in names for g in self._group_lists(name)] + list(self._context.values())
            self._spread_cache[""] = (common_tau2(groups), None)
        return self._spread_cache[""][0]

    # ---- reading -------------------------------------------------------------------------------
    def share(self, plan, batch_size: int, base_optimizer: str | None = None) -> Share:
        """The share of SAM's gain of ``plan`` for a new task (the user's, when their study is in)."""
        spec = plan.spec
        if spec.exact_share is not None:
            return Share(spec.exact_share, spec.exact_share, spec.exact_share, self.level, "by definition")
        point = None
        if spec.evidence_axis is not None:
            point = spec.evidence_point(spec.evidence_settings(plan, batch_size), optimizer_family(base_optimizer))
        if point is None:
            why = "the base optimizer is of no kind the evidence names" if spec.own_radius and base_optimizer is None \
                else "the plan has no setting the evidence can place"
            return self._proxy(plan, batch_size, why)
        return self.estimate(spec.name, *point, proxy=lambda reason: self._proxy(plan, batch_size, reason))

    def tested(self, strategy: str, curve: tuple) -> list[float]:
        """The x the evidence tested on one curve (MSAM's radii for a base optimizer family)."""
        xs = {round(x, 9) for c, x, _ in [*self._prior.get(strategy, ()), *self._user.get(strategy, ())]
              if c == curve and x >= 0}
        return sorted(xs)

    def estimate(self, strategy: str, curve: tuple, x: float, proxy=None) -> Share:
        """The share at ``x`` on ``curve`` of ``strategy`` (module docstring, steps 1-4)."""
        spec = registry.get(strategy)
        points, notes, basis = self._points(strategy, curve, spec.evidence_axis)
        if not points:
            reason = f"no record of {strategy} on this curve"
            if proxy is not None:
                return proxy(reason)
            return Share(0.0, None, None, self.level, reason)
        value, half, counts, where = _read(points, x, spec.evidence_axis)
        counts = Counter(counts)
        counts["claims"] = self._claims.get(strategy, 0)
        mine = any(p.mine for p in points if p.counts.get("user"))
        if mine and counts.get("user"):
            basis = "your study, shrunk towards the pool of the other tasks (empirical Bayes)"
        return Share(value, value - half, value + half, self.level, basis, dict(counts), f"x={x:g}",
                     tuple(notes + ([where] if where else [])))

    def _points(self, strategy: str, curve: tuple, axis: str | None) -> tuple[list, list, str]:
        spread, note = self.spread(strategy)
        notes = [note] if note else []
        t = t_quantile((1 + self.level) / 2, max(1, spread.df))
        groups = self._curve_groups(strategy, curve)
        prior = [_Point(xk, (g := pool_group([(r.share, r.se) for r in recs], spread)).mean, t * g.predictive_sd(),
                        Counter(r.kind for r in recs)) for xk, recs in sorted(groups.items())]
        prior = _anchor(prior, axis)
        users = defaultdict(list)
        for c, x, r in self._user.get(strategy, ()):
            if c == curve:
                users[round(x, 9)].append(r)
        if not users:
            return prior, notes, "random-effects pool of the settings"
        merged = {p.x: p for p in prior}
        for xk, recs in users.items():
            own = [(r.share, r.se) for r in recs]
            if prior:
                mean, half, _, _ = _read(prior, xk, axis)
                sd = half / t
                # the user's task may differ from the pool as much as tasks differ for any method
                tau2 = max(spread.tau2, self.family_spread().tau2, TAU2_FLOOR)
                est = target_task(GroupEstimate(mean, max(0.0, sd * sd - tau2), tau2, spread.df, 1), own)
            else:  # nothing to shrink towards: the user's own inverse-variance mean
                w = [1.0 / max(se * se, 1e-6) for _, se in own]
                est = GroupEstimate(sum(wi * y for wi, (y, _) in zip(w, own)) / sum(w), 1.0 / sum(w), 0.0, 1, len(own))
            counts = Counter(r.kind for r in recs) + (merged[xk].counts if xk in merged else Counter())
            merged[xk] = _Point(xk, est.mean, t * math.sqrt(est.var_mean), counts, mine=True)
        points = _anchor([p for _, p in sorted(merged.items())], axis)
        return points, notes, "random-effects pool of the settings"

    def _proxy(self, plan, batch_size: int, reason: str) -> Share:
        value = plan.spec.fidelity(plan, batch_size)[0]
        return Share(value, None, None, self.level, f"b'/b or p stands in ({reason})")

    def summary(self) -> dict:
        """Records per strategy and source kind, for reports."""
        out: dict[str, Counter] = defaultdict(Counter)
        for r in self.records:
            key = "claims" if not r.has_number else ("relatives" if r.relative else r.kind)
            out[r.strategy or "context"][key] += 1
        return {k: dict(v) for k, v in out.items()}


def _anchor(points: list, axis: str | None) -> list:
    """Add the known ends of an anchored axis and make the means monotone (weighted PAV)."""
    if axis not in _ANCHORED:
        return points
    have = {p.x for p in points}
    pts = points + [_Point(x, y, 0.0, Counter()) for x, y in _ANCHORED[axis] if x not in have]
    pts.sort(key=lambda p: p.x)
    if not any(p.counts for p in pts):
        return []
    weights = [1e12 if p.half == 0 else 1.0 / (p.half * p.half) for p in pts]
    for p, m in zip(pts, weighted_isotonic([p.mean for p in pts], weights)):
        p.mean = m
    return pts


def _read(points: list, x: float, axis: str | None) -> tuple[float, float, Counter, str]:
    """(mean, half-width, counts, a note) at x: exact, interpolated, or the nearest tested level."""
    for p in points:
        if abs(p.x - x) <= 1e-9 * max(1.0, abs(x)):
            return p.mean, p.half, p.counts, ""
    if axis == "levels" or axis is None or len(points) == 1:
        near = min(points, key=lambda p: abs(math.log(p.x / x)) if p.x > 0 and x > 0 else abs(p.x - x))
        return near.mean, near.half, near.counts, f"not tested at {x:g}: the nearest tested point, {near.x:g}, stands in"
    if x < points[0].x:
        p = points[0]
        return p.mean, p.half, p.counts, f"below the smallest tested point, {p.x:g}"
    if x > points[-1].x:
        p = points[-1]
        return p.mean, p.half, p.counts, f"beyond the largest tested point, {p.x:g}"
    for a, b in zip(points, points[1:]):
        if a.x <= x <= b.x:
            f = (x - a.x) / (b.x - a.x)
            counts = a.counts + b.counts
            return (a.mean + f * (b.mean - a.mean), a.half + f * (b.half - a.half), counts,
                    f"interpolated between {a.x:g} and {b.x:g}")
    raise AssertionError("unreachable: points are sorted")  # pragma: no cover


def _tuned(r: Record) -> bool:
    """A record whose radius was tuned per task (its study's best), not fixed in advance."""
    return r.settings.get("tuned") is True


def as_pooled(r: Record) -> Record:
    """The record as it is pooled: a share beyond ``SHARE_BOUNDS`` at the bound, its se at most
    ``CLIPPED_SE`` (the file keeps what was measured)."""  # noqa: D401
    if not r.has_number or SHARE_BOUNDS[0] <= r.share <= SHARE_BOUNDS[1]:
        return r
    from dataclasses import replace

    return replace(r, share=min(max(r.share, SHARE_BOUNDS[0]), SHARE_BOUNDS[1]), se=min(r.se, CLIPPED_SE))
