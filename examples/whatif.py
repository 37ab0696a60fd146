"""What-if study: the plan hetsam would choose on each reference machine in ``profiles/``.

    python examples/whatif.py                  # a table
    python examples/whatif.py --plot whatif.png
    python examples/whatif.py --strategies rst,async_sam,sampa   # the two-device strategies only

The reference machines are spec-scaled from a measured ResNet-20 profile (see each profile's
``provenance``); nothing here needs the hardware.
"""

from __future__ import annotations

import argparse

from hetsam.planning.search import plan
from hetsam.profiling.schema import load_profile, reference_profile_names


def study(batch_size: int | None = None, strategies: tuple | None = None) -> list[dict]:
    rows = []
    for name in reference_profile_names():
        profile = load_profile(name)
        report = plan(profile, batch_size=batch_size, strategies=strategies)
        p = report.plan
        rows.append({
            "machine": name, "provenance": profile.provenance.get("kind"), "plan": p.describe(),
            "strategy": p.strategy, "ascent_batch_size": p.ascent_batch_size, "batch_size": report.batch_size,
            "sgd_ms": report.sgd_seconds * 1e3, "sam_ms": report.sam_seconds * 1e3,
            "plan_ms": report.prediction.iteration_seconds * 1e3, "overhead_vs_sgd": report.prediction.overhead_vs_sgd,
            "budget_met": report.budget_met,
            "expected_share": report.chosen.share.value if report.chosen.share else None,
        })
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    y = list(range(len(rows)))
    rel = lambda key: [r[key] / r["sgd_ms"] for r in rows]  # noqa: E731  (step time relative to SGD)
    ax.barh([i + 0.27 for i in y], rel("sgd_ms"), height=0.25, label="SGD", color="#9e9e9e")
    ax.barh(y, rel("plan_ms"), height=0.25, label="hetsam plan", color="#1f77b4")
    ax.barh([i - 0.27 for i in y], rel("sam_ms"), height=0.25, label="SAM", color="#d62728")
    for i, r in enumerate(rows):
        ax.text(r["plan_ms"] / r["sgd_ms"], i, f"  {r['strategy']} {r['overhead_vs_sgd']:+.1%}"
                + ("" if r["budget_met"] else " (budget not met)"), va="center", fontsize=8)
    ax.axvline(1.05, color="#1f77b4", linestyle=":", linewidth=1, label="budget 1.05x SGD")
    ax.set_yticks(y, [f"{r['machine']}\n{r['sgd_ms']:.1f} ms SGD step" for r in rows], fontsize=8)
    ax.set_xlabel("predicted step time relative to SGD")
    ax.set_xlim(0, 2.75)
    ax.set_title("What hetsam plans on each reference machine (ResNet-20)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--plot", default=None, help="write a bar chart here (PNG)")
    ap.add_argument("--strategies", default=None, help="consider only these (comma-separated; default: all)")
    args = ap.parse_args(argv)
    rows = study(args.batch_size, tuple(args.strategies.split(",")) if args.strategies else None)
    if not rows:
        print("no reference profiles found")
        return 1
    print(f"{'machine':28s} {'b':>4s} {'SGD ms':>8s} {'SAM ms':>8s} {'plan ms':>8s} {'vs SGD':>8s} {'share':>6s}  plan")
    for r in rows:
        flag = "" if r["budget_met"] else "  (budget not met)"
        share = "-" if r["expected_share"] is None else f"{r['expected_share']:.0%}"
        print(f"{r['machine']:28s} {r['batch_size']:4d} {r['sgd_ms']:8.2f} {r['sam_ms']:8.2f} {r['plan_ms']:8.2f} "
              f"{r['overhead_vs_sgd']:+8.1%} {share:>6s}  {r['plan']}{flag}")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
