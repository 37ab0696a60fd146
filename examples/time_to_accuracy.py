"""Time to accuracy: which strategy gives the most of SAM's gain for the wall-clock time it costs?

Two kinds of runs, on the offline tasks of ``examples/_tasks.py`` (digits with 40% label noise,
MNIST-1D, and with ``--tasks mnist5k`` 5,000 MNIST images with a small CNN and ``--noise`` label
noise), every seed paired across strategies (same initialisation, batch order and labels):

1. **Equal epochs.** Every strategy trains E epochs (SGD base: lr 0.05, cosine per step,
   momentum 0.9, weight decay 5e-4; ρ = 0.2). From these come each strategy's *share of SAM's
   gain*, ``mean paired (acc − acc_SGD) / mean paired (acc_SAM − acc_SGD)``, its measured time per
   epoch relative to SGD, and the test accuracy at the end of every epoch against the measured
   training time (the curves).
2. **Equal time.** For a budget of B × SGD's time for E epochs (B in 1.0, 1.1, 1.25, 1.5), each
   strategy trains as many epochs as fit, ``round(E · B / r)`` with r its measured time ratio,
   with its cosine schedule over those epochs, and reports the test accuracy it reaches.

Every run is a ``hetsam.study`` run (``hetsam/study/runner.py``: the equal-epoch runs are one
``hetsam.study(plans=...)`` per task, the equal-time runs go through ``hetsam.study.Runs`` with the
same settings), unguarded, so a diverging strategy is measured as it diverged. RST's coin is
seeded by the run's seed, so every strategy is reproducible.

Strategies: sgd, sam, rst (p = 0.1, 0.25, 0.5), interval (k = 2, 5, 10), late_phase (start = 0.5,
0.75, 0.9), msam (ρ = 0.3, 1, 3: 3 is the MSAM authors' CIFAR radius), AsyncSAM lookahead
time-sliced (b' = 8, 16, 32), AsyncSAM with the paper's independent ascent batches time-sliced
(b' = 16, 64), AsyncSAM lookahead on two one-core pools (b' = 16, 64), SAMPa on pools, and the
planner's own choice for this machine (``--planner``). ``--only`` takes labels (``'rst p=0.25'``)
or families, the label's first word (``rst``, ``async``, ...), and refuses one that matches
nothing; sgd and sam always run.

Outputs: a table per task (accuracy ± std at E epochs, share, time × SGD, accuracy at each
budget), the Pareto frontier of accuracy against time, ``--json`` (every run), ``--plot``
(accuracy within each budget, with the frontier), ``--markdown`` (the tables), ``--evidence``
(the evidence records of the equal-epoch runs, as ``examples/evidence_from_runs.py`` makes them
from a --json file: ``hetsam/data/evidence/hetsam.json``). Every output is checked before any
training. Every finished run is saved at once in a run log per task, ``<prefix>.<task>.runs.json``
with the prefix ``--runs`` or else ``--json``: run the same command again after an interruption and
it resumes (a log of other settings is refused; without --json or --runs nothing is saved).

    python examples/time_to_accuracy.py --json tta.json --plot tta.png           # ~30 minutes here
    python examples/time_to_accuracy.py --seeds 2 --epochs 4 --budgets 1.0       # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import hetsam
from hetsam import HetsamInputError, Plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import OneLineParser, check_outputs, load_results  # noqa: E402
from _tasks import (  # noqa: E402
    Task,
    accuracy,
    add_task_arguments,
    check_task_arguments,
    finite,
    load_task,
    loss_fn,
    model_for,
    train_labels,
)
from _tta_report import markdown, paired_share, pareto, plot, print_table, summarize  # noqa: E402,F401

BATCH = 64
BUDGETS = (1.0, 1.1, 1.25, 1.5)
BASE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


# ---- what runs ------------------------------------------------------------------------------------
def strategies(pools: bool) -> dict[str, Plan]:
    """label -> plan (the study runs a plan that uses an executor on threads). Pool arrangements
    need two usable cores."""
    out: dict[str, Plan] = {"sgd": Plan("sgd"), "sam": Plan("sam")}
    for p in (0.1, 0.25, 0.5):
        out[f"rst p={p}"] = Plan("rst", options={"sam_probability": p})
    for k in (2, 5, 10):
        out[f"interval k={k}"] = Plan("interval", options={"k": k})
    for start in (0.5, 0.75, 0.9):
        out[f"late_phase start={start}"] = Plan("late_phase", options={"start": start})
    for rho in (0.3, 1.0, 3.0):
        out[f"msam rho={rho}"] = Plan("msam", options={"rho": rho})
    for bp in (8, 16, 32):
        out[f"async sliced b'={bp}"] = Plan("async_sam", "cpu", "cpu", batch_size=BATCH, options={"ascent_batch_size": bp})
    for bp in (16, 64):  # the AsyncSAM paper's policy: g(θ_s; B'_s) used at step s + τ
        out[f"async independent b'={bp}"] = Plan("async_sam", "cpu", "cpu", batch_size=BATCH,
                                                  options={"ascent_batch_size": bp, "ascent_batches": "independent"})
    if pools:
        for bp in (16, 64):
            out[f"async pools b'={bp}"] = Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=BATCH, options={"ascent_batch_size": bp})
        out["sampa pools"] = Plan("sampa", "cpu:0[0]", "cpu:0[1]", batch_size=BATCH)
    return out


def select(plans: dict[str, Plan], only: str | None) -> dict[str, Plan]:
    """The plans ``--only`` names: exact labels, or families (a label's first word: ``rst`` is
    every ``rst p=...``); sgd and sam always. An item that matches nothing is refused."""
    if only is None:
        return plans
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    families = sorted({label.split()[0] for label in plans})
    unknown = [w for w in wanted if w not in plans and w not in families]
    if not wanted or unknown:
        what = f"{unknown[0]!r} matches no label" if unknown else "is empty"
        raise HetsamInputError(f"--only {what}: give labels or families, comma-separated; families: "
                               f"{', '.join(families)}; labels: {', '.join(plans)}")
    return {k: v for k, v in plans.items() if k in ("sgd", "sam") or k in wanted or k.split()[0] in wanted}


def planner_choice(task_name: str, x, y, budget: float, log, profile=None) -> Plan:
    """The planner's plan for the task's model (training inputs ``x``, labels ``y``) on this
    machine (profiled once, cached), within ``budget`` x SGD's step; on ``profile`` (a path or a
    bundled name) instead when given."""
    from hetsam.autosam.controller import PlannerOptions, plan_for_model

    options = PlannerOptions(budget=budget, profile=profile, profile_budget_seconds=20.0, progress=False)
    return plan_for_model(model_for(task_name, x), loss_fn, (x[:BATCH], y[:BATCH]), options, log=log).plan


def cosine(opt, total_steps: int):
    """The benchmark's LR schedule: cosine from lr to 0 over the run, stepped once per step."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))


def settings(task_name: str, epochs: int, rho: float, noise: float, subset: int | None) -> dict:
    """What every run of a task shares, as ``hetsam.study`` and ``hetsam.study.Runs`` take it:
    seed s's model after ``torch.manual_seed(s)``, seed s's noisy labels, the test accuracy after
    every epoch, the cosine schedule, SGD with momentum and weight decay."""
    x_tr, y_tr, _, _, x_te, y_te = load_task(task_name, noise)
    if subset:
        x_tr, y_tr = x_tr[:subset], y_tr[:subset]
    return dict(make_model=lambda: model_for(task_name, x_tr), loss_fn=loss_fn,
                train_data=lambda seed: (x_tr, train_labels(task_name, y_tr, noise, seed)),
                evaluate=lambda model: accuracy(model, x_te, y_te), epochs=epochs, rho=rho, batch_size=BATCH,
                task=task_name, schedule=cosine, curve=True, **BASE)


def as_result(run: dict) -> dict:
    """A study run as this script's JSON keeps it."""
    return {"test": run["score"], "seconds": run["seconds"], "epochs": run["epochs"], "curve": run["curve"]}


def train(task, plan: Plan, seed: int, epochs: int, rho: float, noise: float = 0.0) -> dict:
    """One run of ``task`` (a :class:`Task` whose training labels are already seed ``seed``'s) with
    nothing logged, through ``hetsam.study.Runs``: ``{"test", "seconds", "epochs", "curve"}``."""
    x_tr, y_tr, _, _, x_te, y_te = task
    runs = hetsam.study.Runs(lambda: model_for(task.name, x_tr), loss_fn, (x_tr, y_tr),
                             lambda model: accuracy(model, x_te, y_te), epochs=epochs, rho=rho, batch_size=BATCH,
                             task=task.name, schedule=cosine, curve=True, **BASE)
    return as_result(runs.run(plan, seed))


def seeded_tasks(name: str, seeds: int, noise: float, subset: int | None) -> list[Task]:
    """The task's tensors once per seed (digits, mnist5k: that seed's noisy training labels)."""
    x_tr, y_tr, *rest = load_task(name, noise)
    if subset:
        x_tr, y_tr = x_tr[:subset], y_tr[:subset]
    return [Task(name, (x_tr, train_labels(name, y_tr, noise, s), *rest)) for s in range(seeds)]


# ---- the study ----------------------------------------------------------------------------------
def run_task(name: str, common: dict, args, plans: dict[str, Plan], log, counts: dict) -> tuple[dict, list]:
    """One task (``common``: its :func:`settings`): the equal-epoch study, then the runs within
    each budget; ``(result, records)``."""
    path = runs_path(args, name)
    if args.planner:
        chosen = planner_choice(name, *common["train_data"](0), args.planner_budget, log, args.planner_profile)
        if chosen.spec.baseline:
            log(f"{name}: the planner chose {chosen.describe()}, a baseline: its runs are that row")
        else:
            plans = {**plans, f"planner: {chosen.describe()}"[:200]: chosen}
    study = hetsam.study(**common, plans=plans, seeds=args.seeds, out=None, runs=path, progress=False, log=log)
    counts["trained"] += study.trained
    counts["reused"] += study.reused
    labels = list(plans)
    equal = {lab: [as_result(r) for r in study.runs[lab]] for lab in labels}
    sgd_s = [r["seconds"] for r in equal["sgd"]]
    ratio = {lab: statistics.median(r["seconds"] / s for r, s in zip(equal[lab], sgd_s)) for lab in labels}
    budgets: dict[str, dict[str, list[dict]]] = {}
    runs = hetsam.study.Runs(**common, runs=path)  # the same settings and log: one training implementation
    for b in args.budgets:
        budgets[str(b)] = {}
        for lab in labels:
            epochs = max(1, round(args.epochs * b / ratio[lab]))
            budgets[str(b)][lab] = [as_result(runs.run(plans[lab], s, epochs=epochs, label=lab))
                                    for s in range(args.seeds)]
        log(f"{name}: budget {b:g} x SGD done")
    counts["trained"] += runs.trained
    counts["reused"] += runs.reused
    result = {"labels": labels, "equal_epochs": equal, "time_ratio": ratio, "budgets": budgets,
              "plans": {lab: plans[lab].to_dict() for lab in labels}}
    return result, study.records


def runs_path(args, task: str) -> str | None:
    prefix = args.runs or args.json
    return None if prefix is None else f"{prefix}.{task}.runs.json"


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_task_arguments(ap)
    ap.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",") if x.strip()], default=list(BUDGETS),
                    help="time budgets, x SGD's time ('' for none: shares only)")
    ap.add_argument("--only", default=None, help="comma-separated labels or families to run (sgd and sam always run)")
    ap.add_argument("--planner", action="store_true", help="also run the planner's choice for this machine")
    ap.add_argument("--planner-budget", type=float, default=1.1, help="the planner's step budget, x SGD (default 1.1)")
    ap.add_argument("--planner-profile", default=None, help="plan on this profile (a path or a bundled name) "
                                                            "instead of measuring this machine")
    ap.add_argument("--json", default=None, help="every run, for --from, planner_frontier.py, evidence_from_runs.py")
    ap.add_argument("--plot", default=None, help="the accuracy within each budget (a matplotlib format: .png, .pdf...)")
    ap.add_argument("--markdown", default=None, help="also write the tables as Markdown here")
    ap.add_argument("--evidence", default=None, help="write the equal-epoch runs' evidence records here")
    ap.add_argument("--runs", default=None, help="the run logs' prefix: PREFIX.<task>.runs.json (default: --json)")
    ap.add_argument("--from", dest="from_json", default=None,
                    help="train nothing: print, plot and tabulate a previous --json run")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.from_json:
            return report_only(args)
        check_task_arguments(ap, args, min_seeds=2)  # the runs are paired
        if args.budgets and not all(math.isfinite(b) and 0 < b <= 100 for b in args.budgets):
            ap.error("--budgets: each above 0 and at most 100 (x SGD's time)")
        if not (math.isfinite(args.planner_budget) and 1 <= args.planner_budget <= 100):
            ap.error("--planner-budget: 1 to 100 (x SGD's step)")
        if args.plot and not args.budgets:
            raise HetsamInputError("--plot draws the accuracy within each time budget: give --budgets, or leave "
                                   "--plot out")
        tasks = list(dict.fromkeys(t for t in args.tasks.split(",") if t))
        check_outputs(json=args.json, plot=args.plot, markdown=args.markdown, evidence=args.evidence,
                      **{f"runs ({t})": runs_path(args, t) for t in tasks})
        plans = select(strategies(pools=len(os.sched_getaffinity(0)) >= 2), args.only)
        return run(args, tasks, plans)
    except HetsamInputError as exc:
        why = str(exc).replace("give the study another run log (out= or runs=)", "give another --runs PREFIX or --json")
        print(f"time_to_accuracy: {why}", file=sys.stderr)
        return 2


def run(args, tasks: list[str], plans: dict[str, Plan]) -> int:
    torch.set_num_threads(1)  # tiny models: one thread each; pools get one core each
    log = (lambda line: None) if args.quiet else (lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}",
                                                                        file=sys.stderr, flush=True))
    common = {task: settings(task, args.epochs, args.rho, args.noise, args.train_subset) for task in tasks}
    for task in tasks:  # a run log of other settings is refused here, before anything trains
        hetsam.study.Runs(**common[task], runs=runs_path(args, task))
    started = time.perf_counter()
    results, records, counts = {}, [], {"trained": 0, "reused": 0}
    meta = {"args": dict(vars(args)), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "hetsam": hetsam.__version__}
    for task in tasks:
        result, found = run_task(task, common[task], args, plans, log, counts)
        result["summary"] = summarize(result)
        print_table(task, result["summary"], args.seeds, args.epochs)
        results[task] = result
        if args.evidence:
            from evidence_from_runs import as_hetsam

            records += as_hetsam(found, task, meta["args"], meta)
    took = time.perf_counter() - started
    saved = "" if runs_path(args, tasks[0]) is None else f" (run logs {runs_path(args, '<task>')})"
    print(f"\nbenchmark time: {took:.0f} s; {counts['trained']} run(s) trained, {counts['reused']} reused from the "
          f"run logs{saved}")
    meta["seconds"] = took
    write_outputs(args, results, meta, records)
    return 0


def write_outputs(args, results: dict, meta: dict, records: list) -> None:
    from hetsam.io import write_text

    if args.json:
        write_text(args.json, json.dumps(finite({"meta": meta, "tasks": results}), indent=1, allow_nan=False),
                   "results")
    if args.plot:
        plot(results, args.plot)
    if args.markdown:
        write_text(args.markdown, markdown(results, args.seeds, args.epochs), "tables")
    if args.evidence:
        if records:
            from hetsam.study.result import write_evidence

            write_evidence(args.evidence, records, provenance={
                "what": "hetsam's own paired time-to-accuracy runs at equal epochs", "args": finite(meta["args"])})
            print(f"wrote {len(records)} evidence record(s) ({sum(r.has_number for r in records)} with a share) "
                  f"to {args.evidence}")
        else:
            print(f"no evidence records: no strategy besides sgd and sam ran; {args.evidence} not written")


def report_only(args) -> int:
    check_outputs(plot=args.plot, markdown=args.markdown)
    data = load_results(args.from_json)
    results, run_args = data["tasks"], data["meta"]["args"]
    if args.plot and not run_args.get("budgets"):
        raise HetsamInputError(f"--plot draws the accuracy within each time budget, and {args.from_json} has none; "
                               "leave --plot out")
    for task, result in results.items():
        result["summary"] = summarize(result)
        print_table(task, result["summary"], run_args["seeds"], run_args["epochs"])
    if args.plot:
        plot(results, args.plot)
    if args.markdown:
        from hetsam.io import write_text

        write_text(args.markdown, markdown(results, run_args["seeds"], run_args["epochs"]), "tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
