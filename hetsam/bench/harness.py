"""``hetsam bench``'s measuring logic: strategies side by side on this machine, next to the simulator.

:func:`default_arrangements` names what is compared (DESIGN.md section 7: ratios taken side by
side in one run, medians):

- ``sgd`` and ``sam`` on every core (the baselines);
- ``async_sam pools``: the descent on one half of socket 0's cores, the ascent on the other
  half (``cpu:0[0]`` and ``cpu:0[1]`` on two cores), b' = b/4, τ = 1, lookahead;
- ``async_sam time-sliced``: both roles on every core (``cpu``), b' = b/4: the threaded
  executor runs the two gradients one after the other on the calling thread;
- ``sampa pools``: g_x on one pool, g_y' on the other, λ = 0.2;
- ``rst``: p = 0.5 on every core;
- the planner's plan for the profile (or a plan you give).

:func:`run_bench` builds one :class:`hetsam.AutoSAM` (``executor="threads"``) per arrangement,
each on its own copy of the same initial model, warms each up, then runs *rounds*: in every
round each arrangement takes ``steps`` timed steps, in the same order (A B C … A B C …), so
slow drifts of the machine hit all of them alike. Per arrangement it keeps every step's wall
time and reports the median and the interquartile range (flagged when wide), and the
executor's descent wait per step. Between its turns an arrangement's worker thread is parked
(:meth:`~hetsam.execution.threads.ThreadedExecutor.park`): an idle worker's OpenMP team would
otherwise slow every two-thread arrangement measured after it. RST mixes two kinds of steps, so a median of its steps
would mean nothing: its SGD and SAM steps are timed apart and it reports
``(1 − p)·median(SGD steps) + p·median(SAM steps)``, its expected step time at p.

Load from other processes is measured during each round (CPU time of the whole machine minus
this process's, through psutil) and reported; ``quiet_seconds`` makes each round first wait
(up to that long) for a second in which other processes use under 5% of the CPUs. On a
shared machine a multi-threaded OpenMP team is hit much harder by a competing process than
one thread is (every parallel region waits for its slowest thread), so noisy rounds distort
the comparison between arrangements, not just their absolute times.

Each entry is also simulated with :func:`hetsam.simulator.simulate` on a profile of this
machine: ``predicted_iteration_seconds`` and ``relative_error = measured / predicted − 1``.
The speed of a shared (virtual) machine drifts by tens of percent over minutes, and the glibc
allocator's page faults vary with a process's history, so a profile taken at another time or
in another process is compared with a different machine. ``profile_probe`` fixes that: it is
called at the start of every round, in the bench's own process, and the predictions use the
per-point medians of those profiles (:func:`median_profile`), measured side by side with the
strategies. :func:`retain_freed_memory` (what ``hetsam bench`` does unless ``--system-malloc``)
stops glibc from handing freed activations back to the kernel after every step: otherwise a
ResNet-20 step at b = 64 re-faults about 80 MB (about 20,000 minor page faults), which costs
up to 40% of the step, and how much depends on the process's allocation history.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from hetsam.hardware.names import format_cpulist
from hetsam.errors import HetsamInputError
from hetsam.planning.plan import Plan

__all__ = ["Arrangement", "BenchResult", "BenchReport", "default_arrangements", "run_bench", "predict", "format_report",
           "median_profile", "probe_profile", "retain_freed_memory", "fitted_pool_arrangement", "wait_quiet"]

_WIDE_SPREAD = 0.10  # IQR / median above which a result is flagged
_BUSY = 0.10  # other processes' share of the CPUs above which the report warns


@dataclass
class Arrangement:
    """One thing to measure: a label, the plan AutoSAM runs, and options of its executor."""

    label: str
    plan: Plan
    executor_options: dict = field(default_factory=dict)


@dataclass
class BenchResult:
    """Measurements of one arrangement; seconds throughout."""

    arrangement: Arrangement
    step_seconds: list[float]  # every timed step, all rounds, in order
    step_kinds: list[str] | None  # RST: "sgd" or "sam" per timed step; None for the others
    round_medians: list[float]
    wait_seconds: float  # total descent wait over the timed steps
    inline_seconds: float  # total time the descent thread computed ascent jobs itself
    copy_seconds: float  # total time spent taking snapshots
    mode: str | None  # the executor's mode (worker, time-sliced), None without an executor
    predicted: dict | None = None  # the simulator's prediction (iteration_seconds, descent_wait_per_iteration)

    def _by_kind(self, fn) -> float:
        """``fn`` of the steps; for RST (1 − p)·fn(SGD steps) + p·fn(SAM steps)."""
        if self.step_kinds is None:
            return fn(self.step_seconds)
        p = self.arrangement.plan.probability
        parts = {k: [t for t, kind in zip(self.step_seconds, self.step_kinds) if kind == k] for k in ("sgd", "sam")}
        if not parts["sgd"] or not parts["sam"]:  # too few steps to see both kinds
            return fn(self.step_seconds)
        return (1.0 - p) * fn(parts["sgd"]) + p * fn(parts["sam"])

    @property
    def median(self) -> float:
        return self._by_kind(statistics.median)

    @property
    def iqr(self) -> float:
        return self._by_kind(_iqr)

    @property
    def wait_per_step(self) -> float:
        return self.wait_seconds / len(self.step_seconds)

    @property
    def predicted_seconds(self) -> float | None:
        return None if self.predicted is None else self.predicted["iteration_seconds"]

    @property
    def relative_error(self) -> float | None:
        p = self.predicted_seconds
        return None if p is None else self.median / p - 1.0

    def to_dict(self, sgd: float | None = None, sam: float | None = None) -> dict:
        p = self.arrangement.plan
        return {
            "strategy": p.strategy,
            "label": self.arrangement.label,
            "plan": p.to_dict(),
            "executor_mode": self.mode,
            "measured_iteration_seconds": self.median,
            "iqr_seconds": self.iqr,
            "round_medians": self.round_medians,
            "steps": len(self.step_seconds),
            "descent_wait_seconds": self.wait_per_step,
            "descent_wait_fraction": self.wait_per_step / self.median,
            "inline_ascent_seconds": self.inline_seconds / len(self.step_seconds),
            "snapshot_copy_seconds": self.copy_seconds / len(self.step_seconds),
            "throughput_vs_sgd": None if sgd is None else sgd / self.median,
            "throughput_vs_sam": None if sam is None else sam / self.median,
            "predicted_iteration_seconds": self.predicted_seconds,
            "predicted_descent_wait_seconds": None if self.predicted is None else self.predicted["descent_wait_per_iteration"],
            "relative_error": self.relative_error,
        }


@dataclass
class BenchReport:
    """All results plus the conditions they were taken in."""

    results: list[BenchResult]
    model: str
    batch_size: int
    steps: int
    rounds: int
    other_load: list[float]  # per round: other processes' share of the usable CPUs
    profile_source: str | None = None
    notes: list[str] = field(default_factory=list)
    profile_used: dict | None = None  # the measurements the predictions came from (no provenance)

    def _baseline(self, strategy: str) -> float | None:
        for r in self.results:
            if r.arrangement.label == strategy:
                return r.median
        return None

    def to_dict(self) -> dict:
        sgd, sam = self._baseline("sgd"), self._baseline("sam")
        errors = [abs(r.relative_error) for r in self.results if r.relative_error is not None]
        return {
            "model": self.model,
            "batch_size": self.batch_size,
            "steps_per_round": self.steps,
            "rounds": self.rounds,
            "other_load_per_round": self.other_load,
            "profile": self.profile_source,
            "profile_used": self.profile_used,
            "results": [r.to_dict(sgd, sam) for r in self.results],
            "simulator_error": None if not errors else {"median_abs": statistics.median(errors), "max_abs": max(errors)},
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------
def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def _socket0_halves() -> tuple[str, str] | None:
    """Two disjoint pools of socket 0: its first and its second half of usable cores."""
    from hetsam.hardware.detect import detect_cpus

    sockets = [d for d in detect_cpus() if d.id == "cpu:0" and d.cpus]
    if not sockets:
        return None
    n = sockets[0].cores if isinstance(sockets[0].cores, int) else len(sockets[0].cpus)
    n = min(n, len(sockets[0].cpus))
    if n < 2:
        return None
    half = n // 2
    return f"cpu:0[{format_cpulist(range(half))}]", f"cpu:0[{format_cpulist(range(half, n))}]"


def default_arrangements(batch_size: int, *, pools: tuple[str, str] | None | bool = True) -> list[Arrangement]:
    """The strategies ``hetsam bench`` compares (module docstring); ``pools=None`` leaves out
    the two-pool ones (a one-core machine), ``True`` finds socket 0's halves."""
    b, bp = batch_size, max(1, batch_size // 4)
    if pools is True:
        pools = _socket0_halves()
    out = [
        Arrangement("sgd", Plan("sgd", descent_device="cpu", batch_size=b)),
        Arrangement("sam", Plan("sam", descent_device="cpu", batch_size=b)),
    ]
    if pools:
        d, a = pools
        out.append(Arrangement("async_sam pools", Plan("async_sam", descent_device=d, ascent_device=a, batch_size=b,
                                                       ascent_batch_size=bp, staleness=1)))
    out.append(Arrangement("async_sam time-sliced", Plan("async_sam", descent_device="cpu", ascent_device="cpu",
                                                         batch_size=b, ascent_batch_size=bp, staleness=1),
                           {"share": "time-slice"}))
    if pools:
        d, a = pools
        out.append(Arrangement("sampa pools", Plan("sampa", descent_device=d, ascent_device=a, batch_size=b)))
    out.append(Arrangement("rst", Plan("rst", descent_device="cpu", batch_size=b, sam_probability=0.5)))
    return out


def predict(arrangement: Arrangement, profile, *, iterations: int = 2000, seed: int = 0) -> dict:
    """The simulator's prediction for an arrangement on ``profile``."""
    from hetsam.simulator import simulate

    if arrangement.executor_options.get("share") == "concurrent" and arrangement.plan.strategy in ("async_sam", "sampa"):
        from hetsam.hardware.names import parse_device

        p = arrangement.plan
        if parse_device(p.descent_device).overlaps(parse_device(p.effective_ascent_device)):
            return {}  # the simulator models shared devices as time-sliced only
    r = simulate(arrangement.plan, profile, iterations=iterations, seed=seed)
    return {"iteration_seconds": r.iteration_seconds["mean"], "p50": r.iteration_seconds["p50"],
            "descent_wait_per_iteration": r.descent_wait_per_iteration}


class _LoadMeter:
    """Other processes' share of the usable CPUs between ``start`` and ``stop``."""

    def __init__(self) -> None:
        try:
            import psutil

            self._psutil = psutil
            self._me = psutil.Process()
        except Exception:  # noqa: BLE001 - a missing probe only loses the load column
            self._psutil = None
        self._cpus = len(os.sched_getaffinity(0))

    def _sample(self):
        if self._psutil is None:
            return None
        t = self._psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        mine = self._me.cpu_times()
        return time.perf_counter(), busy, mine.user + mine.system

    def start(self) -> None:
        self._t0 = self._sample()

    def wait_quiet(self, limit: float, threshold: float = 0.05, window: float = 1.0) -> bool:
        """Wait (up to ``limit`` seconds) for a ``window`` in which other processes use less
        than ``threshold`` of the CPUs; returns whether one came."""
        deadline = time.perf_counter() + limit
        while True:
            self.start()
            time.sleep(window)
            share = self.stop()
            if share is None or share < threshold:
                return True
            if time.perf_counter() >= deadline:
                return False

    def stop(self) -> float | None:
        t1 = self._sample()
        if self._t0 is None or t1 is None:
            return None
        wall = t1[0] - self._t0[0]
        machine = os.cpu_count() or self._cpus
        other = (t1[1] - self._t0[1]) - (t1[2] - self._t0[2])
        return max(0.0, other) / (wall * min(machine, self._cpus)) if wall > 0 else None


def wait_quiet(limit: float) -> bool:
    """Wait up to ``limit`` seconds for a second in which other processes use < 5% of the CPUs."""
    return _LoadMeter().wait_quiet(limit)


def _batches(ref, batch_size: int, count: int) -> list:
    return [ref.sample_batch(batch_size, seed=i) for i in range(count)]


def run_bench(
    arrangements: Sequence[Arrangement],
    *,
    model: str = "resnet20",
    batch_size: int = 64,
    steps: int = 10,
    rounds: int = 5,
    warmup: int = 3,
    profile=None,
    profile_source: str | None = None,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    quiet_seconds: float = 0.0,
    profile_probe: Callable[[], object] | None = None,
    max_other_load: float | None = None,
) -> BenchReport:
    """Measure each arrangement in interleaved rounds (module docstring); simulate it on
    ``profile`` (a Profile, CostModel or path) when one is given, or on the median of the
    profiles ``profile_probe()`` returns at the start of each round. ``quiet_seconds``: before
    each round, wait up to that long for the other processes to go quiet; ``max_other_load``:
    a round during which other processes used more than that share of the CPUs is measured
    again (at most ``rounds`` times in all)."""
    import torch

    from hetsam.autosam.optimizer import AutoSAM
    from hetsam.profiling.models import reference_model

    for name, value in (("steps", steps), ("rounds", rounds), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HetsamInputError(f"{name}={value!r} must be a positive integer")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise HetsamInputError(f"warmup={warmup!r} must be an integer >= 0")
    labels = [a.label for a in arrangements]
    if len(set(labels)) != len(labels):
        raise HetsamInputError(f"arrangement labels must be unique, got {labels}")
    ref = reference_model(model)
    torch.manual_seed(seed)
    initial = ref.build()
    data = _batches(ref, batch_size, 8)
    say = progress or (lambda line: None)

    opts, streams = [], []
    try:
        for a in arrangements:
            if a.plan.batch_size not in (None, batch_size):
                raise HetsamInputError(f"{a.label}: the plan's batch_size {a.plan.batch_size} differs from --batch-size {batch_size}")
            executor = _executor(a)
            opt = AutoSAM(copy.deepcopy(initial), ref.loss_fn, torch.optim.SGD, rho=0.05, plan=a.plan, executor=executor,
                          seed=seed, lr=0.05, momentum=0.9, weight_decay=5e-4)
            opts.append(opt)
            streams.append(_Stream(opt, data))
        for a, s in zip(arrangements, streams):
            say(f"warming up {a.label}")
            s.run(warmup)
            while s.opt.executor is not None and s.opt.executor.describe().get("mode") == "measuring":
                s.run(1)  # share="auto" on a shared device: let it choose before the timed rounds
            s.park()
        times = [[] for _ in arrangements]
        kinds = [[] for _ in arrangements]
        medians = [[] for _ in arrangements]
        counters = [[0.0, 0.0, 0.0] for _ in arrangements]
        load = []
        meter = _LoadMeter()
        noisy_starts = discarded = 0
        probes = []
        r = 0
        while r < rounds:
            if quiet_seconds > 0 and not meter.wait_quiet(quiet_seconds):
                noisy_starts += 1
            meter.start()
            probe = None
            if profile_probe is not None:
                say(f"round {r + 1}/{rounds}: profiling")
                probe = profile_probe()
            measured = []
            for a, s in zip(arrangements, streams):
                say(f"round {r + 1}/{rounds}: {a.label}")
                before = s.counters()
                ts, ks = s.run(steps)
                measured.append((ts, ks, [y - x for x, y in zip(before, s.counters())]))
                s.park()
            share = meter.stop()
            if share is not None and max_other_load is not None and share > max_other_load and discarded < rounds:
                discarded += 1  # measure this round again
                say(f"round {r + 1}/{rounds} discarded: other processes used {share:.0%} of the CPUs")
                continue
            for i, (ts, ks, deltas) in enumerate(measured):
                times[i] += ts
                kinds[i] += ks
                medians[i].append(statistics.median(ts))
                for k in range(3):
                    counters[i][k] += deltas[k]
            if probe is not None:
                probes.append(probe)
            if share is not None:
                load.append(share)
            r += 1
        results = []
        for i, (a, opt) in enumerate(zip(arrangements, opts)):
            ex = opt.executor
            mode = None if ex is None else ex.describe().get("mode", ex.name)
            results.append(BenchResult(a, times[i], kinds[i] if a.plan.strategy == "rst" else None, medians[i],
                                       *counters[i], mode=mode))
    finally:
        for opt in opts:
            opt.close()

    notes = []
    if probes:
        profile = median_profile(probes)
        profile_source = profile_source or f"median of {len(probes)} profiles measured in the rounds"
    if profile is not None:
        for res in results:
            say(f"simulating {res.arrangement.label}")
            res.predicted = predict(res.arrangement, profile, seed=seed) or None
    for res in results:
        if res.iqr > _WIDE_SPREAD * res.median:
            notes.append(f"{res.arrangement.label}: wide spread (IQR {res.iqr / res.median:.0%} of the median); "
                         "the machine may be busy")
    if discarded:
        notes.append(f"{discarded} round(s) were measured again: other processes used more than "
                     f"{max_other_load:.0%} of the CPUs during them")
    if noisy_starts:
        notes.append(f"{noisy_starts} round(s) started without a quiet second within {quiet_seconds:g} s")
    if load and max(load) > _BUSY:
        notes.append(f"other processes used up to {max(load):.0%} of the CPUs during a round; "
                     "rerun when the machine is quiet")
    used = None
    if profile is not None:
        from hetsam.cost.model import CostModel

        prof = profile.profile if isinstance(profile, CostModel) else _load(profile)
        used = {k: v for k, v in prof.to_dict().items() if k != "provenance"}
    return BenchReport(results, model, batch_size, steps, rounds, load, profile_source, notes, used)


def _load(profile):
    from hetsam.profiling.schema import load_profile

    return load_profile(profile)


def retain_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory in the process (returns False elsewhere).

    ``mallopt``: ``M_MMAP_THRESHOLD`` 32 MiB (blocks below it come from the heap, not from a
    fresh ``mmap`` that the kernel must fault in and zero again after every ``munmap``; setting
    it also stops glibc's dynamic threshold), ``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD``
    256 MiB (the heap is not shrunk after each step). Freed memory then serves the next step's
    tensors without page faults; the cost is a resident set that stays at its peak. Process
    wide; the environment variables ``MALLOC_MMAP_THRESHOLD_`` etc. do the same at start-up.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(k, v) == 1 for k, v in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30),
                                               (m_top_pad, 256 << 20)))


def fitted_pool_arrangement(profile, batch_size: int) -> Arrangement | None:
    """AsyncSAM on socket 0's two halves with the planner's b' for that pair (the largest whose
    ascent fits in a descent step), or None without two pools or such a candidate."""
    from hetsam.planning.search import plan

    pools = _socket0_halves()
    if not pools:
        return None
    report = plan(profile, batch_size=batch_size, strategies=("async_sam",), descent_kind="cpu", simulate=False)
    for c in report.candidates:
        p = c.plan
        if p.strategy == "async_sam" and (p.descent_device, p.ascent_device) == pools:
            p = dataclasses.replace(p, predicted={}, ascent_batches="lookahead")
            return Arrangement(f"async_sam pools b'={p.ascent_size(batch_size)}", p)
    return None


def median_profile(profiles: Sequence) -> "Profile":
    """One profile from several of the same machine and model: per device and batch size the
    median of the medians (and of the spreads), the median update time, link bandwidth and
    latency, and contention slowdown. Points or entries missing from any profile are dropped."""
    from hetsam.profiling.schema import Profile

    dicts = [p.to_dict() for p in profiles]
    out = copy.deepcopy(dicts[0])
    med = statistics.median

    def same(key_fn, items_of):
        index = [{key_fn(x): x for x in items_of(d)} for d in dicts]
        keys = [k for k in index[0] if all(k in ix for ix in index)]
        return keys, index

    keys, index = same(lambda d: d["id"], lambda d: d["devices"])
    devices = []
    for k in keys:
        entries = [ix[k] for ix in index]
        dev = copy.deepcopy(entries[0])
        tables = [e["grad_seconds"] for e in entries]
        sizes = [b for b in tables[0]["batch_sizes"] if all(b in t["batch_sizes"] for t in tables)]
        at = lambda t, field, b: t[field][t["batch_sizes"].index(b)]  # noqa: E731
        dev["grad_seconds"] = {
            "batch_sizes": sizes,
            "median": [med(at(t, "median", b) for t in tables) for b in sizes],
            "spread": [med(at(t, "spread", b) for t in tables) for b in sizes],
            "repeats": sum(t.get("repeats", 0) for t in tables),
        }
        updates = [e.get("update_seconds") for e in entries if e.get("update_seconds") is not None]
        dev["update_seconds"] = med(updates) if updates else None
        devices.append(dev)
    out["devices"] = devices
    keys, index = same(lambda x: (x["src"], x["dst"]), lambda d: d.get("links", []))
    out["links"] = [{**index[0][k], "bytes_per_second": med(ix[k]["bytes_per_second"] for ix in index),
                     "latency_seconds": med(ix[k]["latency_seconds"] for ix in index)} for k in keys]
    keys, index = same(lambda x: tuple(x["devices"]), lambda d: d.get("contention", []))
    out["contention"] = [{"devices": list(k), "slowdown": [med(ix[k]["slowdown"][j] for ix in index) for j in (0, 1)]}
                         for k in keys]
    out["provenance"] = {**dicts[0]["provenance"], "notes": f"median of {len(dicts)} profiles taken between bench rounds"}
    return Profile.from_dict(out, where="median profile")


def probe_profile(model: str, batch_size: int, *, devices: Sequence[str] | None = None, repeats: int = 5,
                  contention: bool = True) -> Callable[[], object]:
    """A ``profile_probe`` for :func:`run_bench`: a short profile of ``model`` at b/4 and b
    (the batches the default arrangements use) on ``devices`` (default: every core and the
    first pool of socket 0's halves)."""
    from hetsam.profiling.models import reference_model
    from hetsam.profiling.measure import profile

    ref = reference_model(model)
    pools = _socket0_halves()
    if devices is None:
        devices = ["cpu:0"] + ([pools[0]] if pools else [])
    ladder = sorted({max(1, batch_size // 4), batch_size})
    pairs = [pools] if contention and pools else False
    net = ref.build()
    batch = ref.sample_batch(batch_size)

    def run():
        return profile(net, ref.loss_fn, batch, list(devices), batch_sizes=ladder, warmup=1, repeats=repeats,
                       contention=pairs, name=ref.name, progress=False)

    return run


def _executor(a: Arrangement):
    if not a.executor_options:
        return "threads"
    from hetsam.execution.threads import ThreadedExecutor

    return ThreadedExecutor(**a.executor_options)


class _Stream:
    """An AutoSAM fed by ``prefetch`` from an endless cycle of batches; times each step."""

    def __init__(self, opt, data: list):
        self.opt = opt
        self.batches = opt.prefetch(itertools.cycle(data))
        self.rst = opt.plan.strategy == "rst"

    def run(self, n: int) -> tuple[list[float], list[str]]:
        """Seconds of each of ``n`` steps, and for RST which kind each step was."""
        out, kinds = [], []
        for _ in range(n):
            batch = next(self.batches)
            sam_before = self.opt.stats()["sam_steps"] if self.rst else 0
            start = time.perf_counter()
            self.opt.step(batch)
            out.append(time.perf_counter() - start)
            if self.rst:
                kinds.append("sam" if self.opt.stats()["sam_steps"] > sam_before else "sgd")
        return out, kinds

    def park(self) -> None:
        """End the worker thread between turns (its OpenMP team would slow the next arrangement)."""
        park = getattr(self.opt.executor, "park", None)
        if park is not None:
            park()

    def counters(self) -> tuple[float, float, float]:
        ex = self.opt.executor
        if ex is None:
            return 0.0, 0.0, 0.0
        return ex.stats.wait_seconds, ex.stats.inline_seconds, ex.stats.copy_seconds


def format_report(report: BenchReport) -> str:
    """An aligned text table of a :class:`BenchReport`, the winner and the conditions."""
    data = report.to_dict()
    head = ("strategy", "plan", "ms/step", "IQR", "vs SGD", "vs SAM", "wait ms", "wait %", "predicted", "error")
    rows = [head]
    for r, res in zip(data["results"], report.results):
        pred = r["predicted_iteration_seconds"]
        rows.append((
            r["label"], res.arrangement.plan.describe(), f"{r['measured_iteration_seconds'] * 1e3:.1f}",
            f"{r['iqr_seconds'] * 1e3:.1f}",
            "-" if r["throughput_vs_sgd"] is None else f"{r['throughput_vs_sgd']:.2f}x",
            "-" if r["throughput_vs_sam"] is None else f"{r['throughput_vs_sam']:.2f}x",
            f"{r['descent_wait_seconds'] * 1e3:.1f}", f"{r['descent_wait_fraction']:.1%}",
            "-" if pred is None else f"{pred * 1e3:.1f}",
            "-" if r["relative_error"] is None else f"{r['relative_error']:+.1%}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [f"{report.model} at batch {report.batch_size}: {report.rounds} interleaved rounds of {report.steps} steps "
           f"per strategy (median and IQR over all timed steps; throughput = SGD's or SAM's median / this median)", ""]
    out += lines
    sam_like = [r for r in data["results"] if r["strategy"] in ("async_sam", "sampa")]
    if sam_like:
        best = min(sam_like, key=lambda r: r["measured_iteration_seconds"])
        out.append("")
        line = f"fastest parallel arrangement here: {best['label']} ({best['measured_iteration_seconds'] * 1e3:.1f} ms/step"
        if best["throughput_vs_sam"] is not None:
            line += f", {best['throughput_vs_sam']:.2f}x SAM's throughput"
        out.append(line + ")")
        asyncs = {r["label"]: r for r in sam_like if r["strategy"] == "async_sam"}
        if "async_sam pools" in asyncs and "async_sam time-sliced" in asyncs:
            p, t = asyncs["async_sam pools"], asyncs["async_sam time-sliced"]
            faster, slower = (t, p) if t["measured_iteration_seconds"] < p["measured_iteration_seconds"] else (p, t)
            out.append(f"AsyncSAM b'={report.batch_size // 4}: {faster['label']} beats {slower['label']} by "
                       f"{slower['measured_iteration_seconds'] / faster['measured_iteration_seconds']:.2f}x")
    err = data["simulator_error"]
    if err is not None:
        out.append(f"simulator: median |error| {err['median_abs']:.1%}, worst {err['max_abs']:.1%} "
                   f"(profile: {report.profile_source})")
    if report.other_load:
        out.append("other processes' CPU share per round: " + ", ".join(f"{x:.0%}" for x in report.other_load))
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)
