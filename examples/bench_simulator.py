"""Micro-benchmark of the simulator's engine, side by side with an idiomatic SimPy model.

Both simulate the same AsyncSAM schedule (descent on a GPU, ascent on a CPU socket, copies
on the link, τ = 1, no jitter, no steady-state stop) and must agree on every step's end time.
Rounds alternate A B A B; medians are reported. Run:

    python examples/bench_simulator.py [--iterations 78200] [--rounds 5]

It needs no torch. The profile is the built-in synthetic one (its numbers only set the
schedule's shape; the engine's cost per event hardly depends on them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _simpy_reference import async_sam_update_ends

from hetsam.cost.model import CostModel
from hetsam.planning.plan import Plan
from hetsam.profiling.schema import Profile
from hetsam.simulator import simulate

PROFILE = {
    "schema_version": 1,
    "model": {"name": "bench", "parameters": 270_000, "parameter_bytes": 1_080_000},
    "batch_size": 64,
    "devices": [
        {"id": "cpu:0", "kind": "cpu", "name": "CPU", "cores": 2,
         "grad_seconds": {"batch_sizes": [8, 64], "median": [0.03, 0.17], "spread": [0.003, 0.017]}},
        {"id": "cuda:0", "kind": "gpu", "name": "GPU",
         "grad_seconds": {"batch_sizes": [8, 64], "median": [0.004, 0.01], "spread": [0.0004, 0.001]},
         "update_seconds": 0.0005},
    ],
    "links": [{"src": "cpu:0", "dst": "cuda:0", "bytes_per_second": 1.0e9, "latency_seconds": 1.0e-5}],
    "provenance": {"kind": "synthetic"},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=78_200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ascent-batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    cm = CostModel(Profile.from_dict(PROFILE))
    plan = Plan("async_sam", "cuda:0", "cpu:0", batch_size=64,
                options={"ascent_batch_size": args.ascent_batch_size, "staleness": 1})
    n, tau = args.iterations, plan.spec.staleness(plan)
    nbytes = cm.parameter_bytes
    numbers = (cm.grad_seconds("cuda:0", 64), cm.update_seconds("cuda:0"), cm.grad_seconds("cpu:0", args.ascent_batch_size),
               cm.copy_seconds("cuda:0", "cpu:0", nbytes), cm.copy_seconds("cpu:0", "cuda:0", nbytes))

    ours, theirs = [], []
    ours_events = theirs_events = 0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        r = simulate(plan, cm, iterations=n, jitter=False, steady_state=False, timeline_iterations=0)
        ours.append(time.perf_counter() - t0)
        ours_events = r.events
        t0 = time.perf_counter()
        ends, theirs_events = async_sam_update_ends(*numbers, tau, n + tau + 1)
        theirs.append(time.perf_counter() - t0)
        if abs(ends[n - 1] - r.total_seconds) > 1e-9 * ends[n - 1]:
            print(f"MISMATCH: engine {r.total_seconds!r} vs SimPy {ends[n - 1]!r}", file=sys.stderr)
            return 1
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"AsyncSAM tau=1, {n} iterations, {args.rounds} rounds A B A B, medians; schedules agree exactly")
    print(f"  hetsam engine: {a:.3f} s  {n / a:>10,.0f} iterations/s  {ours_events / a:>10,.0f} events/s  ({ours_events} events)")
    print(f"  SimPy 4      : {b:.3f} s  {n / b:>10,.0f} iterations/s  {theirs_events / b:>10,.0f} events/s  ({theirs_events} events)")
    print(f"  ratio SimPy / engine: {b / a:.2f}x   (spread: engine {min(ours):.3f}-{max(ours):.3f} s, SimPy {min(theirs):.3f}-{max(theirs):.3f} s)")
    t0 = time.perf_counter()
    r = simulate(plan, cm, iterations=n, seed=0)
    print(f"  with jitter and the steady-state stop: {time.perf_counter() - t0:.3f} s, "
          f"simulated {r.simulated_iterations} of {n} ({r.note})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
