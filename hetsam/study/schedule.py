"""The order of a study's runs, what each is expected to cost, and where the time budget stops it.

Seeds run in order, every candidate of seed 0 before seed 1, so a stop keeps complete paired
seeds; within a seed the candidates' order rotates by one from seed to seed, so that a drift of
the machine's speed spreads over them. A run already in the run log is reused, not trained.
Before each run the schedule estimates what the rest of its seed costs: the plan's own mean wall
time at these epochs when it has run (in this call or a logged one), else its strategy's at other
settings, else a measured strategy's time scaled by the planner's predicted step times. With a
``budget``, a run whose seed would not finish within it is not started (the runs of that seed
that did finish stay in the log for a later call). Torch-free.
"""

from __future__ import annotations

import statistics
import time

from hetsam._progress import Progress

__all__ = ["Schedule"]


class Schedule:
    """Runs ``train(candidate, seed)`` for every seed and candidate not in the log (module docstring);
    results are keyed by ``candidate.key``."""

    def __init__(self, candidates, seeds: int, epochs: int, runlog, budget: float | None, started: float,
                 progress: bool):
        self.candidates, self.seeds, self.epochs = candidates, seeds, epochs
        self.runlog, self.budget, self.started = runlog, budget, started
        self.trained = self.reused = 0
        self.stopped: str | None = None
        self._results: dict[tuple[str, int], dict] = {}
        self._todo = [(s, c) for s in range(seeds) for c in candidates]
        self._bar = Progress(progress, total=len(self._todo))

    # ---- running ----------------------------------------------------------------------------------
    def run(self, train, on_seed) -> None:
        """Train what is missing, calling ``on_seed(complete_seeds)`` after each seed that trained
        something (a seed taken whole from the log needs no new file)."""
        n = len(self.candidates)
        for seed in range(self.seeds):
            trained = False
            for c in self.candidates[seed % n:] + self.candidates[:seed % n]:
                run = self.runlog.find(c.plan.to_dict(), seed, self.epochs)
                if run is not None:
                    self._results[(c.key, seed)] = run
                    self.reused += 1
                    self._bar.step(self._describe(seed, c), advance=1)
                    continue
                if not self._fits(seed):
                    return
                self._bar.step(self._describe(seed, c))
                run = train(c, seed)  # trained and logged (on disk before it returns)
                self._results[(c.key, seed)] = run
                self.trained += 1
                trained = True
                self._bar.step(self._describe(seed, c), advance=1)
            if trained:
                on_seed(seed + 1)

    def close(self) -> None:
        self._bar.close()

    # ---- what ran ---------------------------------------------------------------------------------
    def complete_seeds(self) -> int:
        """How many seeds, from seed 0 on, every candidate finished."""
        n = 0
        while n < self.seeds and all((c.key, n) in self._results for c in self.candidates):
            n += 1
        return n

    def runs(self, candidate, complete: int) -> list[dict]:
        """The runs of ``candidate`` at seeds 0 to ``complete`` - 1."""
        return [self._results[(candidate.key, s)] for s in range(complete)]

    def scores(self, candidate, complete: int) -> list[float]:
        return [r["score"] for r in self.runs(candidate, complete)]

    def seconds(self, candidate, complete: int) -> list[float]:
        return [r["seconds"] for r in self.runs(candidate, complete)]

    # ---- time ---------------------------------------------------------------------------------------
    def estimates(self) -> dict:
        """candidate key -> expected wall seconds of one run (None when unknown): the plan's own
        mean, else its strategy's, else a measured candidate's scaled by the planner's predicted
        step times."""
        means = {}
        for c in self.candidates:
            t = (self.runlog.seconds(self.epochs, plan_dict=c.plan.to_dict())
                 or self.runlog.seconds(self.epochs, strategy=c.strategy))
            if t:
                means[c.key] = statistics.mean(t)
        ref = next((c for c in self.candidates if c.key in means and c.predicted_seconds > 0), None)
        return {c.key: means.get(c.key, None if ref is None or c.predicted_seconds <= 0 else
                                 means[ref.key] * c.predicted_seconds / ref.predicted_seconds)
                for c in self.candidates}

    def _remaining(self, pairs) -> float | None:
        """Expected seconds of the runs of ``pairs`` (seed, candidate) still to train; None if unknown."""
        est, total = self.estimates(), 0.0
        for seed, c in pairs:
            if (c.key, seed) in self._results:
                continue
            if est[c.key] is None:
                return None
            total += est[c.key]
        return total

    def _fits(self, seed: int) -> bool:
        if self.budget is None:
            return True
        elapsed = time.perf_counter() - self.started
        need = self._remaining([(seed, c) for c in self.candidates]) or 0.0
        if elapsed < self.budget and elapsed + need <= self.budget:
            return True
        self.stopped = (f"the budget of {self.budget:g} s: seed {seed} needs about {need:.0f} s more, "
                        f"{max(0.0, self.budget - elapsed):.0f} s are left; its finished runs stay in the run log")
        return False

    def _describe(self, seed: int, c) -> str:
        left = self._remaining(self._todo)
        eta = "estimating the time left" if left is None else f"about {_duration(left)} left"
        return f"study: seed {seed + 1}/{self.seeds}, {c.label.splitlines()[0]} ({eta})"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
