"""The planner's objective: which plan within the budget keeps the most of SAM's gain that the
evidence supports, how near-ties are broken, and why the choice won (torch-free).

Every candidate carries its :class:`~hetsam.evidence.Share` for a new task. The objective value is

- ``robust`` (the default): the lower end of the share's 80% interval, the share the evidence
  supports at that level (a share with no evidence behind it counts as 0);
- ``expected``: the point estimate.

Among the candidates within the budget whose point estimate is at least the floor, the best
objective value wins, but a *near-tie* (within :data:`NEAR_TIE` of the best) goes to the plan
closer to what the user asked for: a SAM-faithful strategy (the user's ρ and algorithm: SAM,
AsyncSAM, SAMPa, RST, interval, late-phase) before one with a radius of its own (MSAM); then the
higher objective value, the strategy's own fidelity, and the faster plan. When nothing fits, the
fastest plan at the floor is chosen.

A plan on pools compared with SGD on the whole socket fits the budget only with room for the
profile's measured pool/socket deviation (``Candidate.ratio_uncertainty``; :func:`margin`, its
worst round): on a host whose parallel speed-up moves, such a plan's step may be that much longer
than predicted, so the conservative reading decides. The worst round, not the median: four MLP
profiles (b = 64) taken within five minutes on the 2-vCPU machine gave a 1-core pool 1.10x,
1.41x, 1.49x and 1.66x its socket's time, while each profile's rounds deviated by a median of
3–11% and at worst by 7–39%.
"""

from __future__ import annotations

import math

from hetsam import defaults
from hetsam.evidence.share import pct

__all__ = ["OBJECTIVES", "NEAR_TIE", "describe", "choose", "margin", "within_budget", "ratio_uncertainty", "held_back", "runner_up",
           "worth_more_time", "why"]

OBJECTIVES = ("robust", "expected")
NEAR_TIE = defaults.NEAR_TIE


def describe(objective: str, budget: float, level: float) -> str:
    """The objective in one line, printed with every plan."""
    what = (f"share of SAM's gain that the evidence supports at the {level:.0%} level (its interval's lower end)"
            if objective == "robust" else "expected share of SAM's gain (the point estimate)")
    return (f"the highest {what} among plans within {budget:g} x the SGD step on the fastest device; near-ties "
            f"(within {NEAR_TIE:.0%}) go to SAM-faithful plans, then the faster")


def _key(c) -> tuple:
    return (not c.plan.spec.own_radius, c.objective_value, c.fidelity[1:], -c.predicted_seconds)


def choose(candidates: list, budget_seconds: float, min_fraction: float, wanted: tuple | None = None):
    """``(best, within)``: the objective's choice among the strategies in ``wanted`` (None: all)
    and whether it fits the budget (module docstring). Sets ``fits_budget`` on every candidate."""
    for c in candidates:
        c.fits_budget = within_budget(c.predicted_seconds, budget_seconds, c.ratio_uncertainty)
    if wanted is not None and any(c.plan.strategy in wanted for c in candidates):
        candidates = [c for c in candidates if c.plan.strategy in wanted]
    # the floor; strategies that cannot reach it (SGD asked for alone) are judged without it
    eligible = [c for c in candidates if c.expected_share >= min_fraction - 1e-12] or candidates
    within = [c for c in eligible if c.fits_budget]
    if within:
        top = max(c.objective_value for c in within)
        return max((c for c in within if c.objective_value >= top - NEAR_TIE - 1e-12), key=_key), True
    return min(eligible or candidates, key=lambda c: (c.predicted_seconds, [-x for x in c.fidelity])), False


def margin(uncertainty: tuple | None) -> float:
    """The room a plan needs for ``uncertainty`` (:func:`ratio_uncertainty`): its worst round
    (module docstring); 0 without one. Shown as ``±`` beside the plan's "vs SGD"."""
    return uncertainty[1] if uncertainty else 0.0


def within_budget(seconds: float, budget_seconds: float, uncertainty: tuple | None = None) -> bool:
    """Whether ``seconds`` (or a ratio to SGD against a budget ratio) fits, with room for
    :func:`margin` of ``uncertainty`` (module docstring)."""
    return seconds * (1.0 + margin(uncertainty)) <= budget_seconds * (1 + 1e-9)


def ratio_uncertainty(cm, plan, baseline: str) -> tuple[float, float] | None:
    """``(median, worst)`` deviation of t(pool)/t(socket) across the profile's rounds when ``plan``
    runs on CPUs of another core count than SGD's ``baseline`` device (a pool against its socket);
    None otherwise, or when not measured (the provenance is free-form: anything but two fractions
    in [0, 10] counts as not measured)."""
    devices = {plan.descent_device} | ({plan.effective_ascent_device} if plan.spec.uses_ascent else set())
    if cm.kind(baseline) != "cpu" or not any(cm.kind(d) == "cpu" and cm.cores(d) != cm.cores(baseline) for d in devices):
        return None
    rep = cm.profile.provenance.get("ratio_repeatability")
    try:
        med, worst = float(rep["pool_ratio"]["median_deviation"]), float(rep["pool_ratio"]["max_deviation"])
    except (TypeError, KeyError, ValueError):
        return None
    return (med, max(med, worst)) if 0.0 <= med <= 10.0 and 0.0 <= worst <= 10.0 else None


def held_back(best, candidates: list, budget_seconds: float) -> str | None:
    """A note when a plan within the budget at its prediction is out of it for lack of room for the
    pool/socket uncertainty, and it is the choice (then beyond the budget) or the objective would have
    preferred it; else None."""
    lost = [c for c in candidates if not c.fits_budget and c.ratio_uncertainty and within_budget(c.predicted_seconds, budget_seconds)
            and (c is best or c.objective_value > best.objective_value + NEAR_TIE)]
    if not lost:
        return None
    c = max(lost, key=lambda c: c.objective_value)
    what = "so the budget is not met" if c is best else "not chosen"
    return (f"{c.plan.describe()} fits the budget at its predicted {c.predicted_seconds:.4g} s but not with the "
            f"±{margin(c.ratio_uncertainty):.1%} this machine's pool/socket speed ratio moved by while profiling, {what} (re-profile when "
            "the machine is quiet)")


def runner_up(best, candidates: list):
    """The best plan of another strategy within the budget (by the objective), or None."""
    others = [c for c in candidates if c.fits_budget and c.plan.strategy != best.plan.strategy
              and c.expected_share > 0]
    return max(others, key=lambda c: (c.objective_value, _key(c)), default=None)


_WORTH_AT_MOST = 1.5  # x SGD: a note on a plan beyond the budget names only plans up to this cost


def worth_more_time(best, candidates: list, sgd_seconds: float) -> str | None:
    """A note on the cheapest plan beyond the budget (up to 1.5 x SGD) whose objective value beats
    the choice's by more than a near-tie, or None."""
    better = [c for c in candidates if not c.fits_budget and c.predicted_seconds <= _WORTH_AT_MOST * sgd_seconds
              and c.objective_value > best.objective_value + NEAR_TIE]
    if not better:
        return None
    c = min(better, key=lambda x: (x.predicted_seconds, -x.objective_value))
    ratio = c.predicted_seconds / sgd_seconds
    return (f"{c.plan.describe()} keeps more of SAM's gain ({c.share.cell()} against {best.share.cell()}) at "
            f"{ratio - 1:+.1%} per step, beyond the budget; --budget {math.ceil(ratio * 100) / 100:g} admits it")


def why(report) -> str:
    """One sentence: why the chosen plan won, by how much, and the runner-up."""
    c = report.chosen
    if not report.budget_met:
        return ("no plan at the floor (its expected share of SAM's gain) fits the budget, so the fastest plan at the "
                f"floor was chosen (RST with p = {report.rst_probability_for_budget:.3f} would meet it)")
    name = "supported share" if report.objective_name == "robust" else "expected share"
    r = runner_up(c, report.candidates)
    head = f"{name} {pct(c.objective_value)}"
    if r is None:
        return f"{head}; no plan of another strategy fits the budget"
    gap = c.objective_value - r.objective_value
    tail = f"runner-up {r.plan.describe()} ({name} {pct(r.objective_value)}, {r.share.cell()})"
    points = f"{100 * abs(gap):.0f} point(s)"
    if gap < -1e-12:
        return (f"{head}, a near-tie with the {tail}, {points} higher: the near-tie goes to the SAM-faithful plan, "
                "which uses your ρ")
    if gap <= NEAR_TIE:
        return f"{head}, a near-tie ({points} ahead) with the {tail}"
    return f"{head}, {points} ahead of the {tail}"
