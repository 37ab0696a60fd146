"""Benchmark: does AutoSAM's calibration recover a known per-step cost of the training loop?

Each trial trains a small MLP for 30 steps with ``plan="auto"`` on a profile of this machine and
sleeps ``--sleep`` seconds after every step, as a slow data loader would; the profile knows nothing
of the sleep. AutoSAM fits the loop's own work per step, ℓ, on the first window of step periods
(``hetsam/autosam/controller.py``). The trial compares ℓ with the planted cost, both measured in
the same run: the median of the sleeps as the loop timed them over that window. It also prints
the steps' own median time against the profile's predicted step, whose difference ℓ absorbs too
(a profile measured when the machine was quieter predicts too short a step). Run:

    python examples/bench_calibration.py [--trials 5] [--sleep 0.02] [--tolerance 0.008] [--busy]

``--busy`` runs a CPU-bound process beside the trials (and beside the profiling, which the first
trial does; the others reuse it). The exit status is 0 when every trial is within the tolerance,
1 otherwise. This is a timing claim, so it lives here and not in the unit tests, which check the
calibration against the periods and sleeps of their own run (``tests/test_calibration.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from hetsam import AutoSAM

WARMUP, WINDOW, STEPS = 3, 20, 30


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def trial(sleep: float, seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    data = [(torch.randn(32, 20), torch.randint(0, 3, (32,))) for _ in range(STEPS)]
    options = {"profile_budget_seconds": 3.0, "progress": False, "devices": ["cpu:0"], "calibration_window": WINDOW,
               "calibration_warmup": WARMUP, "max_replans": 0}
    starts, steps, slept = [], [], []
    with AutoSAM(model, loss_fn, planner_options=options, log=lambda line: None, executor="inline", lr=0.05) as opt:
        for batch in opt.prefetch(data):
            starts.append(time.perf_counter())
            opt.step(batch)
            steps.append(time.perf_counter() - starts[-1])
            before = time.perf_counter()
            time.sleep(sleep)
            slept.append(time.perf_counter() - before)
        auto = opt.stats()["auto"]
    window = slice(WARMUP, WARMUP + WINDOW)  # the periods of the controller's first window
    out = {"planted": statistics.median(slept[window]), "step": statistics.median(steps[window])}
    if not auto["calibration"]:  # the prediction held; the loop's work was still timed
        return {**out, "loop": auto["timed_loop_seconds"], "predicted": None}
    entry = auto["calibration"][0]
    return {**out, "loop": entry["loop_seconds"], "predicted": entry["predicted_seconds"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--sleep", type=float, default=0.02, help="the planted per-step cost, in seconds")
    ap.add_argument("--tolerance", type=float, default=0.008, help="largest |loop - planted|, in seconds")
    ap.add_argument("--busy", action="store_true", help="run a CPU-bound process beside the trials")
    ap.add_argument("--json", default=None, help="write the trials here")
    args = ap.parse_args(argv)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    results = []
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["HETSAM_CACHE_DIR"] = cache  # one profile of this machine now, for every trial
            for i in range(args.trials):
                r = trial(args.sleep, i)
                ok = r["loop"] is not None and abs(r["loop"] - r["planted"]) <= args.tolerance
                results.append({**r, "within": ok})
                loop = "no calibration" if r["loop"] is None else f"loop {r['loop'] * 1e3:6.2f} ms"
                predicted = "" if r["predicted"] is None else f", predicted step {r['predicted'] * 1e3:.2f} ms"
                print(f"trial {i + 1}: {loop}, planted {r['planted'] * 1e3:.2f} ms, step {r['step'] * 1e3:.2f} ms"
                      f"{predicted}: {'within' if ok else 'NOT within'} {args.tolerance * 1e3:g} ms")
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    within = sum(r["within"] for r in results)
    beside = " beside a busy process" if args.busy else ""
    print(f"{within} of {len(results)} trials within {args.tolerance * 1e3:g} ms{beside}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sleep": args.sleep, "tolerance": args.tolerance, "busy": args.busy, "trials": results}, f,
                      indent=2)
    return 0 if within == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
