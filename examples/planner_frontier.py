"""Does the planner's choice sit on the measured frontier of accuracy against time?

Reads a time-to-accuracy run (``examples/time_to_accuracy.py --json tta.json``) and checks, on
its tasks and seeds:

1. **This machine.** The planner's plan for the benchmark's model here (``--budget``, default
   1.1 x SGD's step) is trained at equal epochs and within each time budget of the run, and its
   (time, accuracy) points are set against every strategy's.
2. **Each reference machine** (``profiles/``). ``hetsam plan --profile NAME --budget B`` chooses
   a plan; its settings (p, k, start, ρ, b'/b, τ, λ) are trained here, since the algorithm does
   not depend on the device, for the accuracy after E epochs. Its step time, and the step time of
   every setting of the benchmark put on that machine's devices, come from the simulator.
   The frontier is then accuracy after E epochs against the predicted time per step.
3. **At 1.1 x SGD's time** (this machine): the planner's choice against the best of
   ``interval``, ``late_phase``, ``msam`` and ``rst``.

A point is *on the frontier* when no other point is at most as slow and more accurate. It is
*within noise* of it when every point that beats it does so by less than two standard errors of
the paired difference over seeds.

The results file is checked before anything trains (``examples/_results.py``: every field, every
number bounded like the flag that made it), and so is ``--json``; either is refused in one line
with exit status 2. Every run is a ``hetsam.study`` run (``time_to_accuracy.train``).

    python examples/planner_frontier.py tta.json --json frontier.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from hetsam import HetsamInputError, Plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import OneLineParser, check_outputs, load_results  # noqa: E402
from _tasks import finite  # noqa: E402
from time_to_accuracy import BATCH, planner_choice, seeded_tasks, train  # noqa: E402

CHEAP = ("interval", "late_phase", "msam", "rst")  # the one-device variants the issue compares with


# ---- verdicts ---------------------------------------------------------------------------------------
def verdict(chosen: list[float], t_chosen: float, points: dict[str, tuple[float, list[float]]]) -> dict:
    """Whether ``chosen`` (accuracies per seed at time ``t_chosen``) is on the frontier of
    ``points`` (label -> (time, accuracies per seed, paired by seed)), or within noise of it."""
    mean_c = statistics.mean(chosen)
    beaten = []
    for label, (t, accs) in points.items():
        if t <= t_chosen and statistics.mean(accs) > mean_c:
            d = [a - c for a, c in zip(accs, chosen)]
            se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("inf")
            beaten.append({"by": label, "time": t, "gap": statistics.mean(d), "se": se})
    worst = max(beaten, key=lambda x: x["gap"] / x["se"] if x["se"] > 0 else float("inf"), default=None)
    if not beaten:
        state = "on the frontier"
    elif all(b["gap"] < 2 * b["se"] for b in beaten):
        state = "within noise"
    else:
        state = "off the frontier"
    return {"state": state, "accuracy": mean_c, "time": t_chosen, "beaten_by": beaten, "worst": worst}


def _say(v: dict) -> str:
    s = f"{v['state']} (accuracy {100 * v['accuracy']:.2f}% at {v['time']:.3f}x SGD"
    if v["worst"]:
        w = v["worst"]
        s += f"; {w['by']} at {w['time']:.3f}x is {100 * w['gap']:+.2f} ± {100 * w['se']:.2f} points"
    return s + ")"


# ---- this machine -----------------------------------------------------------------------------------
def here(name: str, data: dict, args, E: int, seeds: int, tasks, log) -> dict:
    plan = planner_choice(name, tasks[0][0], tasks[0][1], args.budget, log, args.profile)
    sgd_plan = Plan("sgd")
    sgd, mine = [], []
    for s in range(seeds):  # interleaved with SGD, for the time ratio
        sgd.append(train(tasks[s], sgd_plan, s, E, args.rho))
        mine.append(train(tasks[s], plan, s, E, args.rho))
    ratio = statistics.median(m["seconds"] / g["seconds"] for m, g in zip(mine, sgd))
    sgd_seconds = statistics.mean(g["seconds"] for g in sgd)
    out = {"plan": plan.describe(), "time_x_sgd": ratio, "equal_epochs": [r["test"] for r in mine], "budgets": {}}
    for b, runs in data["budgets"].items():
        epochs = max(1, round(E * float(b) / ratio))
        mine_b = [train(tasks[s], plan, s, epochs, args.rho) for s in range(seeds)]
        t = statistics.mean(r["seconds"] for r in mine_b) / sgd_seconds
        accs = [r["test"] for r in mine_b]
        # against every strategy within the same or a smaller budget (nominal, not the noisy measured time)
        points = {f"{lab} @{bb}x": (float(bb), [r["test"] for r in data["budgets"][bb][lab]])
                  for bb in data["budgets"] for lab in data["labels"] if not lab.startswith("planner")}
        cheap = {lab: [r["test"] for r in runs[lab]] for lab in data["labels"] if lab.split()[0] in CHEAP}
        versus = None  # a run without a one-device variant (--only async) has nothing to compare with
        if cheap:
            best = max(cheap, key=lambda lab: statistics.mean(cheap[lab]))
            d = [a - c for a, c in zip(accs, cheap[best])]
            versus = {"best": best, "gap": statistics.mean(d), "se": statistics.stdev(d) / len(d) ** 0.5}
        out["budgets"][b] = {"epochs": epochs, "time_x_sgd": t, "accuracies": accs,
                             "frontier": verdict(accs, float(b), points), "vs_best_cheap": versus}
        log(f"{name}: the planner's choice within {b} x SGD done")
    return out



# ---- reference machines -----------------------------------------------------------------------------
def on_machine(bench: dict, report) -> Plan | None:
    """A benchmark setting (a plan dict at batch BATCH) on a reference machine's devices: those of
    the planner's preferred plan of the same strategy there, with the setting's numbers."""
    name = bench["strategy"]
    same = [c for c in report.candidates if c.plan.strategy == name]
    if not same:
        return None
    fits = [c for c in same if c.fits_budget]
    base = (max(fits, key=lambda c: (c.fidelity, -c.predicted_seconds)) if fits
            else min(same, key=lambda c: c.predicted_seconds)).plan
    options = dict(Plan.from_dict(bench).options)  # a results file's plan, of any schema
    if options.get("ascent_batch_size"):  # b' scaled to this batch
        options["ascent_batch_size"] = max(1, round(options["ascent_batch_size"] / BATCH * report.batch_size))
    return Plan(name, base.descent_device, base.ascent_device, batch_size=base.batch_size, options=options)


def locally(plan: Plan, batch_size: int) -> Plan:
    """A reference machine's plan as the same algorithm here (b' scaled to BATCH)."""
    options = dict(plan.options)
    if options.get("ascent_batch_size"):  # b' scaled to BATCH
        options["ascent_batch_size"] = max(1, round(options["ascent_batch_size"] / batch_size * BATCH))
    return Plan(plan.strategy, "cpu", "cpu" if plan.spec.uses_executor else None, batch_size=BATCH, options=options)


def references(results: dict, args, E: int, seeds: int, tasks_of, log) -> dict:
    from hetsam.planning.search import plan as make_plan
    from hetsam.profiling.schema import load_profile, reference_profile_names
    from hetsam.simulator import simulate

    out, trained = {}, {}
    for machine in reference_profile_names():
        report = make_plan(load_profile(machine), budget=args.budget)
        cm, b_ref = report.cost_model, report.batch_size
        step = lambda p: simulate(p, cm, iterations=args.iterations, seed=0).iteration_seconds["mean"]  # noqa: E731
        sgd_step = step(Plan("sgd", descent_device=report.plan.descent_device, batch_size=b_ref))
        mine = locally(report.plan, b_ref)
        key = json.dumps(mine.to_dict(), sort_keys=True)
        entry = {"plan": report.plan.describe(), "here": mine.describe(), "time_x_sgd": step(report.plan) / sgd_step,
                 "share": report.prediction.share.to_dict() if report.prediction.share else None, "tasks": {}}
        times: dict[str, float] = {}
        for task, data in results["tasks"].items():
            if (task, key) not in trained:
                tasks = tasks_of(task)
                trained[(task, key)] = [train(tasks[s], mine, s, E, args.rho)["test"] for s in range(seeds)]
            for lab in data["labels"]:
                p = None if lab.startswith("planner") or lab in times else on_machine(data["plans"][lab], report)
                if p is not None:
                    times[lab] = step(p) / sgd_step
            points = {lab: (t, [r["test"] for r in data["equal_epochs"][lab]]) for lab, t in times.items()
                      if lab in data["equal_epochs"]}
            entry["tasks"][task] = {"accuracies": trained[(task, key)], "times": times,
                                    "frontier": verdict(trained[(task, key)], entry["time_x_sgd"], points)}
        out[machine] = entry
        log(f"reference {machine}: {entry['plan']} done")
    return out


# ---- main -------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a JSON from examples/time_to_accuracy.py --json")
    ap.add_argument("--budget", type=float, default=1.1, help="the planner's step budget, x SGD (default 1.1)")
    ap.add_argument("--iterations", type=int, default=400, help="simulated iterations per plan")
    ap.add_argument("--skip-here", action="store_true", help="only the reference machines")
    ap.add_argument("--profile", default=None, help="for 'this machine', plan on this profile (a path or a bundled "
                                                    "name) instead of measuring the benchmark's model here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not 10 <= args.iterations <= 100_000:
        ap.error("--iterations: 10 to 100000")
    if not (math.isfinite(args.budget) and 1 <= args.budget <= 100):
        ap.error("--budget: 1 to 100 (x SGD's step)")
    try:
        check_outputs(json=args.json)
        results = load_results(args.results)  # every field checked, every number bounded like its flag
        return run(args, results)
    except HetsamInputError as exc:
        print(f"planner_frontier: {exc}", file=sys.stderr)
        return 2


def run(args, results: dict) -> int:
    run_args = results["meta"]["args"]
    args.rho = run_args["rho"]
    E, seeds = run_args["epochs"], run_args["seeds"]
    torch.set_num_threads(1)
    log = (lambda line: None) if args.quiet else (lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}",
                                                                        file=sys.stderr, flush=True))
    cache: dict[str, list] = {}

    def tasks_of(task: str):
        if task not in cache:
            cache[task] = seeded_tasks(task, seeds, run_args["noise"], run_args.get("train_subset"))
        return cache[task]

    started = time.perf_counter()
    report: dict = {"here": {}, "references": {}}
    if not args.skip_here:
        for task, data in results["tasks"].items():
            h = report["here"][task] = here(task, data, args, E, seeds, tasks_of(task), log)
            print(f"\n{task}, this machine: the planner chose {h['plan']} ({h['time_x_sgd']:.2f}x SGD per epoch here)")
            for b, v in h["budgets"].items():
                c = v["vs_best_cheap"]
                versus = ("no one-device variant (" + ", ".join(CHEAP) + ") in the results to compare with" if c is None
                          else f"vs the best one-device variant, {c['best']}: {100 * c['gap']:+.2f} ± "
                               f"{100 * c['se']:.2f} points")
                print(f"  within {b}x SGD ({v['epochs']} epochs): {_say(v['frontier'])}; {versus}")
    report["references"] = references(results, args, E, seeds, tasks_of, log)
    for machine, entry in report["references"].items():
        print(f"\n{machine}: the planner chose {entry['plan']}, predicted {entry['time_x_sgd']:.3f}x SGD per step "
              f"(trained here as {entry['here']})")
        for task, t in entry["tasks"].items():
            print(f"  {task}: {_say(t['frontier'])}")
    took = time.perf_counter() - started
    print(f"\nfrontier check time: {took:.0f} s")
    if args.json:
        from hetsam.io import write_text

        report["meta"] = {"results": args.results, "budget": args.budget, "seconds": took, "date": time.strftime("%Y-%m-%d")}
        write_text(args.json, json.dumps(finite(report), indent=1, allow_nan=False), "results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
