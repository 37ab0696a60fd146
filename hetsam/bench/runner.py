"""``hetsam bench``'s measuring logic: strategies side by side on this machine, next to the simulator.

:func:`default_arrangements` names what is compared (README, "Measuring": ratios taken side by
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
slow drifts of the machine hit all of them alike. When the rounds would end sooner than
``min_seconds`` (at the arrangements' warm-up speed), more rounds are run, as
``torch.utils.benchmark``'s ``blocked_autorange`` runs more blocks until ``min_run_time``; the
turns stay short. Measured on the MLP at b = 64 (2 ms steps): 5 rounds of 0.25 s turns gave
errors relative to SGD with 90% intervals of about ±30% and judged no row; 30 rounds of 10-step
turns gave about ±4% and judged 5 of 7 (the machine drifts between turns more than within them).
Each turn begins with ``turn_warmup`` untimed steps: the first steps after a switch restart the
parked worker and resize the OpenMP team (measured on the MLP at b = 64: SAMPa's first two
steps of a turn took 7.9 and 4.3 ms against 3.1 ms after them; AsyncSAM's on two pools, medians
of 30 turns, 4.03, 4.63, 3.30 and 3.12 ms against 2.97 ms from the 21st step on, so the default
leaves out four). Per arrangement it keeps every step's wall
time and reports the median and the interquartile range (flagged when wide), and the
executor's descent wait per step. Between its turns an arrangement's worker thread is parked
(:meth:`~hetsam.execution.threads.ThreadedExecutor.park`): an idle worker's OpenMP team would
otherwise slow every two-thread arrangement measured after it. RST mixes two kinds of steps, so a median of its steps
would mean nothing: its SGD and SAM steps are timed apart and it reports
``(1 − p)·median(SGD steps) + p·median(SAM steps)``, its expected step time at p (for any strategy whose spec says ``mixed_steps``).

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
strategies. :func:`hetsam.execution.allocator.apply_policy` (the profiler and AutoSAM do the same; ``--system-malloc`` opts out)
stops glibc from handing freed activations back to the kernel after every step: otherwise a
ResNet-20 step at b = 64 re-faults about 80 MB (about 20,000 minor page faults), which costs
up to 40% of the step, and how much depends on the process's allocation history.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence

from hetsam import _checks
from hetsam import defaults as D
from hetsam.bench.arrangements import Arrangement, socket0_halves
from hetsam.bench.results import BenchReport, BenchResult
from hetsam.errors import HetsamInputError
from hetsam.profiling.load import LoadMeter
from hetsam.profiling.merge import median_profile
from hetsam.profiling.stats import median
from hetsam.strategies import SGD

__all__ = ["run_bench", "predict", "probe_profile", "MAX_BENCH_BATCH"]

MAX_BENCH_BATCH = 65536  # the largest batch the bench runs (each step allocates activations for it)
_WIDE_SPREAD = 0.10  # IQR / median above which a result is flagged
_BUSY = 0.10  # other processes' share of the CPUs above which the report warns
_SPEED_PROBE = 3  # untimed steps per arrangement that size the rounds for min_seconds


def predict(arrangement: Arrangement, profile, *, iterations: int = 2000, seed: int = 0) -> dict:
    """The simulator's prediction for an arrangement on ``profile``: its typical step
    (``hetsam.simulator.typical_step``), the centre the measured medians estimate."""
    from hetsam.simulator import simulate, typical_step

    p = arrangement.plan
    if arrangement.executor_options.get("share") == "concurrent" and p.spec.uses_executor:
        from hetsam.hardware.names import parse_device

        if parse_device(p.descent_device).overlaps(parse_device(p.effective_ascent_device)):
            return {}  # the simulator models shared devices as time-sliced only
    r = simulate(arrangement.plan, profile, iterations=iterations, seed=seed)
    step = typical_step(arrangement.plan, profile, iterations=iterations, seed=seed)
    return {"iteration_seconds": step.seconds, "p50": r.iteration_seconds["p50"], "mean": r.iteration_seconds["mean"],
            "descent_wait_per_iteration": r.descent_wait_per_iteration}


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
    min_seconds: float = D.BENCH_MIN_SECONDS,
    turn_warmup: int = D.BENCH_TURN_WARMUP,
) -> BenchReport:
    """Measure each arrangement in interleaved rounds (module docstring); simulate it on
    ``profile`` (a Profile, CostModel or path) when one is given, or on the median of the
    profiles ``profile_probe()`` returns at the start of each round. ``quiet_seconds``: before
    each round, wait up to that long for the other processes to go quiet; ``max_other_load``:
    a round during which other processes used more than that share of the CPUs is measured
    again (at most ``rounds`` times in all); ``min_seconds``: more rounds (up to
    ``defaults.BENCH_MAX_AUTO_ROUNDS``) when ``rounds`` would take less than this many seconds; ``turn_warmup``:
    untimed steps at the start of each turn."""
    import torch

    from hetsam.autosam import AutoSAM
    from hetsam.profiling.models import reference_model

    _checks.integer(steps, "steps", low=1, high=100_000)
    _checks.integer(rounds, "rounds", low=1, high=10_000)
    _checks.integer(batch_size, "batch_size", low=1, high=MAX_BENCH_BATCH)
    _checks.integer(warmup, "warmup", low=0, high=100_000)
    _checks.number(min_seconds, "min_seconds", low=0.0, high=86_400.0)
    _checks.integer(turn_warmup, "turn_warmup", low=0, high=100_000)
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
            # total_steps: a schedule over the planned steps (late-phase SAM) spans the bench's own,
            # so that both kinds of steps are timed
            opt = AutoSAM(copy.deepcopy(initial), ref.loss_fn, torch.optim.SGD, rho=0.05, plan=a.plan, executor=executor,
                          seed=seed, total_steps=warmup + rounds * steps, log=lambda line: None, lr=0.05,
                          momentum=0.9, weight_decay=5e-4)
            opts.append(opt)
            streams.append(_Stream(opt, data))
        step_estimates = []
        for a, s in zip(arrangements, streams):
            say(f"warming up {a.label}")
            s.run(warmup)
            while s.opt.executor is not None and s.opt.executor.describe().get("mode") == "measuring":
                s.run(1)  # share="auto" on a shared device: let it choose before the timed rounds
            if min_seconds > 0:
                step_estimates.append(median(s.run(_SPEED_PROBE)[0]))
            s.park()
        planned = _rounds_for(rounds, steps + turn_warmup, step_estimates, min_seconds)
        if planned > rounds:
            say(f"{planned} rounds, to measure for at least {min_seconds:g} s")
        for s in streams:
            s.opt.total_steps = s.taken + planned * (steps + turn_warmup)  # a run-long schedule (late-phase) spans the timed steps
        rounds_asked, rounds = rounds, planned
        times = [[] for _ in arrangements]
        kinds = [[] for _ in arrangements]
        medians = [[] for _ in arrangements]
        counters = [[0.0, 0.0, 0.0] for _ in arrangements]
        load = []
        meter = LoadMeter()
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
                s.run(turn_warmup)
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
                medians[i].append(median(ts))
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
            results.append(BenchResult(a, times[i], kinds[i] if a.plan.spec.mixed_steps else None, medians[i],
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
        from hetsam.profiling.schema import load_profile

        prof = profile.profile if isinstance(profile, CostModel) else load_profile(profile)
        used = {k: v for k, v in prof.to_dict().items() if k != "provenance"}
        notes += _drift_note(results, prof)
        _state_margins(results, profile if isinstance(profile, CostModel) else CostModel(prof))
    if rounds > rounds_asked:
        notes.append(f"{rounds} rounds instead of {rounds_asked}: the rounds would have taken less than {min_seconds:g} s")
    return BenchReport(results, model, batch_size, steps, rounds, load, profile_source, notes, used)


def _rounds_for(rounds: int, turn_steps: int, step_seconds: Sequence[float], min_seconds: float) -> int:
    """``rounds``, or enough rounds of ``turn_steps`` steps of each arrangement (at ``step_seconds``
    each) to last ``min_seconds``, at most ``defaults.BENCH_MAX_AUTO_ROUNDS``."""
    round_seconds = turn_steps * sum(step_seconds)
    if min_seconds <= 0 or not step_seconds or rounds >= D.BENCH_MAX_AUTO_ROUNDS:
        return rounds
    return max(rounds, min(D.BENCH_MAX_AUTO_ROUNDS, math.ceil(min_seconds / max(round_seconds, 1e-9))))


def probe_profile(model: str, batch_size: int, *, devices: Sequence[str] | None = None, repeats: int = 5,
                  contention: bool = True) -> Callable[[], object]:
    """A ``profile_probe`` for :func:`run_bench`: a short profile of ``model`` at b/4 and b
    (the batches the default arrangements use) on ``devices`` (default: every core and the
    first pool of socket 0's halves)."""
    from hetsam.autosam import time_step_costs
    from hetsam.profiling.measure import profile
    from hetsam.profiling.models import reference_model

    ref = reference_model(model)
    pools = socket0_halves()
    if devices is None:
        devices = ["cpu:0"] + ([pools[0]] if pools else [])
    ladder = sorted({max(1, batch_size // 4), batch_size})
    pairs = [pools] if contention and pools else False
    net = ref.build()
    batch = ref.sample_batch(batch_size)

    def run():
        prof = profile(net, ref.loss_fn, batch, list(devices), batch_sizes=ladder, warmup=1, repeats=repeats,
                       contention=pairs, name=ref.name, progress=False)
        return time_step_costs(prof, net, ref.loss_fn, batch)

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
        self.mixed = opt.plan.spec.mixed_steps  # two kinds of steps, timed apart
        self.taken = 0  # steps run so far, warm-up included

    def run(self, n: int) -> tuple[list[float], list[str]]:
        """Seconds of each of ``n`` steps, and for a mixed strategy which kind each step was."""
        out, kinds = [], []
        self.taken += n
        for _ in range(n):
            batch = next(self.batches)
            sam_before = self.opt.stats()["sam_steps"] if self.mixed else 0
            start = time.perf_counter()
            float(self.opt.step(batch))  # a host sync: the step's device work is in its time
            out.append(time.perf_counter() - start)
            if self.mixed:
                kinds.append("ascent" if self.opt.stats()["sam_steps"] > sam_before else "plain")
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


def _state_margins(results: list[BenchResult], cm) -> None:
    """Each result's ± on its ratio to SGD as ``hetsam plan`` states it (None where none is)."""
    from hetsam.planning.objective import margin, ratio_uncertainty

    base = next((r for r in results if r.arrangement.label == SGD), None)
    for res in results:
        if base is not None and res is not base:
            u = ratio_uncertainty(cm, res.arrangement.plan, base.arrangement.plan.descent_device)
            res.stated = margin(u) if u is not None else None


def _drift_note(results: list[BenchResult], prof) -> list[str]:
    """A note when SGD, the one-gradient baseline, ran >5% off the profile: the machine's speed has
    drifted since it was profiled (a shared machine's does by tens of percent over minutes), and
    every absolute error carries that drift; the errors relative to SGD carry only its part that
    differs between devices (a 2-vCPU VM's pool against its socket moved by 20–31% between two quiet
    profiles ten minutes apart, docs/architecture.md)."""
    import datetime as _dt

    base = next((r for r in results if r.arrangement.label == SGD), None)
    if base is None or base.relative_error is None or abs(base.relative_error) <= 0.05:
        return []
    age = ""
    try:
        taken = _dt.datetime.fromisoformat(str(prof.provenance.get("date")))
        minutes = round((_dt.datetime.now(_dt.timezone.utc) - taken).total_seconds() / 60)
        age = f" {minutes} minute{'' if minutes == 1 else 's'} ago"
    except (TypeError, ValueError):
        pass
    way = "slower" if base.relative_error > 0 else "faster"
    return [f"SGD ran {abs(base.relative_error):.0%} {way} than the profile predicts (profiled{age}): this machine's speed "
            "has drifted since, and every absolute error carries that drift; the errors relative to SGD leave out a drift "
            "that moves every device alike, not one between a pool and its socket (--interleave-profile profiles within "
            "the rounds instead)"]
