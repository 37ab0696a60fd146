"""The batch ladder of every device, measured in interleaved rounds.

A shared machine drifts by tens of percent over minutes. Timing one device's whole ladder and
then the next's would put that drift into the *ratios* the planner lives on (t(b')/t(b), a
pool against its socket). So, as ``hetsam bench`` does with strategies, the points are taken
in rounds: a first turn per device builds its replica (in the device's own thread), warms every
point up and estimates its time; then every round visits every device and every point for a
share of its repeats, devices and points in alternating order (A B … B A …), so slow drift
hits all of them alike. Each point's median and spread come from all its rounds; the spread of
the per-round ratios t(b)/t(B) is kept as the profile's ratio repeatability.

Many short rounds (up to :data:`ROUNDS`) rather than a few long ones: on a shared VM the speed of
the 2-thread socket against a 1-core pool moves from turn to turn (per-turn t(pool)/t(socket) of
0.84–1.86 within a minute, no steal and no other load to see), so the passes of one turn are one
sample of the machine, not many. Each turn starts with an untimed pass at its smallest point: a
pool's turn runs in a fresh thread, and its first pass was 15% slower on a pool (2% on the socket) than
the passes after it. docs/architecture.md ("Measuring and step costs") has the side-by-side runs.

Budget (``hetsam.profiling.budget``): the first turn stops a device's ladder when the next point
would not fit; the rounds then get what is left. Repeats are cut first, then rounds (down to
one), and every cut is noted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from hetsam._progress import Progress
from hetsam.profiling.budget import Clock, DeviceResult, Settings
from hetsam.profiling.ladder import TimedReplica, is_oom, measure_sliced_handoff, measure_step_costs
from hetsam.profiling.stats import Measurement, median
from hetsam.profiling.targets import Target, run_threads

__all__ = ["measure_in_rounds", "ROUNDS"]

ROUNDS = 12  # rounds of timed repeats (fewer when a point gets fewer repeats)
_STEP_COSTS_SHARE = 0.05  # of the devices' time, for the update and the climb
_FIRST_TURN_SHARE = 0.35  # of a device's time: warm-ups and estimates, before the timed rounds


@dataclass
class _Session:
    """One device across its turns: the replica, and every time taken per batch size."""

    target: Target
    ladder: list[int]
    replica: TimedReplica | None = None
    estimate: dict[int, float] = field(default_factory=dict)
    times: dict[int, list[float]] = field(default_factory=dict)
    rounds: list[dict[int, float]] = field(default_factory=list)  # per round: b -> median
    result: DeviceResult = field(default_factory=DeviceResult)

    def first_turn(self, model, loss_fn, batch, settings: Settings, allot: float, clock: Clock,
                   progress: Progress) -> None:
        """Build the replica here (its memory is first touched in this device's thread), then
        warm up each point and estimate its time, until the budget or memory runs out."""
        self.replica = TimedReplica(model, loss_fn, batch, self.target)
        start, points, last = time.perf_counter(), [], None
        for i, b in enumerate(self.ladder):
            left = allot - (time.perf_counter() - start)
            if last is not None and math.isfinite(allot) and last[1] * b / last[0] * (settings.warmup + 1) > left:
                self._note(clock, f"{self.target.id}: skipped batch size(s) {', '.join(map(str, self.ladder[i:]))} (time budget)")
                break
            progress.step(f"{self.target.id}: batch {b} (warm-up)")
            try:
                t_est = math.inf
                for _ in range(max(1, settings.warmup)):
                    t_est = self.replica.time_step(b)
            except Exception as exc:  # noqa: BLE001
                if not is_oom(exc):
                    raise
                self.replica.kind.release()
                self.result.max_batch_size = points[-1] if points else None
                self.result.notes.append(f"{self.target.id}: batch {b} did not fit in memory; ladder stops at {points[-1] if points else 'nothing'}")
                break
            points.append(b)
            self.estimate[b] = t_est
            self.times[b] = []
            last = (b, t_est)
        self.ladder = points

    def timed_round(self, reps: dict[int, int], reverse: bool, progress: Progress) -> None:
        self.replica.step(self.ladder[0])  # untimed: a turn's first pass runs cold (fresh thread)
        medians = {}
        for b in (reversed(self.ladder) if reverse else self.ladder):
            progress.step(f"{self.target.id}: batch {b}")
            ts = [self.replica.time_step(b) for _ in range(reps[b])]
            self.times[b] += ts
            medians[b] = median(ts)
            progress.step(f"{self.target.id}: batch {b}", advance=1)
        self.rounds.append(medians)

    def finish(self, allot: float) -> DeviceResult:
        res = self.result
        for b in self.ladder:
            m = Measurement(self.times[b])
            res.batch_sizes.append(b)
            res.medians.append(m.median)
            res.spreads.append(m.iqr)
            res.repeats.append(len(m))
        if self.ladder:
            res.update_seconds, res.climb_seconds, res.auxiliary_seconds = measure_step_costs(
                self.replica, self._pass_for(0.7 * allot), 0.7 * allot)
            res.sliced_handoff_seconds = measure_sliced_handoff(self.replica, self.ladder[0], min(0.3 * allot, 0.5))
        res.round_medians = list(self.rounds)
        self.replica.release()
        self.replica = None
        return res

    def _pass_for(self, allot: float) -> int:
        """The largest point whose pass fits 10 times into ``allot`` (the step costs are timed
        after passes: ``measure_step_costs``); else the smallest."""
        res = self.result
        fits = [b for b, t in zip(res.batch_sizes, res.medians) if 10 * t <= allot]
        return fits[-1] if fits else self.ladder[0]

    def _note(self, clock: Clock, text: str) -> None:
        self.result.notes.append(text)
        clock.notes.append(text)


def measure_in_rounds(model, loss_fn, batch, targets: list[Target], ladder: list[int], settings: Settings,
                      allot: float, clock: Clock, progress: Progress) -> list[DeviceResult]:
    """Every target's ladder, update and climb (module docstring); results in target order."""
    start = time.perf_counter()
    sessions = [_Session(t, list(ladder)) for t in targets]
    per_device = allot * (1 - _STEP_COSTS_SHARE) / len(sessions) if math.isfinite(allot) else math.inf
    for s in sessions:
        share = per_device * _FIRST_TURN_SHARE if math.isfinite(per_device) else math.inf
        run_threads([(s.target, lambda s=s, share=share: s.first_turn(model, loss_fn, batch, settings, share, clock,
                                                                         progress))])
    live = [s for s in sessions if s.ladder]
    left = allot * (1 - _STEP_COSTS_SHARE) - (time.perf_counter() - start) if math.isfinite(allot) else math.inf
    rounds, reps = _plan_rounds(live, settings, left, clock)
    progress.set_total(sum(len(s.ladder) for s in live) * rounds)
    for r in range(rounds):
        order = live if r % 2 == 0 else live[::-1]
        for s in order:
            run_threads([(s.target, lambda s=s: s.timed_round(reps[s.target.id], r % 2 == 1, progress))])
    step_allot = allot * _STEP_COSTS_SHARE / max(1, len(live)) if math.isfinite(allot) else 1.0
    results = []
    for s in sessions:
        if not s.ladder:
            if s.replica is not None:
                s.replica.release()
            results.append(s.result)
            continue
        results.append(run_threads([(s.target, lambda s=s: s.finish(step_allot))])[0])
    return results


def _plan_rounds(sessions: list[_Session], settings: Settings, left: float, clock: Clock
                 ) -> tuple[int, dict[str, dict[int, int]]]:
    """How many rounds, and the repeats of each point in each round, within ``left`` seconds.

    Each point wants ``settings.wanted(estimate)`` repeats in all (a fixed ``repeats``, or about
    ``target`` seconds); they are spread over up to :data:`ROUNDS` rounds. Over budget, the
    repeats shrink in proportion (at least one per round), then the rounds.
    """
    want = {s.target.id: {b: settings.wanted(s.estimate[b]) for b in s.ladder} for s in sessions}
    if not sessions:
        return 0, {}
    rounds = max(1, min(ROUNDS, min(min(w.values()) for w in want.values())))
    reps = {k: {b: math.ceil(n / rounds) for b, n in w.items()} for k, w in want.items()}

    def cost(rounds, reps):  # per round: each turn's untimed first pass and its timed repeats
        return rounds * sum(s.estimate[s.ladder[0]] + sum(reps[s.target.id][b] * s.estimate[b] for b in s.ladder)
                            for s in sessions)

    if cost(rounds, reps) > left:
        scale = max(0.0, left) / cost(rounds, reps)
        reps = {k: {b: max(1, math.floor(n * scale)) for b, n in r.items()} for k, r in reps.items()}
        while rounds > 1 and cost(rounds, reps) > left:
            rounds -= 1
        fewest = min(rounds * n for r in reps.values() for n in r.values())
        clock.notes.append(f"{rounds} round(s) of repeats, at least {fewest} per point (time budget)")
    return rounds, reps
