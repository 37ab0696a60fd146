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

Strategies: sgd, sam, rst (p = 0.1, 0.25, 0.5), interval (k = 2, 5, 10), late_phase (start = 0.5,
0.75, 0.9), msam (ρ = 0.3, 1, 3: 3 is the MSAM authors' CIFAR radius), AsyncSAM lookahead
time-sliced (b' = 8, 16, 32), AsyncSAM with the paper's independent ascent batches time-sliced
(b' = 16, 64), AsyncSAM lookahead on two one-core pools (b' = 16, 64), SAMPa on pools, and the
planner's own choice for this machine (``--planner``).

Outputs: a table per task (accuracy ± std at E epochs, share, time × SGD, accuracy at each
budget), the Pareto frontier of accuracy against time, ``--json`` (every run), ``--plot``
(accuracy-vs-time curves with the frontier). The shares feed the planner's fidelity table
(``hetsam/data/evidence/hetsam.json``, made by ``python examples/evidence_from_runs.py results.json``).

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
from hetsam import Plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tasks import (Task, accuracy, add_task_arguments, check_task_arguments, finite, load_task, loss_fn,  # noqa: E402
                    model_for, train_labels)

BATCH = 64
BUDGETS = (1.0, 1.1, 1.25, 1.5)


# ---- what runs ------------------------------------------------------------------------------------
def strategies(pools: bool) -> dict[str, tuple[Plan, str]]:
    """label -> (plan, executor). Pool arrangements need two usable cores."""
    out: dict[str, tuple[Plan, str]] = {"sgd": (Plan("sgd"), "inline"), "sam": (Plan("sam"), "inline")}
    for p in (0.1, 0.25, 0.5):
        out[f"rst p={p}"] = (Plan("rst", sam_probability=p), "inline")
    for k in (2, 5, 10):
        out[f"interval k={k}"] = (Plan("interval", options={"k": k}), "inline")
    for start in (0.5, 0.75, 0.9):
        out[f"late_phase start={start}"] = (Plan("late_phase", options={"start": start}), "inline")
    for rho in (0.3, 1.0, 3.0):
        out[f"msam rho={rho}"] = (Plan("msam", options={"rho": rho}), "inline")
    for bp in (8, 16, 32):
        out[f"async sliced b'={bp}"] = (Plan("async_sam", "cpu", "cpu", batch_size=BATCH, ascent_batch_size=bp), "threads")
    for bp in (16, 64):  # the AsyncSAM paper's policy: g(θ_s; B'_s) used at step s + τ
        out[f"async independent b'={bp}"] = (Plan("async_sam", "cpu", "cpu", batch_size=BATCH, ascent_batch_size=bp,
                                                   ascent_batches="independent"), "threads")
    if pools:
        for bp in (16, 64):
            out[f"async pools b'={bp}"] = (Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=BATCH,
                                                 ascent_batch_size=bp), "threads")
        out["sampa pools"] = (Plan("sampa", "cpu:0[0]", "cpu:0[1]", batch_size=BATCH), "threads")
    return out


def planner_choice(task, budget: float, log, profile=None) -> Plan:
    """The planner's plan for this task's model on this machine (profiled once, cached), within
    ``budget`` x SGD's step; on ``profile`` (a path or a bundled name) instead when given."""
    from hetsam.autosam.controller import PlannerOptions, plan_for_model

    x = task[0]
    options = PlannerOptions(budget=budget, profile=profile, profile_budget_seconds=20.0, progress=False)
    return plan_for_model(model_for(task.name, x), loss_fn, (x[:BATCH], task[1][:BATCH]), options, log=log).plan


def train(task, plan: Plan, executor: str, seed: int, epochs: int, rho: float) -> dict:
    """One run of ``task`` (a :class:`Task`); ``curve`` holds (training seconds so far, test
    accuracy) after every epoch."""
    x_tr, y_tr, x_va, y_va, x_te, y_te = task
    torch.manual_seed(seed)
    model = model_for(task.name, x_tr)
    order = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(x_tr), generator=order) for _ in range(epochs)]
    total = epochs * math.ceil(len(x_tr) / BATCH)
    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=rho, plan=plan, executor=executor, total_steps=total,
                         log=lambda line: None, guard=False, lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    seconds, curve = 0.0, []
    with opt:
        for epoch in range(epochs):
            batches = [(x_tr[idx], y_tr[idx]) for idx in perms[epoch].split(BATCH)]
            start = time.perf_counter()
            for batch in opt.prefetch(batches):
                opt.step(batch)
                sched.step()
            seconds += time.perf_counter() - start
            curve.append((seconds, accuracy(model, x_te, y_te)))
    return {"test": curve[-1][1], "seconds": seconds, "epochs": epochs, "curve": curve}


# ---- the study ----------------------------------------------------------------------------------
def seeded_tasks(name: str, seeds: int, noise: float, subset: int | None) -> list[Task]:
    """The task's tensors once per seed (digits, mnist5k: that seed's noisy training labels)."""
    x_tr, y_tr, *rest = load_task(name, noise)
    if subset:
        x_tr, y_tr = x_tr[:subset], y_tr[:subset]
    return [Task(name, (x_tr, train_labels(name, y_tr, noise, s), *rest)) for s in range(seeds)]


def run_task(name, args, plans, log) -> dict:
    tasks = seeded_tasks(name, args.seeds, args.noise, args.train_subset)
    if args.planner:
        chosen = planner_choice(tasks[0], args.planner_budget, log, args.planner_profile)
        plans = {**plans, f"planner: {chosen.describe()}": (chosen, "threads" if chosen.spec.uses_executor else "inline")}
    labels = list(plans)
    equal: dict[str, list[dict]] = {lab: [] for lab in labels}
    for seed in range(args.seeds):  # equal epochs; the order rotates so the machine's drift spreads
        for lab in labels[seed % len(labels):] + labels[:seed % len(labels)]:
            plan, ex = plans[lab]
            equal[lab].append(train(tasks[seed], plan, ex, seed, args.epochs, args.rho))
        log(f"{name}: seed {seed + 1}/{args.seeds} at equal epochs")
    sgd_s = [r["seconds"] for r in equal["sgd"]]
    ratio = {lab: statistics.median(r["seconds"] / s for r, s in zip(equal[lab], sgd_s)) for lab in labels}
    budgets: dict[str, dict[str, list[dict]]] = {}
    for b in args.budgets:
        budgets[str(b)] = {}
        for lab in labels:
            epochs = max(1, round(args.epochs * b / ratio[lab]))
            plan, ex = plans[lab]
            budgets[str(b)][lab] = [train(tasks[s], plan, ex, s, epochs, args.rho) for s in range(args.seeds)]
        log(f"{name}: budget {b:g} x SGD done")
    return {"labels": labels, "equal_epochs": equal, "time_ratio": ratio, "budgets": budgets,
            "plans": {lab: plans[lab][0].to_dict() for lab in labels}}


def paired_share(acc, sgd, sam) -> tuple[float, float]:
    """``mean(acc − sgd) / mean(sam − sgd)`` over paired seeds, and its standard error by the
    delta method with the covariance of the two paired differences (SAM's own gain is noisy too)."""
    d = [a - b for a, b in zip(acc, sgd)]
    e = [a - b for a, b in zip(sam, sgd)]
    n, md, me = len(d), statistics.mean(d), statistics.mean(e)
    if me <= 0 or n < 2:
        return float("nan"), float("nan")
    r = md / me
    cov = sum((x - md) * (y - me) for x, y in zip(d, e)) / (n - 1)
    var = (statistics.variance(d) - 2 * r * cov + r * r * statistics.variance(e)) / n / (me * me)
    return r, math.sqrt(max(var, 0.0))


def summarize(result: dict) -> list[dict]:
    equal, labels = result["equal_epochs"], result["labels"]
    sgd, sam = [r["test"] for r in equal["sgd"]], [r["test"] for r in equal["sam"]]
    rows = []
    for lab in labels:
        acc = [r["test"] for r in equal[lab]]
        diffs = [a - b for a, b in zip(acc, sgd)]
        share, se = paired_share(acc, sgd, sam)
        row = {"strategy": lab, "acc": statistics.mean(acc), "acc_std": _sd(acc),
               "gain_vs_sgd": statistics.mean(diffs), "gain_std": _sd(diffs), "share": share, "share_se": se,
               "time_x_sgd": result["time_ratio"][lab], "budgets": {}}
        for b, runs in result["budgets"].items():
            accs = [r["test"] for r in runs[lab]]
            row["budgets"][b] = {"acc": statistics.mean(accs), "acc_std": _sd(accs), "epochs": runs[lab][0]["epochs"],
                                 "time_x_sgd": statistics.mean(r["seconds"] for r in runs[lab]) /
                                 statistics.mean(r["seconds"] for r in equal["sgd"])}
        rows.append(row)
    return rows


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points no other point beats in both time (lower) and accuracy (higher), by time."""
    front, best = [], -math.inf
    for t, acc, lab in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((t, acc, lab))
            best = acc
    return front


def _sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


# ---- output -------------------------------------------------------------------------------------
def print_table(task: str, rows: list[dict], seeds: int, epochs: int) -> None:
    budgets = list(rows[0]["budgets"])
    print(f"\n{task}: {seeds} seed(s); accuracy after {epochs} epochs, share of SAM's paired gain, time per epoch "
          f"x SGD; then the accuracy reached within each budget (x SGD's time for {epochs} epochs)")
    head = f"{'strategy':46s} {'acc@E':>14s} {'share':>11s} {'time':>6s}" + "".join(f" {'@' + b + 'x':>14s}" for b in budgets)
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = "".join(f" {100 * r['budgets'][b]['acc']:6.2f} ± {100 * r['budgets'][b]['acc_std']:4.2f}" for b in budgets)
        print(f"{r['strategy'][:46]:46s} {100 * r['acc']:6.2f} ± {100 * r['acc_std']:4.2f} "
              f"{r['share']:5.0%} ±{r['share_se']:4.0%} {r['time_x_sgd']:5.2f}x{cells}")
    points = [(r["budgets"][b]["time_x_sgd"], r["budgets"][b]["acc"], r["strategy"]) for r in rows for b in budgets]
    if points:
        front = pareto(points)
        print("Pareto frontier (time x SGD, accuracy): " + "; ".join(f"{lab} {t:.2f}x {100 * a:.2f}%" for t, a, lab in front))
    sys.stdout.flush()


_FAMILY_COLOURS = {"sgd": "#7f7f7f", "sam": "#d62728", "rst": "#1f77b4", "interval": "#17becf", "late_phase": "#bcbd22",
                   "msam": "#2ca02c", "async": "#9467bd", "sampa": "#8c564b", "planner:": "#000000"}


def plot(results: dict, path: str) -> None:
    """Accuracy within each budget, one line per setting, coloured by strategy; the frontier is the
    best mean accuracy within each budget. The x axis is the nominal budget: the runs' measured
    times scatter around it with the machine's drift (the JSON keeps them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hetsam.io import atomic_path

    fig, axes = plt.subplots(1, len(results), figsize=(7.5 * len(results), 6), squeeze=False)
    for ax, (task, data) in zip(axes[0], results.items()):
        rows = data["summary"]
        budgets = list(rows[0]["budgets"])
        xs = [float(b) for b in budgets]
        seen: dict[str, int] = {}
        for r in rows:
            family = r["strategy"].split()[0]
            n = seen[family] = seen.get(family, -1) + 1
            ys = [100 * r["budgets"][b]["acc"] for b in budgets]
            ax.plot(xs, ys, color=_FAMILY_COLOURS.get(family, "#444444"), ls=("-", "--", ":", "-.")[n % 4],
                    marker="osd^"[n % 4], ms=4, lw=2.5 if family == "planner:" else 1.2, alpha=0.85,
                    label=r["strategy"][:40])
        best = [max(rows, key=lambda r: r["budgets"][b]["acc"]) for b in budgets]
        ax.plot(xs, [100 * r["budgets"][b]["acc"] for r, b in zip(best, budgets)], "k--", lw=2.5, alpha=0.4,
                label="frontier (best within each budget)", zorder=0)
        for x, r, b in zip(xs, best, budgets):
            ax.annotate(r["strategy"][:24], (x, 100 * r["budgets"][b]["acc"]), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=7)
        ax.set_xticks(xs, [f"{x:g}x" for x in xs])
        ax.set_xlabel("time budget (x SGD's time for the same epochs)")
        ax.set_ylabel("test accuracy (%), mean over seeds")
        ax.set_title(f"{task}: accuracy reached within each time budget")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    with atomic_path(path, "plot") as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)


def markdown(results: dict, seeds: int, epochs: int) -> str:
    """The tables for the README: per task, every strategy's accuracy after E epochs, share, time
    and accuracy within each budget (mean ± std over seeds)."""
    out = []
    for task, data in results.items():
        rows = data["summary"]
        budgets = list(rows[0]["budgets"])
        head = ["strategy", f"acc after {epochs} epochs", "share of SAM's gain", "time per epoch x SGD",
                *(f"acc within {b}x" for b in budgets)]  # no empty column without budgets
        out += [f"**{task}** ({seeds} seeds; accuracy in %, mean ± std; share ± its standard error)", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            share = "-" if r["strategy"] in ("sgd", "sam") else f"{r['share']:.0%} ± {r['share_se']:.0%}"
            cells = " | ".join(f"{100 * r['budgets'][b]['acc']:.2f} ± {100 * r['budgets'][b]['acc_std']:.2f}"
                               for b in budgets)
            out.append(f"| {r['strategy']} | {100 * r['acc']:.2f} ± {100 * r['acc_std']:.2f} | {share} | "
                       f"{r['time_x_sgd']:.2f} |" + (f" {cells} |" if cells else ""))
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_task_arguments(ap)
    ap.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",") if x.strip()], default=list(BUDGETS),
                    help="time budgets, x SGD's time ('' for none: shares only)")
    ap.add_argument("--only", default=None, help="comma-separated labels to run (sgd and sam always run)")
    ap.add_argument("--planner", action="store_true", help="also run the planner's choice for this machine")
    ap.add_argument("--planner-budget", type=float, default=1.1, help="the planner's step budget, x SGD (default 1.1)")
    ap.add_argument("--planner-profile", default=None, help="plan on this profile (a path or a bundled name) "
                                                            "instead of measuring this machine")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--markdown", default=None, help="also write the tables as Markdown here")
    ap.add_argument("--from", dest="from_json", default=None,
                    help="train nothing: print, plot and tabulate a previous --json run")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.from_json:
        return report_only(args)
    check_task_arguments(ap, args, min_seeds=2)  # the runs are paired
    if args.budgets and not all(math.isfinite(b) and 0 < b <= 100 for b in args.budgets):
        ap.error("--budgets: each above 0 and at most 100 (x SGD's time)")
    if not (math.isfinite(args.planner_budget) and 1 <= args.planner_budget <= 100):
        ap.error("--planner-budget: 1 to 100 (x SGD's step)")
    torch.set_num_threads(1)  # tiny models: one thread each; pools get one core each
    log = (lambda line: None) if args.quiet else (lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}",
                                                                        file=sys.stderr, flush=True))
    plans = strategies(pools=len(os.sched_getaffinity(0)) >= 2)
    if args.only:
        keep = {"sgd", "sam", *(s.strip() for s in args.only.split(","))}
        plans = {k: v for k, v in plans.items() if k in keep}
    started = time.perf_counter()
    results = {}
    for task in args.tasks.split(","):
        result = run_task(task, args, plans, log)
        result["summary"] = summarize(result)
        print_table(task, result["summary"], args.seeds, args.epochs)
        results[task] = result
    took = time.perf_counter() - started
    print(f"\nbenchmark time: {took:.0f} s")
    if args.json:
        from hetsam.io import write_text

        meta = {"args": {k: v for k, v in vars(args).items()}, "seconds": took, "date": time.strftime("%Y-%m-%d"),
                "torch": torch.__version__, "hetsam": hetsam.__version__}
        write_text(args.json, json.dumps(finite({"meta": meta, "tasks": results}), indent=1, allow_nan=False), "results")
    if args.plot and args.budgets:
        plot(results, args.plot)
    if args.markdown:
        from hetsam.io import write_text

        write_text(args.markdown, markdown(results, args.seeds, args.epochs), "tables")
    return 0


def report_only(args) -> int:
    from hetsam import HetsamInputError
    from hetsam.io import read_json, write_text

    try:
        data = read_json(args.from_json, "results")
        results, run = data["tasks"], data["meta"]["args"]
    except (HetsamInputError, KeyError, TypeError) as exc:
        print(f"time_to_accuracy: {args.from_json} is not a --json file of this script ({exc})", file=sys.stderr)
        return 2
    for task, result in results.items():
        result["summary"] = summarize(result)
        print_table(task, result["summary"], run["seeds"], run["epochs"])
    if args.plot and run["budgets"]:
        plot(results, args.plot)
    if args.markdown:
        write_text(args.markdown, markdown(results, run["seeds"], run["epochs"]), "tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
