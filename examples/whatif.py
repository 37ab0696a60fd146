"""What-if study: the plan hetsam would choose on each reference machine in ``profiles/``.

    python examples/whatif.py                  # a table, both objectives
    python examples/whatif.py --plot whatif.png
    python examples/whatif.py --strategies rst,async_sam,sampa   # the two-device strategies only
    python examples/whatif.py --here --markdown                  # and this machine; the README's table

The reference machines are spec-scaled from a measured ResNet-20 profile (see each profile's
``provenance``); nothing here needs the hardware.
"""

from __future__ import annotations

import argparse

from hetsam.planning.search import plan
from hetsam.profiling.schema import load_profile, reference_profile_names


def study(batch_size: int | None = None, strategies: tuple | None = None, objective: str = "robust",
          here: bool = False) -> list[dict]:
    """One row per reference machine (and this machine, profiled with ResNet-20, when ``here``)."""
    machines = [(name, load_profile(name)) for name in reference_profile_names()]
    if here:
        from hetsam.profiling.cache import profile_this_machine

        machines.append(("this machine", profile_this_machine("resnet20", 64, progress=False)))
    rows = []
    for name, profile in machines:
        report = plan(profile, batch_size=batch_size, strategies=strategies, objective=objective)
        p, runner = report.plan, report.runner_up()
        rows.append({
            "machine": name, "provenance": profile.provenance.get("kind"), "plan": p.describe(),
            "strategy": p.strategy, "ascent_batch_size": p.option("ascent_batch_size", None), "batch_size": report.batch_size,
            "sgd_ms": report.sgd_seconds * 1e3, "sam_ms": report.sam_seconds * 1e3,
            "plan_ms": report.prediction.iteration_seconds * 1e3, "overhead_vs_sgd": report.prediction.overhead_vs_sgd,
            "budget_met": report.budget_met, "objective": objective,
            "expected_share": report.chosen.share.value if report.chosen.share else None,
            "share": report.chosen.share.cell(), "share_text": report.chosen.share.text(),
            "runner_up": None if runner is None else f"{runner.plan.describe()}, {runner.share.cell()}, "
                                                     f"{runner.prediction.overhead_vs_sgd:+.1%}",
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The README's table: per machine and objective, the choice, its share [80% interval] and the runner-up."""
    out = ["| machine | objective | chosen plan | vs SGD | share [80% interval] | runner-up (share, vs SGD) |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['machine']} | {r['objective']} | `{r['plan']}` | {r['overhead_vs_sgd']:+.1%} | {r['share']} "
                   f"| {('`' + r['runner_up'].replace(', ', '`, ', 1)) if r['runner_up'] else '-'} |")
    return "\n".join(out)


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
    ap.add_argument("--objective", choices=("robust", "expected", "both"), default="both")
    ap.add_argument("--here", action="store_true", help="also plan for this machine (profiles ResNet-20, cached)")
    ap.add_argument("--markdown", action="store_true", help="print the README's Markdown table instead")
    args = ap.parse_args(argv)
    strategies = tuple(args.strategies.split(",")) if args.strategies else None
    objectives = ("robust", "expected") if args.objective == "both" else (args.objective,)
    rows = [r for o in objectives for r in study(args.batch_size, strategies, o, args.here)]
    if not rows:
        print("no reference profiles found")
        return 1
    rows.sort(key=lambda r: (r["machine"] == "this machine", r["machine"], r["objective"] != "robust"))
    if args.markdown:
        print(markdown(rows))
    else:
        print(f"{'machine':22s} {'objective':9s} {'vs SGD':>7s} {'share [80% interval]':>20s}  plan  | runner-up")
        for r in rows:
            flag = "" if r["budget_met"] else "  (budget not met)"
            print(f"{r['machine']:22s} {r['objective']:9s} {r['overhead_vs_sgd']:+7.1%} {r['share']:>20s}  "
                  f"{r['plan']}{flag}  | {r['runner_up'] or '-'}")
    rows = [r for r in rows if r["objective"] == objectives[0]]
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
