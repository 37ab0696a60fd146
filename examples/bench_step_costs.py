"""The profiler's step costs against the same code inside AutoSAM's step, side by side.

    python examples/bench_step_costs.py [--model mlp] [--batch-size 64] [--rounds 8] [--json]

A step costs more than its passes: the update and, on a perturbed step, the climb (back up θ,
θ + e, restore). The profiler times them through the rules' own ``Runtime``
(:func:`hetsam.profiling.ladder.measure_step_costs`). This script checks that what it times is
what runs. On each device (the socket, and its first one-core pool when there are two cores) it
interleaves, in every round (A B C, A B C, ...):

* **loop**: the update and the climb back to back, with the parameters and gradients in the
  caches (how the profiler timed them before it followed each with a pass);
* **profiler**: ``measure_step_costs``, each timed right after a gradient pass on that pass's
  gradients;
* **in the step**: AutoSAM running SAM on that device, with its runtime's ``apply`` (the update)
  and ``save``/``climb``/``restore`` (the climb) timed inside its own steps.

It prints the medians over the rounds and each column's ratio to "in the step". No column is a
prediction: all three are measured in one process, minutes apart at most, on a machine that may
be shared; read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import torch

import hetsam
from hetsam.hardware.detect import detect_devices
from hetsam.profiling.ladder import DescentWork, TimedReplica, measure_step_costs
from hetsam.profiling.models import reference_model
from hetsam.profiling.targets import resolve_targets, run_threads

STEPS_IN_SITU = 25  # AutoSAM steps per round; the first 5 are left out (warm-up)


def loop_costs(replica: TimedReplica, n: int, repeats: int = 20) -> tuple[float, float]:
    """The update and the climb timed back to back, with no pass between them (warm caches)."""
    work = DescentWork(replica)
    grads = [g.detach().clone() for g in replica.step(n).grads]
    work.update(grads)
    work.climb([g.clone() for g in grads])
    update, climb = [], []
    for _ in range(repeats):
        update.append(replica.timed(lambda: work.update(grads)))
        ghat = [g.clone() for g in grads]
        climb.append(replica.timed(lambda: work.climb(ghat)))
    work.clear()
    return statistics.median(update), statistics.median(climb)


def in_step_costs(ref, batches, device: str, b: int) -> tuple[float, float]:
    """AutoSAM's SAM on ``device``: the median update and climb inside its steps."""
    opt = hetsam.AutoSAM(ref.build(), ref.loss_fn, torch.optim.SGD, plan=hetsam.Plan("sam", descent_device=device, batch_size=b),
                         lr=0.05, momentum=0.9, log=lambda line: None)
    rt, times = opt._parts.runtime, defaultdict(list)
    for name in ("save", "climb", "restore", "apply"):
        original = getattr(rt, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            times[_name].append(time.perf_counter() - start)
            return out

        setattr(rt, name, timed)
    try:
        for i in range(STEPS_IN_SITU):
            opt.step(batches[i % len(batches)])
    finally:
        opt.close()
    med = lambda name: statistics.median(times[name][5:])  # noqa: E731
    return med("apply"), med("save") + med("climb") + med("restore")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", help="a reference model (hetsam.profiling.models)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (medians over them)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line after the table")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batch_size < 4:
        parser.error("--rounds must be >= 1 and --batch-size >= 4")
    ref = reference_model(args.model)
    torch.manual_seed(0)
    batches = [ref.sample_batch(args.batch_size, seed=i) for i in range(4)]
    names = ["cpu:0"] + (["cpu:0[0]"] if len(os.sched_getaffinity(0)) >= 2 else [])
    targets = {t.id: t for t in resolve_targets(names, detect_devices())}
    got: dict = defaultdict(list)
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        for name, target in targets.items():

            def body(target=target):
                rep = TimedReplica(ref.build(), ref.loss_fn, batches[0], target)
                try:
                    rep.time_step(args.batch_size)
                    return loop_costs(rep, args.batch_size), measure_step_costs(rep, args.batch_size, 1.0)[:2]
                finally:
                    rep.release()

            loop, profiled = run_threads([(target, body)])[0]
            got[name, "loop"].append(loop)
            got[name, "profiler"].append(profiled)
            got[name, "in the step"].append(in_step_costs(ref, batches, name, args.batch_size))
    rows = []
    for name in targets:
        step = [statistics.median(x[i] for x in got[name, "in the step"]) for i in (0, 1)]
        for how in ("loop", "profiler", "in the step"):
            update, climb = (statistics.median(x[i] for x in got[name, how]) for i in (0, 1))
            rows.append({"device": name, "how": how, "update_ms": update * 1e3, "climb_ms": climb * 1e3,
                         "update_ratio": update / step[0], "climb_ratio": climb / step[1]})
    print(f"{args.model} at batch {args.batch_size}: medians over {args.rounds} interleaved rounds "
          "(ratio: to the same cost inside AutoSAM's step)")
    print(f"{'device':<10} {'timed':<12} {'update ms':>10} {'ratio':>6} {'climb ms':>9} {'ratio':>6}")
    for row in rows:
        print(f"{row['device']:<10} {row['how']:<12} {row['update_ms']:>10.3f} {row['update_ratio']:>6.2f} "
              f"{row['climb_ms']:>9.3f} {row['climb_ratio']:>6.2f}")
    if args.json:
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
