"""The planner: choose the strategy, devices and numbers that hide the ascent gradient.

Objective (printed with every plan; README, "Planning"; :mod:`hetsam.planning.objective`):

    among candidates whose predicted step time is within the budget
    (default 1.05 x the SGD step on the fastest device), take the highest share of SAM's gain
    that the evidence supports at 80% (``robust``, the interval's lower end; ``expected``: the
    point estimate); near-ties go to SAM-faithful plans, then the faster.

Each candidate's share for a new task, with its interval and the evidence behind it, comes from
the evidence store (:mod:`hetsam.evidence`: published tables, hetsam's benchmark, the user's
own study). A strategy the evidence cannot place gets its ``fidelity``'s ascent fraction as a
proxy with no interval. If no candidate at or above the floor (``min_ascent_fraction``, on the
point estimate) fits the budget, the planner says so, picks the fastest candidate at the floor,
and reports the RST p that meets the budget.

How the numbers are found: every registered strategy proposes its candidates with their
closed-form step times (``StrategySpec.candidates``; the closed forms are in each strategy's
``hetsam/strategies/<name>/__init__.py``). The SGD and SAM baselines, then the leading
candidates, are confirmed by the discrete-event simulator (``hetsam.simulator``), whose
typical step is what is reported (``hetsam.simulator.typical_step``: the median step, as the
bench measures; the profile's spread widens the reported range of steps and never moves the
centre, so a noisy profile cannot inflate the SGD baseline and the budget); candidates whose
closed form is exact from the simulated baselines (RST's expectation) are not simulated. No
plan is reported faster than SGD on its own descent device.

At scale (``nodes`` x ``devices_per_node`` = n > 1 data-parallel ranks, ``hetsam.cost.cluster``):

- every descent step, SGD's included, ends with DDP's bucketed ring all-reduce:
  ``step = max(t_D, e_K) + u`` (``Cluster.step_seconds``);
- each rank's ascent runs on what the rank owns: with G > 1 ranks per node, a pool of
  ``floor(C / ceil(G/S))`` cores of socket 0 (whole, or split in two), and another GPU only if
  the profile lists at least 2G GPUs; ``reserve_cores`` is then per rank. With G = 1 the
  devices are those of the single-node plan;
- the budget is 1.05 x SGD *at that scale*, so the overhead is what SAM costs on top of
  data-parallel SGD;
- every step waits for the slowest of the n ranks, so the closed forms take each gradient time
  as the median of the slowest of n ranks' times (``SlowestRank``; the simulator draws the
  maximum itself). Only the SGD candidate on the fastest device is simulated (the other SGD
  candidates keep their closed form).

With n = 1 the planner is the single-node one, exactly. This module does not import torch.
"""

from __future__ import annotations

import math

from hetsam import _checks, defaults
from hetsam import strategies as registry
from hetsam.cost.closed_form import SlowestRank, descent_step
from hetsam.cost.cluster import Cluster
from hetsam.cost.model import CostModel
from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import record_kinds
from hetsam.planning import objective as _objective
from hetsam.planning.layout import Layout
from hetsam.planning.plan import Plan
from hetsam.planning.prediction import Prediction
from hetsam.planning.report import Candidate, PlanReport
from hetsam.strategies import SAM, SGD, PlanningContext

__all__ = ["plan", "check_arguments", "PlanReport", "Candidate", "fidelity_key", "simulated_seconds"]


def fidelity_key(p: Plan, batch_size: int) -> tuple[float, int, float]:
    """``(ascent fraction, -staleness, SAM share)``; larger is more faithful to SAM."""
    return p.spec.fidelity(p, batch_size)


# ---------------------------------------------------------------------------------------
def plan(
    profile,
    *,
    batch_size: int | None = None,
    budget: float = defaults.BUDGET,
    max_staleness: int = defaults.MAX_STALENESS,
    min_ascent_fraction: float = defaults.MIN_ASCENT_FRACTION,
    reserve_cores: int = defaults.RESERVE_CORES,
    strategies: tuple | None = None,
    ascent_batches: str = defaults.ASCENT_BATCHES,
    simulate: bool = True,
    simulate_top: int = defaults.SIMULATE_TOP,
    seed: int = 0,
    descent_kind: str | None = None,
    shares=None,
    objective: str = defaults.OBJECTIVE,
    base_optimizer: str | None = defaults.BASE_OPTIMIZER,
    nodes: int = 1,
    devices_per_node: int = 1,
    **network,
) -> PlanReport:
    """Plan SAM for the machine a profile describes. See the module docstring for the rules.

    Args:
        profile: a :class:`~hetsam.profiling.schema.Profile`, a path, a bundled profile name, or a CostModel.
        batch_size: b (default: the profile's batch size).
        budget: allowed step time as a multiple of the SGD step on the fastest device.
        max_staleness: the largest τ AsyncSAM may use.
        min_ascent_fraction: the floor: the smallest AsyncSAM b'/b proposed, and the smallest
            expected share of SAM's gain a plan may keep.
        reserve_cores: cores of socket 0 kept free for the data loader.
        strategies: which registered strategies to consider (default: every one whose spec says
            ``planned``); SGD is always a candidate.
        simulate: confirm and rank the leading candidates with the simulator.
        descent_kind: a record kind (``"cpu"``, ``"gpu"``: ``hetsam.hardware.kinds.record_kinds()``)
            to keep the descent on that kind of device (where the model already lives); None: any.
        shares: evidence to add to the shipped store (a path to a ``hetsam.study`` file, records,
            or a ``hetsam.evidence.ShareModel`` to use as it is; :func:`hetsam.evidence.share_model`).
        objective: ``"robust"`` (the share the evidence supports at 80%) or ``"expected"``.
        base_optimizer: the base optimizer family (``"sgd"``, ``"adam"``; None: unknown), which
            decides the radii MSAM may use (those its evidence tested for that family).
        nodes, devices_per_node: N and G of a data-parallel job (module docstring).
        **network: the other arguments of :class:`hetsam.cost.cluster.Cluster` (bandwidths,
            latencies, ``sockets_per_node``, bucket sizes).
    """
    cm = profile if isinstance(profile, CostModel) else CostModel(profile)
    b = cm.profile.batch_size if batch_size is None else batch_size
    wanted, evidence, family = check_arguments(
        batch_size=b, budget=budget, max_staleness=max_staleness, min_ascent_fraction=min_ascent_fraction,
        reserve_cores=reserve_cores, strategies=strategies, ascent_batches=ascent_batches, simulate_top=simulate_top,
        descent_kind=descent_kind, objective=objective, base_optimizer=base_optimizer, shares=shares)
    try:
        cluster = Cluster(cm, nodes, devices_per_node, **network)
    except TypeError as exc:  # an unknown keyword
        raise HetsamInputError(f"plan: {exc}; see hetsam.cost.cluster.Cluster for the network options") from None
    scale = cluster if cluster.ranks > 1 else None
    sim_cm = cm
    if scale is not None:  # closed forms at scale see the slowest rank's gradient times
        cm = SlowestRank(cm, scale.ranks)
    layout = Layout(cm, reserve_cores, descent_kind, scale)
    if not layout.descent_devices:
        raise HetsamInputError(_no_device_message(cm, reserve_cores, descent_kind, devices_per_node))

    ranges: dict = {}  # plan -> (p05, p95) of its simulated steps: the spread widens, never moves, the centre

    def sim(p: Plan) -> float:
        step = simulated_seconds(sim_cm, p, seed, scale)
        ranges[p] = (step.low, step.high)
        return step.seconds

    ctx = PlanningContext(cm=cm, batch_size=b, budget_seconds=0.0, floor=max(1, math.ceil(min_ascent_fraction * b)),
                          min_fraction=min_ascent_fraction, max_staleness=max_staleness, ascent_batches=ascent_batches,
                          descent_devices=list(layout.descent_devices), pairs=[], fastest="", sgd_seconds=0.0,
                          sam_extra=0.0, p_budget=0.0, scale=scale, plan_type=Plan, evidence=evidence,
                          base_optimizer=family,
                          descent_step=lambda d, compute, perturbed=False: descent_step(cm, scale, d, compute, perturbed))
    sgd_seconds, sam_seconds = _baselines(ctx, budget, sim if simulate else None)
    budget_seconds = ctx.budget_seconds
    notes: list[str] = []
    for descent, ascent in layout.pairs():
        if cm.shares_cores(descent, ascent) or cm.has_link(descent, ascent):
            ctx.pairs.append((descent, ascent))
        else:
            notes.append(f"skipped {descent} + {ascent}: the profile has no link between them")
    candidates: list[Candidate] = []
    for spec in registry.specs():
        if spec.baseline or spec.name in wanted:
            for prop in spec.candidates(ctx):
                share = evidence.share(prop.plan, b, family)
                candidates.append(Candidate(prop.plan, prop.seconds, prop.seconds,
                                            (share.objective(objective), *spec.fidelity(prop.plan, b)), note=prop.note,
                                            exact=prop.exact, share=share))
    if simulate:
        _confirm_with_simulator(candidates, simulate_top, ctx.floor / b, budget_seconds, sgd_seconds, ctx.fastest, sim)
    _no_faster_than_sgd(candidates)
    for c in candidates:
        c.ratio_uncertainty = _objective.ratio_uncertainty(cm, c.plan, ctx.fastest)

    # only the strategies asked for are chosen; the baselines (SGD, SAM) are reference rows
    best, within = _objective.choose(candidates, budget_seconds, min_ascent_fraction, wanted)
    if not within:
        rst = f"; RST with p = {ctx.p_budget:.3f} meets the budget" if registry.RST in wanted else ""
        notes.append(f"no plan of {', '.join(wanted)} keeping at least {min_ascent_fraction:g} of SAM's gain fits the "
                     f"budget of {budget:g} x SGD; chose the fastest at the floor{rst}")
    if simulate and best.plan not in ranges:  # priced exactly from the baselines: simulated for its range only
        sim(best.plan)
    beyond = _objective.worth_more_time(best, candidates, sgd_seconds) if within else None
    if beyond:
        notes.append(beyond)
    held = _objective.held_back(best, candidates, budget_seconds)
    if held:
        notes.append(held)
    for c in candidates:
        c.prediction = Prediction(c.predicted_seconds, sgd_seconds, sam_seconds, c.fidelity, c.closed_form_seconds,
                                  c.simulated, nodes, devices_per_node, c.share, ranges.get(c.plan), c.ratio_uncertainty)
    candidates.sort(key=lambda c: (not c.fits_budget, [-x for x in c.fidelity], c.predicted_seconds))
    return PlanReport(
        plan=best.plan, prediction=best.prediction, candidates=candidates, batch_size=b, budget=budget,
        budget_seconds=budget_seconds, sgd_seconds=sgd_seconds, sam_seconds=sam_seconds, budget_met=within,
        rst_probability_for_budget=ctx.p_budget, objective=_objective.describe(objective, budget, evidence.level),
        notes=notes, cluster=_cluster_report(scale, best.plan, cm), cost_model=sim_cm, objective_name=objective,
        base_optimizer=family,
    )


def _baselines(ctx: PlanningContext, budget: float, sim) -> tuple[float, float]:
    """SGD and SAM on the fastest descent devices (simulated when ``sim`` is given); fills in the
    context's fastest device, budget, SAM extra and the SAM share that meets the budget."""
    sgd, sam = registry.get(SGD), registry.get(SAM)
    step = {d: sgd.closed_form_seconds(ctx, ctx.plan(SGD, descent_device=d)) for d in ctx.descent_devices}
    fastest = ctx.fastest = min(step, key=step.get)
    # the baseline that the budget and the overheads refer to is simulated like the candidates
    sgd_seconds = sim(ctx.plan(SGD, descent_device=fastest)) if sim else step[fastest]
    ctx.budget_seconds = budget * sgd_seconds
    sam_step = {d: sam.closed_form_seconds(ctx, ctx.plan(SAM, descent_device=d)) for d in ctx.descent_devices}
    sam_fastest = min(sam_step, key=sam_step.get)
    sam_seconds, sam_extra = sam_step[sam_fastest], ctx.cm.grad_seconds(fastest, ctx.batch_size)
    if sim:
        sam_seconds = sim(ctx.plan(SAM, descent_device=sam_fastest))
        sam_on_fastest = sam_seconds if sam_fastest == fastest else sim(ctx.plan(SAM, descent_device=fastest))
        sam_extra = sam_on_fastest - sgd_seconds
    # the SAM share that meets the budget exactly, rounded down to 4 decimals so that it still does
    ctx.p_budget = min(1.0, max(0.0, math.floor((ctx.budget_seconds - sgd_seconds) / sam_extra * 1e4 + 1e-6) / 1e4))
    ctx.sgd_seconds, ctx.sam_extra = sgd_seconds, sam_extra
    return sgd_seconds, sam_seconds


def _cluster_report(scale: Cluster | None, chosen: Plan, cm) -> dict | None:
    if scale is None:
        return None
    ranks = 2 * scale.ranks if chosen.spec.rank_pairs else scale.ranks
    d = scale.to_dict(chosen.descent_device, cm.parameter_bytes, ranks)
    d["describe"] = scale.describe(chosen.descent_device, cm.parameter_bytes, ranks)
    return d


def check_arguments(*, batch_size=1, descent_kind=None, **options):
    """Every argument of :func:`plan` that needs no profile, checked (one-line ``HetsamInputError``):
    the command line calls it before it measures anything. ``options``: the planner's options that
    :func:`plan` takes, declared in :data:`hetsam.planning.options.OPTIONS` (one not given takes its
    default). Returns ``(strategies, evidence, base optimizer family)``."""
    from hetsam.evidence import optimizer_family, share_model
    from hetsam.planning.options import check

    _checks.integer(batch_size, "batch size", low=1, high=2**31 - 1)
    values = check(options)
    wanted = values["strategies"] or tuple(s.name for s in registry.specs() if s.planned)
    _checks.choice(descent_kind, "descent_kind", (None, *record_kinds()))
    return wanted, share_model(values["shares"]), optimizer_family(values["base_optimizer"])


def _no_device_message(cm, reserve: int, descent_kind, devices_per_node: int) -> str:
    if reserve:
        return f"reserving {reserve} core(s) leaves no device to train on; reserve fewer"
    if descent_kind is not None:
        return f"the profile has no {descent_kind.upper()} device to train on; profile one, or plan for another kind"
    return (f"with {devices_per_node} rank(s) per node no device of the profile is left to train on; "
            "give fewer --devices-per-node, or a profile with more cores or GPUs")


def _confirm_with_simulator(candidates, top, floor_fraction, budget_seconds, sgd_simulated, fastest, sim) -> None:
    """Replace the closed-form time of the leading candidates by the simulator's typical step."""
    ranked = sorted((c for c in candidates if not c.exact),
                    key=lambda c: (not _objective.within_budget(c.closed_form_seconds, budget_seconds),
                                   [-x for x in c.fidelity], c.closed_form_seconds))
    # those that can win first: within the budget by the closed form, by fidelity; then the
    # fastest at the floor, which win when nothing fits
    contenders = [c for c in ranked if not c.plan.spec.baseline]
    leading = contenders[:top]
    at_floor = sorted((c for c in contenders if c.expected_share >= floor_fraction - 1e-12),
                      key=lambda c: c.closed_form_seconds)[:3]
    chosen = leading + [c for c in at_floor if all(c is not x for x in leading)]
    for c in candidates:  # SGD on every device, so that no row beats the simulated plans by the jitter alone
        if c.plan.strategy == SGD:
            c.predicted_seconds = sgd_simulated if c.plan.descent_device == fastest else sim(c.plan)
            c.simulated = True
    for c in chosen:
        c.predicted_seconds, c.simulated = sim(c.plan), True


def _no_faster_than_sgd(candidates) -> None:
    """No plan is predicted faster than SGD on its own descent device: every strategy does at
    least SGD's work there (one gradient on b samples and the update), so a faster prediction is
    the simulator's sampling noise, and the plan gets SGD's time on that device."""
    sgd = {c.plan.descent_device: c.predicted_seconds for c in candidates if c.plan.strategy == SGD}
    for c in candidates:
        floor = sgd.get(c.plan.descent_device)
        if floor is not None and c.predicted_seconds < floor:
            c.predicted_seconds = floor


def simulated_seconds(cm, p: Plan, seed: int, scale: Cluster | None):
    """The simulator's typical step of ``p`` (``hetsam.simulator.typical_step``: the median, or the
    expectation at the medians for two kinds of steps; 2,000 iterations or steady state)."""
    from hetsam.simulator import typical_step

    return typical_step(p, cm, iterations=defaults.PLANNER_ITERATIONS, seed=seed,
                        **({} if scale is None else {"cluster": scale}))
