"""Benchmark: does the pool-contention model hold for an ascent job of another batch?

The profiler fits the two pools' slowdowns from a lock-step of the descent's climb, pass and
update on one pool and the threaded executor's job on the other, with the job at the profile's
batch b and at b/4 (``hetsam/profiling/contention.py``; docs/architecture.md, "Measuring and step
costs"); the cost model interpolates them for any b' (``hetsam/profiling/pairs.py``). This script
measures that lock-step with the job at b, at b/4 and at each ``--job-batches`` entry, in
interleaved repeats in one process. Each lock-step is predicted with the simulator's
processor-sharing model (:func:`hetsam.profiling.pairs.lockstep_seconds`) and that phase's own
times alone, so the machine's drift between repeats cancels, twice: from the fit at b alone (the
profiler before it measured b/4) and from the fits at b/4 and b, both of the same repeat. Run:

    python examples/bench_contention.py [--model mlp] [--batch-size 64] [--job-batches 4,32] [--repeats 3]

It prints, per job batch, the fitted slowdowns and the median over the repeats of the error of
each prediction of the time together (predicted / measured − 1) for the descent's side (D') and
the job (J'). ``--json`` prints the repeats as JSON. It needs two cores (the halves of socket 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from hetsam._progress import Progress
from hetsam.bench.arrangements import socket0_halves
from hetsam.execution import allocator
from hetsam.hardware.detect import detect
from hetsam.profiling.budget import Settings
from hetsam.profiling.contention import contention_pair
from hetsam.profiling.models import reference_model
from hetsam.profiling.pairs import at_job_batch, lockstep_seconds
from hetsam.profiling.targets import resolve_targets


def measure(model: str, batch_size: int, job_batches: list[int], repeats: int, seconds: float) -> list[dict]:
    """One row per (repeat, job batch): the medians alone and together, the fit, and the
    predictions from the same repeat's fit at ``batch_size`` (``single``) and fits at
    ``batch_size // 4`` and ``batch_size`` (``two``)."""
    pools = socket0_halves()
    if pools is None:
        raise SystemExit("bench_contention: needs two cores of socket 0")
    allocator.apply_policy()
    ref = reference_model(model)
    net, batch = ref.build(), ref.sample_batch(batch_size)
    a, b = resolve_targets(list(pools), detect().devices)
    settings = Settings(warmup=2, repeats=None, min_repeats=10, max_repeats=200, target=0.25)
    small = max(1, batch_size // 4)
    sizes = sorted(set(job_batches) | {small, batch_size})
    rows = []
    for r in range(repeats):
        order = sizes if r % 2 == 0 else sizes[::-1]  # A B C, C B A: drift hits every size alike
        fits = {}
        for m in order:
            print(f"bench_contention: repeat {r + 1}/{repeats}, job at batch {m}", file=sys.stderr, flush=True)
            fits[m] = contention_pair(net, ref.loss_fn, batch, a, b, batch_size, settings, seconds, Progress(False, 1),
                                      job_batch=m)
        points = [(m, fits[m].slowdowns) for m in sorted({small, batch_size})]
        for m in sizes:
            f = fits[m]
            row = {"repeat": r, "job_batch": m, "slowdowns": list(f.slowdowns), "handoff_seconds": f.handoff_seconds,
                   "descent": f.descent, "job": f.job, "descent_together": f.descent_together, "job_together": f.job_together}
            two = [at_job_batch([(x, s[k]) for x, s in points], m) for k in (0, 1)]
            for name, (sa, sb) in (("single", fits[batch_size].slowdowns), ("two", two)):
                d2, j2 = lockstep_seconds(f.descent, f.job, sa, sb)
                row[name] = {"descent_together": d2, "job_together": j2, "descent_error": d2 / f.descent_together - 1.0,
                             "job_error": j2 / f.job_together - 1.0}
            rows.append(row)
    return rows


def table(rows: list[dict], batch_size: int) -> str:
    lines = [f"descent at batch {batch_size}; errors of D' and J' predicted from the fit at {batch_size} alone, and from the fits "
             f"at {max(1, batch_size // 4)} and {batch_size} (same repeat)",
             f"{'job b':>6} {'slowdowns (D, J)':>17} {'D alone':>8} {'D together':>10} {'J alone':>8} {'J together':>10}"
             f" {'from b: D′':>11} {'J′':>7} {'b/4 and b: D′':>14} {'J′':>7}"]
    for m in sorted({x["job_batch"] for x in rows}):
        xs = [x for x in rows if x["job_batch"] == m]

        def med(get, xs=xs):
            return statistics.median(get(x) for x in xs)

        s = f"{med(lambda x: x['slowdowns'][0]):.2f}, {med(lambda x: x['slowdowns'][1]):.2f}"
        times = " ".join(f"{med(lambda x, k=k: x[k]) * 1e3:>8.2f}ms" if "together" in k else f"{med(lambda x, k=k: x[k]) * 1e3:>6.2f}ms"
                         for k in ("descent", "descent_together", "job", "job_together"))
        errors = [med(lambda x, w=w, k=k: x[w][k]) for w in ("single", "two") for k in ("descent_error", "job_error")]
        lines.append(f"{m:>6} {s:>17} {times} {errors[0]:>+11.1%} {errors[1]:>+7.1%} {errors[2]:>+14.1%} {errors[3]:>+7.1%}")
    lines.append(f"medians of {len({x['repeat'] for x in rows})} repeats; error = predicted / measured - 1")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--job-batches", default="4,32", help="comma-separated batches of the ascent job (b/4 and b are always measured)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=12.0, help="measuring time of one lock-step fit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        jobs = [int(x) for x in args.job_batches.split(",") if x.strip()]
    except ValueError:
        ap.error("--job-batches: comma-separated positive integers, e.g. 4,16,64")
    if not jobs or min(jobs) < 1 or max(jobs) > args.batch_size or not 1 <= args.repeats <= 100 or not 0 < args.seconds <= 3600:
        ap.error("--job-batches in 1..--batch-size, --repeats in 1..100 and --seconds in (0, 3600]")
    rows = measure(args.model, args.batch_size, jobs, args.repeats, args.seconds)
    print(json.dumps(rows, indent=1) if args.json else table(rows, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
