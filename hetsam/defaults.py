"""Every default number of hetsam, defined once (torch-free).

The planner, the command line, ``AutoSAM(plan="auto")``, the profiler and the simulator read
their defaults from here, so a default changes in one place. The *limits* (the largest value
anything accepts) are here too: a number a user or a file gives is checked against them before
any arithmetic or allocation (``docs/architecture.md``, "Bounds").
"""

from __future__ import annotations

import math
import os
import warnings

__all__ = [
    "BUDGET", "MIN_ASCENT_FRACTION", "MAX_STALENESS", "STALENESS_LIMIT", "BATCH_LIMIT", "RESERVE_CORES", "SIMULATE_TOP",
    "PLANNER_ITERATIONS", "SIM_ITERATIONS", "SIM_TIMELINE_ITERATIONS", "SIM_REL_TOL", "PROFILE_BUDGET_SECONDS",
    "BENCH_TURN_WARMUP", "BENCH_MIN_SECONDS", "BENCH_MAX_AUTO_ROUNDS",
    "RHO", "SAM_PROBABILITY", "SAMPA_LAMBDA", "ASCENT_BATCHES", "OBJECTIVE", "NEAR_TIE", "BASE_OPTIMIZER",
]

# ---- planning (docs/architecture.md, "Planning") ------------------------------------------------
BUDGET = 1.05  # allowed step time, a multiple of the SGD step on the fastest device
MIN_ASCENT_FRACTION = 0.125  # the floor: AsyncSAM's b' >= b/8, and a plan's expected share of SAM's gain
MAX_STALENESS = 1  # the largest AsyncSAM staleness τ the planner considers by default
STALENESS_LIMIT = 16  # the largest τ anything accepts: τ pending jobs and τ batches read ahead
BATCH_LIMIT = 2**31 - 1  # no batch (b or b') of more samples than this is ever planned or run
RESERVE_CORES = 0  # cores of socket 0 kept free for the data loader
SIMULATE_TOP = 8  # candidates the planner confirms with the simulator, besides the fastest at the floor
PLANNER_ITERATIONS = 2000  # simulated iterations per candidate
OBJECTIVE = "robust"  # maximise the share the evidence supports at 80% (hetsam.planning.objective)
NEAR_TIE = 0.03  # objective values this close are a near-tie, which goes to the SAM-faithful plan
BASE_OPTIMIZER = "sgd"  # the base optimizer family `hetsam plan` assumes (MSAM's radius depends on it)

# ---- simulation ------------------------------------------------------------------------------------
SIM_ITERATIONS = 1000  # iterations `simulate` predicts by default
SIM_TIMELINE_ITERATIONS = 6  # iterations kept for the Chrome trace and the plot
SIM_REL_TOL = 0.005  # stop once the steady-state mean is known to ±0.5% (95% CI)

# ---- profiling -------------------------------------------------------------------------------------


def _env_seconds(name: str, default: float, low: float, high: float) -> float:
    """``$name`` as seconds in [low, high] (shorter profiles in CI, say), else ``default`` (a bad value warns)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        warnings.warn(f"${name}={raw!r} is not a number of seconds in [{low:g}, {high:g}]; using {default:g}", stacklevel=2)
        return default
    return value


# measuring time of a profile; with imports and the FLOP count, under a minute. $HETSAM_PROFILE_BUDGET_SECONDS
# changes this default (CI runs the README's snippets with short profiles)
PROFILE_BUDGET_SECONDS = _env_seconds("HETSAM_PROFILE_BUDGET_SECONDS", 40.0, 1.0, 86400.0)

# ---- the update rules ------------------------------------------------------------------------------
RHO = 0.05  # SAM's perturbation radius
SAM_PROBABILITY = 0.5  # RST's p when a plan gives none
SAMPA_LAMBDA = 0.2  # SAMPa's λ (the paper's default)
ASCENT_BATCHES = "lookahead"  # AsyncSAM's batch policy

# ---- AutoSAM's divergence guard (hetsam/autosam/guard.py) ----------------------------------------
GUARD_WINDOW = 20  # W: the guard compares medians of W consecutive step losses (bounds 5 to 10,000)
GUARD_FACTOR = 2.0  # k: a divergence is the last W losses' median above k x the best such median (1.2 to 100)
GUARD_REGRESS = 0.5  # r: ... having given back this share of the progress since the first window (0 to 1)
GUARD_SNAPSHOT_BYTES = 1 << 30  # host memory for the last good state; a larger state is not snapshotted

# ---- hetsam bench (hetsam.bench.runner) -------------------------------------------------------------
BENCH_TURN_WARMUP = 4  # untimed steps at the start of each turn: the worker restarts, the thread team resizes
BENCH_MIN_SECONDS = 30.0  # rounds are added until the timed rounds last this long: short steps, many short rounds
BENCH_MAX_AUTO_ROUNDS = 200  # the most rounds BENCH_MIN_SECONDS adds up to
