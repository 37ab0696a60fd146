"""Fit the planner's table of expected shares of SAM's gain from a time-to-accuracy run.

    python examples/time_to_accuracy.py --json tta.json
    python examples/fit_shares.py tta.json --out hetsam/data/sam_shares.json

For every strategy and setting of the benchmark (paired seeds, equal epochs), the share on each
task is ``mean paired (acc − acc_SGD) / mean paired (acc_SAM − acc_SGD)``, with its standard error
by the delta method (``time_to_accuracy.paired_share``). The table keeps the inverse-variance
weighted mean over the tasks (a task where SAM's gain is small relative to the seeds' noise
counts for little) and its standard error, the per-task values, and the provenance (tasks,
seeds, epochs, date, the command). Settings that are
the same algorithm (AsyncSAM time-sliced or on pools at the same b') are pooled. The planner reads
the table through :mod:`hetsam.planning.shares`; a user can pass their own with ``--shares``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_accuracy import summarize  # noqa: E402

_SE_FLOOR = 0.05  # no task's estimate counts as exact
AXIS = {"rst": "sam_fraction", "interval": "sam_fraction", "late_phase": "sam_fraction",
        "async_sam": "ascent_fraction", "msam": "rho", "sam": None, "sampa": None, "sgd": None}


def coordinate(plan: dict, batch: int) -> float | None:
    """Where a plan sits on its strategy's axis (hetsam.planning.shares)."""
    name, opts = plan["strategy"], plan.get("options") or {}
    if name == "rst":
        return float(plan["sam_probability"])
    if name == "interval":
        return 1.0 / opts.get("k", 10)
    if name == "late_phase":
        return 1.0 - opts.get("start", 0.75)
    if name == "async_sam":
        return plan["ascent_batch_size"] / (plan.get("batch_size") or batch)
    if name == "msam":
        return float(opts.get("rho", 0.3))
    return None


def fit(results: dict, batch: int = 64) -> dict:
    meta, tasks = results["meta"], results["tasks"]
    for data in tasks.values():  # the shares and their errors, recomputed from the raw runs
        data["summary"] = summarize(data)
    points: dict[tuple, list] = defaultdict(list)  # (strategy, x) -> [(task, share, se)]
    staleness = {}
    for task, data in tasks.items():
        for row in data["summary"]:
            label = row["strategy"]
            if label.startswith("planner") or not math.isfinite(row["share"]):
                continue
            plan = data["plans"][label]
            name = plan["strategy"]
            if name == "sgd":
                continue
            x = coordinate(plan, batch)
            points[(name, x)].append((task, row["share"], row["share_se"]))
            if name == "async_sam":
                staleness[name] = (plan.get("staleness", 1), plan.get("ascent_batches", "lookahead"))
    if not points:
        raise SystemExit("fit_shares: SAM did not beat SGD on any task of this run, so no share can be measured; "
                         "train longer (--epochs) or with more seeds")
    strategies: dict[str, dict] = {}
    for (name, x), entries in sorted(points.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        by_task = defaultdict(list)
        for task, share, se in entries:
            by_task[task].append((share, se))
        per_task = {t: sum(s for s, _ in v) / len(v) for t, v in by_task.items()}
        se_task = {t: max(e for _, e in v) for t, v in by_task.items()}
        weights = {t: 1.0 / max(se_task[t], _SE_FLOOR) ** 2 for t in per_task}
        share = sum(weights[t] * per_task[t] for t in per_task) / sum(weights.values())
        se = 0.0 if name == "sam" else 1.0 / math.sqrt(sum(weights.values()))
        entry = strategies.setdefault(name, {"axis": AXIS.get(name), "points": []})
        point = {"share": round(share, 4), "se": round(se, 4), "per_task": {t: round(v, 4) for t, v in per_task.items()}}
        if entry["axis"] is not None:
            point = {"x": round(x, 6), **point}
        entry["points"].append(point)
        if name in staleness:
            entry["staleness"], entry["ascent_batches"] = staleness[name]
    strategies["sgd"] = {"axis": None, "points": [{"share": 0.0, "se": 0.0}]}  # by definition
    args = meta["args"]
    return {
        "schema_version": 1,
        "provenance": {
            "tasks": list(tasks), "seeds": args["seeds"], "epochs": args["epochs"], "rho": args["rho"],
            "date": meta["date"], "torch": meta["torch"], "hetsam": meta["hetsam"],
            "benchmark_seconds": round(meta["seconds"]),
            "command": "python examples/time_to_accuracy.py --json tta.json && python examples/fit_shares.py tta.json",
            "note": ("two small tasks (an MLP on digits with 40% label noise, and on MNIST-1D), paired seeds, equal "
                     "epochs: a prior for the planner, not a law; measure your own with the same commands"),
        },
        "strategies": strategies,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--out", default=None, help="write the table here (default: print it)")
    args = ap.parse_args(argv)
    from hetsam import HetsamInputError
    from hetsam.io import read_json

    try:
        table = fit(read_json(args.results, "results"))
    except (HetsamInputError, KeyError, TypeError) as exc:
        print(f"fit_shares: {args.results} is not a time_to_accuracy.py --json file ({exc})", file=sys.stderr)
        return 2
    text = json.dumps(table, indent=1)
    if args.out:
        from hetsam.io import write_text
        from hetsam.planning.shares import ShareTable

        ShareTable(table, "fitted table")  # what is written must load
        write_text(args.out, text + "\n", "share table")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
