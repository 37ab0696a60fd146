"""``simulate(plan, profile, ...)``: predict a plan's time per iteration on a cost model.

See ``model.py`` for what an iteration is made of and ``engine.py`` for how tasks run.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

from hetsam import _checks, defaults
from hetsam.cost.cluster import Cluster
from hetsam.cost.model import CostModel
from hetsam.errors import HetsamInputError
from hetsam.profiling.stats import quantile
from hetsam.strategies.plan import Plan

from .engine import Engine
from .model import Workload, warmup_iterations
from .steady import BatchMeans

__all__ = ["simulate", "SimResult", "TimelineEvent", "cost_model", "make_cluster", "DEFAULT_ITERATIONS",
           "DEFAULT_TIMELINE_ITERATIONS"]

DEFAULT_ITERATIONS = defaults.SIM_ITERATIONS
DEFAULT_TIMELINE_ITERATIONS = defaults.SIM_TIMELINE_ITERATIONS
MAX_ITERATIONS = 10**12  # a prediction for more iterations than this is refused
MAX_TIMELINE_ITERATIONS = 1000  # iterations kept for the trace and the plot
_KEEP = 100_000  # iteration times kept for p50/p95; beyond it a uniform sample (constant memory)


@dataclass(frozen=True)
class TimelineEvent:
    """One interval on one track (a device, or one direction of a link), in seconds."""

    track: str
    name: str
    category: str  # "descent", "update", "ascent", "copy", "handover", "wait", "loader"
    start: float
    duration: float
    iteration: int


@dataclass
class SimResult:
    """What a simulation predicts. Seconds throughout.

    Attributes:
        plan: the simulated plan.
        batch_size: b, the descent batch (samples per iteration).
        iterations: how many iterations the prediction is for.
        simulated_iterations: how many were simulated event by event.
        extrapolated: True when the run stopped at steady state and the rest was extrapolated
            with the steady-state mean (``note`` says so).
        iteration_seconds: ``mean`` (predicted total / iterations), ``p50`` and ``p95`` (over the
            simulated iterations after the warm-up when there are at least 20 of them).
        total_seconds: predicted wall time of all ``iterations``.
        samples_per_second: ``batch_size / mean``.
        utilisation: busy fraction of each device the plan names (shared hardware: the same
            number for both names), over the simulated time.
        link_utilisation: busy fraction of each link direction that carries copies.
        descent_wait_seconds: total time the descent device sat idle waiting for an ascent
            gradient, over all ``iterations`` (extrapolated like the time).
        descent_wait_per_iteration: its mean per iteration.
        steady_state: the batch-means estimate (mean, 95% CI half-width, warm-up, batches).
        cluster: for n > 1 ranks, the data-parallel layout (``Cluster.to_dict``: ranks, ring
            link, bucket sizes and their all-reduce seconds); None for one process.
        allreduce_exposed_per_iteration: mean seconds per simulated step that the last
            all-reduce ends after the backward (the communication not hidden by DDP buckets).
        timeline: events of the first ``timeline_iterations`` iterations.
        tracks: track name -> what runs there, in display order.
        events, tasks, wall_seconds: engine counters for this run.
    """

    plan: Plan
    batch_size: int
    iterations: int
    simulated_iterations: int
    extrapolated: bool
    note: str
    iteration_seconds: dict
    total_seconds: float
    samples_per_second: float
    utilisation: dict
    link_utilisation: dict
    descent_wait_seconds: float
    descent_wait_per_iteration: float
    steady_state: dict
    timeline: list = field(default_factory=list)
    tracks: dict = field(default_factory=dict)
    seed: int = 0
    jitter: bool = True
    loader_seconds: float = 0.0
    events: int = 0
    tasks: int = 0
    wall_seconds: float = 0.0
    notes: list = field(default_factory=list)
    cluster: dict | None = None
    allreduce_exposed_per_iteration: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def to_dict(self) -> dict:
        """JSON-ready; ``engine`` holds the run's counters (its wall time varies run to run)."""
        d = {
            "plan": self.plan.to_dict(),
            "describe": self.plan.describe(),
            "batch_size": self.batch_size,
            "iterations": self.iterations,
            "simulated_iterations": self.simulated_iterations,
            "extrapolated": self.extrapolated,
            "note": self.note,
            "iteration_seconds": dict(self.iteration_seconds),
            "total_seconds": self.total_seconds,
            "samples_per_second": self.samples_per_second,
            "utilisation": dict(self.utilisation),
            "link_utilisation": dict(self.link_utilisation),
            "descent_wait_seconds": self.descent_wait_seconds,
            "descent_wait_per_iteration": self.descent_wait_per_iteration,
            "steady_state": dict(self.steady_state),
            "seed": self.seed,
            "jitter": self.jitter,
            "loader_seconds": self.loader_seconds,
            "notes": list(self.notes),
            "cluster": self.cluster,
            "allreduce_exposed_per_iteration": self.allreduce_exposed_per_iteration,
            "tracks": dict(self.tracks),
            "timeline": [asdict(e) for e in self.timeline],
            "engine": {"events": self.events, "tasks": self.tasks, "wall_seconds": self.wall_seconds,
                       "events_per_second": self.events_per_second if self.wall_seconds > 0 else None},
        }
        return d


def cost_model(profile) -> CostModel:
    """A CostModel from a CostModel, a Profile, a path or a bundled profile name."""
    return profile if isinstance(profile, CostModel) else CostModel(profile)


def make_cluster(cm: CostModel, nodes: int = 1, devices_per_node: int = 1, *, cluster: Cluster | None = None,
                 **network) -> Cluster:
    """The :class:`~hetsam.cost.cluster.Cluster` ``simulate`` runs on (``cluster`` as given, if any)."""
    if cluster is not None:
        if network or (nodes, devices_per_node) != (1, 1):
            raise HetsamInputError("pass either cluster= or nodes/devices_per_node and network options, not both")
        if not isinstance(cluster, Cluster):
            raise HetsamInputError(f"cluster must be a hetsam.cost.cluster.Cluster, got {type(cluster).__name__}")
        return cluster
    try:
        return Cluster(cm, nodes, devices_per_node, **network)
    except TypeError as exc:  # an unknown keyword
        raise HetsamInputError(f"simulate: {exc}; see hetsam.cost.cluster.Cluster for the network options") from None


def simulate(
    plan: Plan,
    profile,
    iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    *,
    jitter: bool = True,
    timeline_iterations: int = DEFAULT_TIMELINE_ITERATIONS,
    loader_seconds: float = 0.0,
    steady_state: bool = True,
    rel_tol: float = defaults.SIM_REL_TOL,
    nodes: int = 1,
    devices_per_node: int = 1,
    **network,
) -> SimResult:
    """Simulate ``iterations`` training iterations of ``plan`` on the machine ``profile`` describes.

    Args:
        plan: a :class:`~hetsam.planning.plan.Plan` (or a dict in its JSON form).
        profile: a CostModel, a Profile, a profile path, or a bundled profile name.
        iterations: how many iterations to predict (e.g. 78,200 for 200 CIFAR-10 epochs at 128).
        seed: seeds the jitter and RST's coin; equal seeds give equal results.
        jitter: draw each gradient time from the measured spread (False: use the medians).
        timeline_iterations: how many leading iterations to keep in ``timeline``.
        loader_seconds: data-loading seconds per step on the descent side (see ``model.py``).
        steady_state: stop once the 95% confidence interval of the mean iteration time is
            within ``rel_tol`` of it (batch means) and extrapolate the rest.
        nodes, devices_per_node: N and G of a data-parallel job (n = N·G ranks; ``model.py``
            says how one representative rank and the network stand for all of them, and
            ``hetsam.cost.network`` gives the ring all-reduce and DDP bucket model). N = G = 1 is
            the single-process simulation, exactly.
        **network: the other arguments of :class:`hetsam.cost.cluster.Cluster`
            (``sockets_per_node``, ``intra_node_bandwidth``, ``inter_node_bandwidth`` in bytes/s,
            ``intra_node_latency``, ``inter_node_latency`` in seconds, ``bucket_cap_mb``,
            ``first_bucket_mb``, ``backward_fraction``), or ``cluster=`` a ready Cluster.

    Raises:
        HetsamInputError: a device the profile lacks, a non-positive iteration count, ...
    """
    if isinstance(plan, dict):
        plan = Plan.from_dict(plan)
    if not isinstance(plan, Plan):
        raise HetsamInputError(f"plan must be a hetsam.Plan or a dict, got {type(plan).__name__}")
    plan.validate()
    n_total = _checks.integer(iterations, "iterations", low=1, high=MAX_ITERATIONS)
    _checks.integer(seed, "seed", low=-(2**63), high=2**63 - 1)
    _checks.integer(timeline_iterations, "timeline_iterations", low=0, high=MAX_TIMELINE_ITERATIONS)
    _checks.number(rel_tol, "rel_tol", low=0.0, high=1.0, low_open=True, high_open=True)
    _checks.number(loader_seconds, "loader_seconds", low=0.0, high=3600.0)
    cm = cost_model(profile)
    cluster = make_cluster(cm, nodes, devices_per_node, **network)

    engine = Engine(record_until_iteration=timeline_iterations)
    tau = plan.spec.staleness(plan)
    warmup = warmup_iterations(tau)
    stats = BatchMeans(warmup, min_batch=8 * (tau + 1), rel_tol=rel_tol)
    log = _Log(warmup, seed)

    def on_step(t: int, task) -> None:
        converged = stats.add(log.add(task.end, task.wait))
        if log.n >= n_total or (steady_state and converged):
            engine.stopped = True

    workload = Workload(plan, cm, engine, jitter=jitter, seed=seed, loader_seconds=loader_seconds, on_step=on_step,
                        cluster=cluster)
    t0 = time.perf_counter()
    workload.start()
    engine.run()
    wall = time.perf_counter() - t0
    return _result(plan, workload, engine, log, stats, n_total, warmup, wall,
                   seed=seed, jitter=jitter, loader_seconds=float(loader_seconds))


class _Log:
    """Iteration times and descent waits in constant memory: exact sums (all, and after the
    warm-up), and up to ``_KEEP`` times for the percentiles (a seeded uniform sample beyond)."""

    def __init__(self, warmup: int, seed: int):
        self.warmup, self.n, self.last = warmup, 0, 0.0
        self.total = self.steady_total = self.wait_total = self.steady_wait = 0.0
        self.kept: list[float] = []
        self._rng = random.Random(f"hetsam.simulator.sample:{seed}")

    def add(self, end: float, wait: float) -> float:
        x, self.last = end - self.last, end
        self.n += 1
        self.total += x
        self.wait_total += wait
        if self.n > self.warmup:
            self.steady_total += x
            self.steady_wait += wait
        if self.n <= self.warmup or self.n - self.warmup <= _KEEP:
            self.kept.append(x)
        else:  # reservoir sampling of the steady-state times (Algorithm R)
            j = self._rng.randrange(self.n - self.warmup)
            if j < _KEEP:
                self.kept[self.warmup + j] = x
        return x


def _result(plan, workload, engine, log, stats, n_total, warmup, wall, **meta) -> SimResult:
    n = log.n
    end = engine.now
    extrapolated = n < n_total
    steady_n = n - warmup
    if extrapolated:
        mean_x = stats.mean
        mean_w = log.steady_wait / steady_n
        total = log.total + (n_total - n) * mean_x
        wait_total = log.wait_total + (n_total - n) * mean_w
        s = stats.summary()
        note = (f"simulated {n} of {n_total} iterations; the steady-state mean is known to "
                f"±{100 * s['relative_halfwidth']:.2f}% (95% CI, batch means), so the remaining "
                f"{n_total - n} were extrapolated with it")
    else:
        total = log.total
        wait_total = log.wait_total
        note = f"simulated all {n} iterations"
    sample = sorted(log.kept[warmup:] if steady_n >= 20 else log.kept)
    mean = total / n_total
    b = workload.b
    utilisation = {name: (res.busy_at(end) / end if end > 0 else 0.0) for name, res in workload.device_roles().items()}
    links = {name: (res.busy_at(end) / end if end > 0 else 0.0) for name, res in workload.links().items()}
    labels = workload.track_labels()
    tracks = {r.name: labels.get(r, "") for r in engine.resources}
    return SimResult(
        plan=plan, batch_size=b, iterations=n_total, simulated_iterations=n, extrapolated=extrapolated, note=note,
        iteration_seconds={"mean": mean, "p05": quantile(sample, 0.05), "p50": quantile(sample, 0.50),
                           "p95": quantile(sample, 0.95)},
        total_seconds=total, samples_per_second=b / mean if mean > 0 else math.inf,
        utilisation=utilisation, link_utilisation=links,
        descent_wait_seconds=wait_total, descent_wait_per_iteration=wait_total / n_total,
        steady_state=_steady(stats), timeline=_timeline(engine),
        tracks=tracks, events=engine.events, tasks=engine.tasks, wall_seconds=wall,
        notes=_notes(workload), **meta,
        cluster=_cluster(workload),
        allreduce_exposed_per_iteration=workload.exposed[0] / workload.exposed[1] if workload.exposed[1] else 0.0,
    )


def _notes(workload) -> list[str]:
    """The workload's notes, then how the cost model derived the devices this plan runs on (a
    shared cost model also holds the pools that other plans, such as the planner's, asked for)."""
    used = workload.device_roles()
    return list(workload.notes) + [f"{k}: {v}" for k, v in workload.cm.derivations.items() if k in used]


def _cluster(workload) -> dict | None:
    c = workload.cluster
    if c is None:
        return None
    d = c.to_dict(workload.descent, workload.cm.parameter_bytes, workload.allreduce_ranks)
    d["describe"] = c.describe(workload.descent, workload.cm.parameter_bytes, workload.allreduce_ranks)
    d["sampa_pairs"] = workload.pairs
    return d


def _steady(stats: BatchMeans) -> dict:
    s = stats.summary()
    s["converged"] = s["relative_halfwidth"] is not None and s["relative_halfwidth"] <= stats.rel_tol
    return s


def _timeline(engine: Engine) -> list[TimelineEvent]:
    out: list[TimelineEvent] = []
    for res, name, category, start, end, iteration, tail, wait, ready, work in engine.records:
        track = res.name
        if wait > 0.0:
            out.append(TimelineEvent(track, "wait for ĝ", "wait", ready - wait, wait, iteration))
        dur = end - start
        if tail > 0.0 and work > 0.0:
            upd = dur * tail / work  # the update's share, at the task's average rate
            out.append(TimelineEvent(track, name, category, start, dur - upd, iteration))
            out.append(TimelineEvent(track, "update", "update", start + dur - upd, upd, iteration))
        else:
            out.append(TimelineEvent(track, name, category, start, dur, iteration))
    out.sort(key=lambda e: (e.start, e.track))
    return out
