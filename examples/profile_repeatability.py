"""How repeatable are the ratios a profile gives the planner? Compare two profiles of one machine.

The planner lives on ratios, not absolute times: t(b')/t(b) decides the ascent batch, and a
pool's time against its socket's decides where the ascent runs. A shared machine drifts by tens
of percent over minutes, so two profiles taken ten minutes apart differ in absolute times; what
matters is whether they agree on the ratios.

    python examples/profile_repeatability.py A.json B.json

prints, for every device both profiles measured, the relative difference of t(b)/t(B) at each
batch b < B (B the largest), and of t(pool)/t(socket) at each batch both measured, then the
median and the largest of each kind. ``--json`` prints the same as JSON. To take the two
profiles::

    hetsam profile --model resnet20 --batch-size 64 --out A.json
    sleep 600
    hetsam profile --model resnet20 --batch-size 64 --out B.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from hetsam.errors import HetsamInputError
from hetsam.hardware.names import parse_device
from hetsam.profiling.schema import load_profile


def ratio_differences(a, b) -> dict[str, list[tuple[str, float]]]:
    """``{"batch": [(label, rel. difference), ...], "pool": [...]}`` between profiles a and b."""
    ta = {d.id: dict(zip(d.grad_seconds.batch_sizes, d.grad_seconds.median)) for d in a.devices}
    tb = {d.id: dict(zip(d.grad_seconds.batch_sizes, d.grad_seconds.median)) for d in b.devices}
    out: dict[str, list[tuple[str, float]]] = {"batch": [], "pool": []}
    for dev in sorted(set(ta) & set(tb)):
        common = sorted(set(ta[dev]) & set(tb[dev]))
        if len(common) < 2:
            continue
        top = common[-1]
        for n in common[:-1]:
            ra, rb = ta[dev][n] / ta[dev][top], tb[dev][n] / tb[dev][top]
            out["batch"].append((f"{dev} t({n})/t({top})", rb / ra - 1))
        socket = parse_device(dev).socket_id
        if parse_device(dev).positions is not None and socket in ta and socket in tb:
            for n in sorted(set(common) & set(ta[socket]) & set(tb[socket])):
                ra, rb = ta[dev][n] / ta[socket][n], tb[dev][n] / tb[socket][n]
                out["pool"].append((f"{dev}/{socket} at {n}", rb / ra - 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        diffs = ratio_differences(load_profile(args.a), load_profile(args.b))
    except HetsamInputError as exc:
        print(f"profile_repeatability: {exc}", file=sys.stderr)
        return 2
    summary = {kind: {"median_abs": statistics.median(abs(d) for _, d in rows), "max_abs": max(abs(d) for _, d in rows),
                      "rows": [{"ratio": label, "difference": d} for label, d in rows]}
               for kind, rows in diffs.items() if rows}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for kind, s in summary.items():
        title = "t(b)/t(B)" if kind == "batch" else "t(pool)/t(socket)"
        print(f"{title}: median |difference| {s['median_abs']:.1%}, largest {s['max_abs']:.1%}")
        for row in s["rows"]:
            print(f"  {row['ratio']:<36} {row['difference']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
