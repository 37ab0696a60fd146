"""What SAM costs at scale: the planner's choice on 1, 8 and 64 nodes of the reference machines.

    python examples/scale_study.py                       # the table, bundled reference profiles
    python examples/scale_study.py --nodes 1 8 64 512 --json scale.json
    python examples/scale_study.py --machine h100-xeon:8:2 --machine my-node.json:4

A machine is ``PROFILE:G[:S]``: a bundled reference profile name (``profiles/``) or a profile
path, ``G`` ranks (descent GPUs) per node and ``S`` CPU sockets per node (default: the
profile's). For each machine and node count it runs ``hetsam.planning.plan(profile, nodes=N,
devices_per_node=G)`` (the planner, confirmed by the simulator with DDP's bucketed ring
all-reduce and the slowest-of-n-ranks jitter; see ``hetsam/network.py``) and prints the chosen
plan, its predicted seconds per step, the data-parallel SGD step it is compared with, the
overhead vs SGD, what plain SAM would cost, the all-reduce time not hidden by the backward,
and the planner's own wall time. Network numbers come from the spec and network tables
unless ``--inter-node-bandwidth``/``--intra-node-bandwidth`` (GB/s) are given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hetsam.cost.model import CostModel  # noqa: E402
from hetsam.errors import HetsamInputError  # noqa: E402
from hetsam.planning.search import plan  # noqa: E402
from hetsam.simulator import simulate  # noqa: E402

# (profile, G ranks per node, S sockets per node or None); DGX H100 has 8 GPUs and 2 sockets
DEFAULT_MACHINES = ("h100-xeon:8:2", "2xa100:1", "2xa100:2", "a6000-epyc7452:1")
DEFAULT_NODES = (1, 8, 64)


def parse_machine(text: str) -> tuple[str, int, int | None]:
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return parts[0], int(parts[1]), int(parts[2])
        name, g = text.rsplit(":", 1)
        return name, int(g), None
    except ValueError:
        raise HetsamInputError(f"--machine {text!r} must look like PROFILE:G or PROFILE:G:S, e.g. h100-xeon:8:2") from None


def study(machines, nodes, *, network=None, seed=0) -> list[dict]:
    """One row per (machine, N): the chosen plan and its predicted overhead vs data-parallel SGD."""
    rows = []
    for name, g, s in machines:
        cm = CostModel(name)
        for n in nodes:
            kwargs = dict(network or {})
            if s is not None:
                kwargs["sockets_per_node"] = s
            t0 = time.perf_counter()
            report = plan(cm, nodes=n, devices_per_node=g, seed=seed, **kwargs)
            wall = time.perf_counter() - t0
            p = report.plan
            exposed = 0.0
            if n * g > 1:
                exposed = simulate(p, cm, iterations=2000, seed=seed, nodes=n, devices_per_node=g,
                                   **kwargs).allreduce_exposed_per_iteration
            rows.append({
                "machine": Path(name).stem, "devices_per_node": g, "sockets_per_node": s, "nodes": n, "ranks": n * g,
                "strategy": p.strategy, "descent": p.descent_device,
                "ascent": p.effective_ascent_device if p.spec.uses_executor else None,
                "ascent_batch_size": p.option("ascent_batch_size", None),
                "staleness": p.spec.staleness(p) or None,
                "sam_probability": p.option("sam_probability", None),
                "batch_size": report.batch_size,
                "iteration_seconds": report.prediction.iteration_seconds,
                "sgd_seconds": report.sgd_seconds, "sam_seconds": report.sam_seconds,
                "overhead_vs_sgd": report.prediction.overhead_vs_sgd,
                "sam_overhead_vs_sgd": report.sam_seconds / report.sgd_seconds - 1.0,
                "budget_met": report.budget_met,
                "allreduce_exposed_seconds": exposed,
                "ring": report.cluster["ring_link"]["name"] if report.cluster and "ring_link" in report.cluster else None,
                "plan": p.to_dict(), "planner_seconds": wall,
            })
    return rows


def _choice(r: dict) -> str:
    if r["strategy"] == "async_sam":
        return f"AsyncSAM {r['descent']} + {r['ascent']} b'={r['ascent_batch_size']} tau={r['staleness']}"
    if r["strategy"] == "sampa":
        return f"SAMPa {r['descent']} + {r['ascent']}"
    if r["strategy"] == "rst":
        return f"RST p={r['sam_probability']:.3g} on {r['descent']}"
    return f"{r['strategy']} on {r['descent']}"


def format_table(rows: list[dict]) -> str:
    head = ("machine", "G", "N", "ranks", "chosen plan", "ms/step", "SGD ms", "vs SGD", "SAM vs SGD", "AR exposed ms",
            "met", "plan s")
    out = [head]
    for r in rows:
        out.append((
            r["machine"] + (f" ({r['sockets_per_node']} sockets)" if r["sockets_per_node"] else ""),
            str(r["devices_per_node"]), str(r["nodes"]), str(r["ranks"]), _choice(r),
            f"{1e3 * r['iteration_seconds']:.3f}", f"{1e3 * r['sgd_seconds']:.3f}", f"{r['overhead_vs_sgd']:+.1%}",
            f"{r['sam_overhead_vs_sgd']:+.1%}", f"{1e3 * r['allreduce_exposed_seconds']:.3f}",
            "yes" if r["budget_met"] else "no", f"{r['planner_seconds']:.2f}",
        ))
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in out]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", action="append", default=None, metavar="PROFILE:G[:S]",
                        help=f"profile name or path, ranks per node, sockets per node (default: {' '.join(DEFAULT_MACHINES)})")
    parser.add_argument("--nodes", type=int, nargs="+", default=list(DEFAULT_NODES), help="node counts (default 1 8 64)")
    parser.add_argument("--inter-node-bandwidth", type=float, default=None, metavar="GBps", help="a node's network, GB/s")
    parser.add_argument("--intra-node-bandwidth", type=float, default=None, metavar="GBps", help="GPU-GPU link, GB/s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT.json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    try:
        machines = [parse_machine(m) for m in (args.machine or DEFAULT_MACHINES)]
        network = {k: v * 1e9 for k, v in (("inter_node_bandwidth", args.inter_node_bandwidth),
                                           ("intra_node_bandwidth", args.intra_node_bandwidth)) if v is not None}
        rows = study(machines, args.nodes, network=network, seed=args.seed)
    except HetsamInputError as exc:
        print(f"scale_study: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print("\nG ranks per node, N nodes; 'vs SGD' is the chosen plan's overhead over data-parallel SGD at the same scale; "
          "'AR exposed' is the all-reduce time per step not hidden by the backward (DDP buckets); times are simulated "
          "means (slowest of n ranks).")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
