"""The planner: choose the strategy, devices and numbers that hide the ascent gradient.

Objective (DESIGN.md section 4), printed with every plan:

    among candidates whose predicted step time is within the budget
    (default 1.05 x the SGD step on the fastest device), take the highest sharpness fidelity;
    break ties by predicted time.

Fidelity is ranked lexicographically by ``(ascent fraction, -staleness, probability)``:

- ``ascent fraction`` is the share of a step's samples that the perturbation sees on average:
  b'/b for AsyncSAM, 1 for SAM and SAMPa, p for RST (its SAM steps see all of b, the others
  nothing), 0 for SGD;
- ``staleness`` is τ (0 for SAM and RST, 1 for SAMPa, whose perturbation comes from the
  previous step's auxiliary gradient);
- ``probability`` is p for RST, 1 otherwise.

If no candidate at or above the fidelity floor (``min_ascent_fraction``) fits the budget, the
planner says so, picks the fastest candidate at the floor, and reports the RST p that meets
the budget.

How the numbers are found:

- b' (AsyncSAM) is the largest integer in [floor, b] whose ascent fits its window, found by
  bisection on the monotone cost curve ``t_A(b')`` (an exact integer root-find; scipy.optimize
  is not used because importing it alone takes 0.5-0.7 s here, over the planner's 0.5 s budget).
  The window is one descent step. With τ = 1 the chain ``copy θ → ascent → copy ĝ`` must fit in
  it; with τ >= 2 the copies overlap other steps, so only the slowest stage must fit.
- p (RST) meets the budget exactly: ``t_sgd + p·t_D(b) = budget``.
- Candidates are ranked by their closed-form step time, then the leading ones are confirmed
  by the discrete-event simulator (``hetsam.simulator``), whose prediction is what is reported.

At scale (``nodes`` x ``devices_per_node`` = n > 1 data-parallel ranks, ``hetsam.cost.network``):

- every descent step, SGD's included, ends with DDP's bucketed ring all-reduce:
  ``step = max(t_D, e_K) + u`` (``Cluster.step_seconds``); SAM adds its ascent before it
  (``t_D + step``: the ascent is per rank, not all-reduced), AsyncSAM's window for the ascent
  is that step, and SAMPa pairs two ranks whose gradients one all-reduce over 2n ranks
  combines (no copies);
- each rank's ascent runs on what the rank owns: with G > 1 ranks per node, a pool of
  ``floor(C / ceil(G/S))`` cores of socket 0 (whole, or split in two), and another GPU only if
  the profile lists at least 2G GPUs; ``reserve_cores`` is then per rank. With G = 1 the
  devices are those of the single-node plan;
- the budget is 1.05 x SGD *at that scale*, so the overhead is what SAM costs on top of
  data-parallel SGD;
- every step waits for the slowest of the n ranks, so the closed forms take each gradient time
  as the median of the slowest of n ranks' times (``slowest_median``; the simulator draws the
  maximum itself), and the SGD and SAM baselines are simulated like the candidates. Only the
  SGD candidate on the fastest device is simulated (the others keep their closed form).

With n = 1 the planner is the single-node one, exactly.

This module does not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hetsam.cost.model import CostModel
from hetsam.hardware.names import format_cpulist, parse_device
from hetsam.errors import HetsamInputError
from hetsam.cost.network import Cluster
from hetsam.planning.plan import Plan

__all__ = ["plan", "PlanReport", "Candidate", "OBJECTIVE", "fidelity_key"]

OBJECTIVE = ("highest sharpness fidelity (ascent fraction b'/b or p, then smaller staleness, then higher p) "
             "among plans within {budget:g} x the SGD step on the fastest device; ties go to the faster plan")


def fidelity_key(p: Plan, batch_size: int) -> tuple[float, int, float]:
    """``(ascent fraction, -staleness, probability)``; larger is more faithful to SAM."""
    if p.strategy == "sgd":
        return (0.0, 0, 0.0)
    if p.strategy == "sam":
        return (1.0, 0, 1.0)
    if p.strategy == "rst":
        return (p.probability, 0, p.probability)
    if p.strategy == "sampa":
        return (1.0, -1, 1.0)
    return (p.ascent_size(batch_size) / batch_size, -p.staleness, 1.0)


@dataclass
class Candidate:
    plan: Plan
    closed_form_seconds: float
    predicted_seconds: float
    fidelity: tuple[float, int, float]
    fits_budget: bool = False
    note: str = ""

    @property
    def ascent_fraction(self) -> float:
        return self.fidelity[0]


@dataclass
class PlanReport:
    """What the planner decided and why."""

    plan: Plan
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

    def alternatives(self) -> list[dict]:
        out = []
        for c in self.candidates:
            if c.plan is self.plan:
                continue
            out.append({**c.plan.to_dict(), "predicted": dict(c.plan.predicted)})
        return out


# ---------------------------------------------------------------------------------------
def plan(
    profile,
    *,
    batch_size: int | None = None,
    budget: float = 1.05,
    max_staleness: int = 1,
    min_ascent_fraction: float = 0.125,
    reserve_cores: int = 0,
    strategies=("sam", "async_sam", "sampa", "rst"),
    ascent_batches: str = "lookahead",
    simulate: bool = True,
    simulate_top: int = 8,
    seed: int = 0,
    descent_kind: str | None = None,
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
        min_ascent_fraction: the fidelity floor: b'/b for AsyncSAM, p for RST.
        reserve_cores: cores of socket 0 kept free for the data loader.
        strategies: which strategies to consider.
        simulate: confirm and rank the leading candidates with the simulator.
        descent_kind: ``"cpu"`` or ``"gpu"`` to keep the descent on that kind of device (where
            the model already lives); None: any.
        nodes, devices_per_node: N and G of a data-parallel job (module docstring).
        **network: the other arguments of :class:`hetsam.cost.network.Cluster` (bandwidths,
            latencies, ``sockets_per_node``, bucket sizes).
    """
    cm = profile if isinstance(profile, CostModel) else CostModel(profile)
    b = cm.profile.batch_size if batch_size is None else batch_size
    _validate(b, budget, max_staleness, min_ascent_fraction, reserve_cores, strategies)
    if descent_kind not in (None, "cpu", "gpu"):
        raise HetsamInputError(f"descent_kind={descent_kind!r} must be 'cpu', 'gpu' or None")
    try:
        cluster = Cluster(cm, nodes, devices_per_node, **network)
    except TypeError as exc:  # an unknown keyword
        raise HetsamInputError(f"plan: {exc}; see hetsam.cost.network.Cluster for the network options") from None
    scale = cluster if cluster.ranks > 1 else None
    sim_cm = cm
    if scale is not None:  # closed forms at scale see the slowest rank's gradient times
        cm = _SlowestRank(cm, scale.ranks)
    layout = _Layout(cm, reserve_cores, descent_kind, scale)
    if not layout.descent_devices:
        raise HetsamInputError(f"reserving {reserve_cores} core(s) leaves no device to train on; reserve fewer")

    step = {d: _descent_step(cm, scale, d, cm.grad_seconds(d, b)) for d in layout.descent_devices}
    fastest = min(step, key=step.get)
    sgd_seconds = step[fastest]
    if simulate:
        # the baseline that the budget and the overheads refer to is simulated like the candidates,
        # so both include jitter (and, at scale, the slowest of n ranks)
        sgd_seconds = _simulated_seconds(sim_cm, Plan("sgd", descent_device=fastest, batch_size=b), seed, scale)
    budget_seconds = budget * sgd_seconds

    floor = max(1, math.ceil(min_ascent_fraction * b))
    candidates: list[Candidate] = []

    def add(p: Plan, seconds: float, note: str = "") -> None:
        candidates.append(Candidate(p, seconds, seconds, fidelity_key(p, b), note=note))

    for d in layout.descent_devices:
        add(Plan("sgd", descent_device=d, batch_size=b), step[d])
    if scale is None:
        sam_step = {d: 2 * cm.grad_seconds(d, b) + cm.update_seconds(d) for d in layout.descent_devices}
    else:  # SAM's ascent on D is not all-reduced (per-rank perturbation)
        sam_step = {d: cm.grad_seconds(d, b) + step[d] for d in layout.descent_devices}
    sam_seconds = min(sam_step.values())
    sam_fastest = min(sam_step, key=sam_step.get)
    sam_extra = cm.grad_seconds(fastest, b)  # what a SAM step adds to an SGD step on `fastest`
    if simulate:
        sam_seconds = _simulated_seconds(sim_cm, Plan("sam", descent_device=sam_fastest, batch_size=b), seed, scale)
        sam_on_fastest = sam_seconds if sam_fastest == fastest else _simulated_seconds(
            sim_cm, Plan("sam", descent_device=fastest, batch_size=b), seed, scale)
        sam_extra = sam_on_fastest - sgd_seconds
    if "sam" in strategies:
        for d in layout.descent_devices:
            add(Plan("sam", descent_device=d, batch_size=b), sam_step[d])
    # RST's expected step is exact from the two baselines: (1 - p) SGD + p SAM; p is rounded down
    # to 4 decimals so that the p meeting the budget still meets it
    p_budget = min(1.0, max(0.0, math.floor((budget_seconds - sgd_seconds) / sam_extra * 1e4 + 1e-6) / 1e4))
    rst_expected = {}
    if "rst" in strategies:
        for p in sorted({p_budget, min(1.0, min_ascent_fraction), 0.5}):
            rst = Plan("rst", descent_device=fastest, batch_size=b, sam_probability=p)
            rst_expected[id(rst)] = sgd_seconds + p * sam_extra
            add(rst, rst_expected[id(rst)])
    notes: list[str] = []
    for descent, ascent in layout.pairs():
        if not (cm.shares_cores(descent, ascent) or cm.has_link(descent, ascent)):
            notes.append(f"skipped {descent} + {ascent}: the profile has no link between them")
            continue
        if "async_sam" in strategies:
            for tau in range(1, max_staleness + 1):
                add(*_async_candidate(cm, descent, ascent, b, tau, floor, ascent_batches, budget_seconds, scale))
        if "sampa" in strategies and not cm.shares_cores(descent, ascent):
            add(*_sampa_candidate(cm, descent, ascent, b, scale))

    if simulate:
        _confirm_with_simulator(sim_cm, [c for c in candidates if id(c.plan) not in rst_expected], simulate_top,
                                seed, floor / b, notes, scale, budget_seconds, sgd_seconds, fastest)

    for c in candidates:
        c.fits_budget = c.predicted_seconds <= budget_seconds * (1 + 1e-9)
    eligible = [c for c in candidates if c.ascent_fraction >= min_ascent_fraction - 1e-12]
    within = [c for c in eligible if c.fits_budget]
    if within:
        best = max(within, key=lambda c: (c.fidelity, -c.predicted_seconds))
        budget_met = True
    else:
        at_floor = eligible or candidates
        best = min(at_floor, key=lambda c: (c.predicted_seconds, [-x for x in c.fidelity]))
        budget_met = False
        notes.append(
            f"no plan at the fidelity floor ({min_ascent_fraction:g}) fits the budget of {budget:g} x SGD; "
            f"chose the fastest plan at the floor; RST with p = {p_budget:.3f} meets the budget"
        )

    for c in candidates:
        c.plan.predicted.update({
            "iteration_seconds": c.predicted_seconds,
            "sgd_iteration_seconds": sgd_seconds,
            "sam_iteration_seconds": sam_seconds,
            "overhead_vs_sgd": c.predicted_seconds / sgd_seconds - 1.0,
            "speedup_vs_sam": sam_seconds / c.predicted_seconds,
            "fidelity": list(c.fidelity),
        })
        if scale is not None:
            c.plan.predicted.update({"nodes": scale.nodes, "devices_per_node": scale.devices_per_node,
                                     "ranks": scale.ranks})
    candidates.sort(key=lambda c: (not c.fits_budget, [-x for x in c.fidelity], c.predicted_seconds))
    return PlanReport(
        plan=best.plan, candidates=candidates, batch_size=b, budget=budget, budget_seconds=budget_seconds,
        sgd_seconds=sgd_seconds, sam_seconds=sam_seconds, budget_met=budget_met,
        rst_probability_for_budget=p_budget, objective=OBJECTIVE.format(budget=budget), notes=notes,
        cluster=_cluster_report(scale, best.plan, cm),
    )


def _cluster_report(scale: Cluster | None, chosen: Plan, cm: CostModel) -> dict | None:
    if scale is None:
        return None
    ranks = 2 * scale.ranks if chosen.strategy == "sampa" else scale.ranks
    d = scale.to_dict(chosen.descent_device, cm.parameter_bytes, ranks)
    d["describe"] = scale.describe(chosen.descent_device, cm.parameter_bytes, ranks)
    return d


# ---------------------------------------------------------------------------------------
def _validate(b, budget, max_staleness, min_fraction, reserve, strategies) -> None:
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise HetsamInputError(f"batch size {b!r} must be a positive integer")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 1.0):
        raise HetsamInputError(f"budget {budget!r} must be a number >= 1 (a multiple of the SGD step time)")
    if isinstance(max_staleness, bool) or not isinstance(max_staleness, int) or max_staleness < 1:
        raise HetsamInputError(f"max staleness {max_staleness!r} must be an integer >= 1")
    if not (isinstance(min_fraction, (int, float)) and 0.0 < min_fraction <= 1.0):
        raise HetsamInputError(f"min ascent fraction {min_fraction!r} must be in (0, 1]")
    if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
        raise HetsamInputError(f"reserve cores {reserve!r} must be an integer >= 0")
    unknown = set(strategies) - {"sam", "async_sam", "sampa", "rst"}
    if unknown:
        raise HetsamInputError(f"unknown strategy {sorted(unknown)[0]!r}; choose from sam, async_sam, sampa, rst")


class _Layout:
    """The devices and CPU pools a plan may use, with ``reserve`` cores of socket 0 held back.

    With G > 1 ranks per node (``cluster``), one rank owns a pool of socket 0
    (``Cluster.rank_cores``; ``reserve`` is taken from it), and another rank's GPU is an
    ascent device only when there are spare GPUs (``Cluster.spare_gpus``).
    """

    def __init__(self, cm: CostModel, reserve: int, descent_kind: str | None = None, cluster: Cluster | None = None):
        self.cm = cm
        self.descent_kind = descent_kind
        multi = cluster is not None and cluster.devices_per_node > 1
        share = cluster.rank_cores() if multi else None
        self.gpu_ascent = not multi or cluster.spare_gpus()
        whole: list[str] = []  # a device or a whole (less reserve) socket
        self.splits: list[tuple[str, str]] = []  # disjoint pools of one socket
        for dev in cm.profile.devices:
            name = parse_device(dev.id)
            if name.kind == "gpu":
                whole.append(dev.id)
                continue
            if name.is_pool:
                continue
            n = dev.cores or 1
            if share is not None:  # the rank's pool: the first share[1] cores of its socket
                if dev.id != share[0]:
                    continue
                if reserve > share[1]:
                    raise HetsamInputError(f"cannot reserve {reserve} cores per rank: each of the {cluster.devices_per_node} "
                                           f"ranks of a node owns {share[1]} cores of {dev.id}")
                usable = share[1] - reserve
            elif name.index == 0 and reserve > n:
                raise HetsamInputError(f"cannot reserve {reserve} cores: socket {dev.id} has {n}")
            else:
                usable = n - (reserve if name.index == 0 else 0)
            if usable < 1:
                continue
            whole.append(dev.id if usable == n else f"{dev.id}[{format_cpulist(range(usable))}]")
            for k in _split_sizes(usable):
                self.splits.append((f"{dev.id}[{format_cpulist(range(k))}]", f"{dev.id}[{format_cpulist(range(k, usable))}]"))
        self.whole = whole
        self.descent_devices = [d for d in whole + [d for d, _ in self.splits] if self._may_descend(d)]

    def _may_descend(self, device: str) -> bool:
        return self.descent_kind is None or parse_device(device).kind == self.descent_kind

    def pairs(self):
        """(descent, ascent) pairs: every whole device with itself (time-sliced) and with the
        others, plus each split of a socket into two disjoint pools (both orders)."""
        for d in filter(self._may_descend, self.whole):
            yield d, d
            for a in self.whole:
                if a != d and not self.cm.shares_cores(d, a) and (self.gpu_ascent or self.cm.kind(a) != "gpu"):
                    yield d, a
        for p1, p2 in self.splits:
            for d, a in ((p1, p2), (p2, p1)):
                if self._may_descend(d):
                    yield d, a


def _split_sizes(n: int) -> list[int]:
    """Sizes k of the first pool when a socket of n cores is split in two (at most ~16 splits)."""
    if n < 2:
        return []
    if n <= 16:
        return list(range(1, n))
    return sorted({max(1, round(n * f)) for f in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 15 / 16)} - {n})


def _largest_fitting(fits, lo: int, hi: int) -> int | None:
    """Largest integer x in [lo, hi] with fits(x), for a monotone (true-then-false) predicate."""
    if not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _descent_step(cm, scale: Cluster | None, descent, compute: float) -> float:
    """A descent step of ``compute`` seconds: ``compute + u``, or at scale DDP's ``max(t, e_K) + u``."""
    upd = cm.update_seconds(descent)
    if scale is None:
        return compute + upd
    return scale.step_seconds(descent, compute, upd, cm.parameter_bytes)


def _async_candidate(cm, descent, ascent, b, tau, floor, policy, budget_seconds, scale=None):
    nbytes = cm.parameter_bytes
    if cm.shares_cores(descent, ascent):
        # time-sliced on one pool: both gradients run back to back, so nothing is hidden and
        # b' is the largest that keeps the step within the budget (at least the floor)
        base = _descent_step(cm, scale, descent, cm.grad_seconds(descent, b))
        bp = _largest_fitting(lambda x: base + cm.grad_seconds(ascent, x) <= budget_seconds, floor, b) or floor
        p = Plan("async_sam", descent_device=descent, ascent_device=ascent, batch_size=b, ascent_batch_size=bp,
                 staleness=tau, ascent_batches=policy)
        return p, base + cm.grad_seconds(ascent, bp), "time-sliced on one pool"
    s_d, s_a = cm.slowdown(descent, ascent), cm.slowdown(ascent, descent)
    window = _descent_step(cm, scale, descent, cm.grad_seconds(descent, b) * s_d)
    to_a, to_d = cm.copy_seconds(descent, ascent, nbytes), cm.copy_seconds(ascent, descent, nbytes)

    def ascent_chain(bp: int) -> float:
        compute = cm.grad_seconds(ascent, bp) * s_a
        return to_a + compute + to_d if tau == 1 else max(to_a, compute, to_d)

    bp = _largest_fitting(lambda x: ascent_chain(x) <= window, floor, b)
    note = "ascent hidden behind the descent"
    if bp is None:
        bp, note = floor, "ascent at the floor does not fit; the descent waits"
    seconds = max(window, ascent_chain(bp))
    p = Plan("async_sam", descent_device=descent, ascent_device=ascent, batch_size=b, ascent_batch_size=bp,
             staleness=tau, ascent_batches=policy)
    return p, seconds, note


def _sampa_candidate(cm, descent, ascent, b, scale=None):
    nbytes = cm.parameter_bytes
    s_d, s_a = cm.slowdown(descent, ascent), cm.slowdown(ascent, descent)
    if scale is not None:
        # a pair of ranks: both gradients at once, combined by one all-reduce over 2n ranks
        seconds = scale.step_seconds(descent, cm.grad_seconds(descent, b) * s_d, cm.update_seconds(descent), nbytes,
                                     partner_compute=cm.grad_seconds(ascent, b) * s_a, ranks=2 * scale.ranks)
        return Plan("sampa", descent_device=descent, ascent_device=ascent, batch_size=b), seconds, "a pair of ranks"
    # both gradients of a step in parallel; x̃/y are sent to the ascent device, g_y' comes back
    other = cm.copy_seconds(descent, ascent, nbytes) + cm.grad_seconds(ascent, b) * s_a + cm.copy_seconds(ascent, descent, nbytes)
    seconds = max(cm.grad_seconds(descent, b) * s_d, other) + cm.update_seconds(descent)
    return Plan("sampa", descent_device=descent, ascent_device=ascent, batch_size=b), seconds, "two gradients in parallel"


def _confirm_with_simulator(cm, candidates, top, seed, floor_fraction, notes, scale=None, budget_seconds=0.0,
                            sgd_simulated=None, fastest=None) -> None:
    """Replace the closed-form time of the leading candidates by the simulator's mean."""
    try:
        from hetsam.simulator import simulate
    except ImportError:
        notes.append("simulator unavailable: times are closed-form")
        return
    # those that can win first: within the budget by the closed form, by fidelity; then the
    # fastest at the fidelity floor, which win when nothing fits
    ranked = sorted(candidates, key=lambda c: (c.closed_form_seconds > budget_seconds * (1 + 1e-9),
                                               [-x for x in c.fidelity], c.closed_form_seconds))
    non_sgd = [c for c in ranked if c.plan.strategy != "sgd"]
    fastest_at_floor = sorted((c for c in non_sgd if c.ascent_fraction >= floor_fraction - 1e-12),
                              key=lambda c: c.closed_form_seconds)[:3]
    chosen = non_sgd[:top] + [c for c in fastest_at_floor if c not in non_sgd[:top]]
    for c in candidates:
        if c.plan.strategy != "sgd":
            continue
        if sgd_simulated is None:
            chosen.append(c)
        elif c.plan.descent_device == fastest:  # the baseline, already simulated
            c.predicted_seconds = sgd_simulated
    for c in chosen:
        c.predicted_seconds = _simulated_seconds(cm, c.plan, seed, scale, simulate)


class _SlowestRank:
    """A CostModel whose gradient times are those of the slowest of ``n`` ranks (median)."""

    def __init__(self, cm: CostModel, n: int):
        from hetsam.simulator.model import slowest_median

        self._cm, self._n, self._slowest = cm, n, slowest_median

    def __getattr__(self, name):
        return getattr(self._cm, name)

    def grad_seconds(self, device, batch) -> float:
        return self._slowest(self._cm.grad_seconds(device, batch), self._cm.grad_spread(device, batch), self._n)


def _simulated_seconds(cm, p: Plan, seed: int, scale: Cluster | None, simulate=None) -> float:
    """The simulator's mean seconds per iteration of ``p`` (2,000 iterations or steady state)."""
    if simulate is None:
        from hetsam.simulator import simulate
    result = simulate(p, cm, iterations=2000, seed=seed, **({} if scale is None else {"cluster": scale}))
    return float(result.iteration_seconds["mean"])
