"""What ``examples/time_to_accuracy.py`` prints and draws from its results (also for ``--from``):
the per-task summary (accuracy, share of SAM's paired gain, time), the tables, the Pareto frontier,
the figure of accuracy within each time budget and the Markdown tables."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from hetsam.evidence.records import paired_share

__all__ = ["summarize", "pareto", "print_table", "plot", "markdown", "paired_share"]


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
        for b, runs in result.get("budgets", {}).items():
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
        share = f"{r['share']:5.0%} ±{r['share_se']:4.0%}" if math.isfinite(r["share"]) else f"{'-':>11s}"
        print(f"{r['strategy'][:46]:46s} {100 * r['acc']:6.2f} ± {100 * r['acc_std']:4.2f} "
              f"{share} {r['time_x_sgd']:5.2f}x{cells}")
    sam, sgd = (next(r for r in rows if r["strategy"] == k) for k in ("sam", "sgd"))
    if not math.isfinite(sam["share"]):
        print(f"{task}: SAM did not beat SGD over these {seeds} seed(s) ({100 * (sam['acc'] - sgd['acc']):+.2f} "
              "points): no share can be measured (the '-' above); more seeds or epochs may show SAM's gain")
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
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=110)
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
            share = ("-" if r["strategy"] in ("sgd", "sam") or r["share"] is None or not math.isfinite(r["share"])
                     else f"{r['share']:.0%} ± {r['share_se']:.0%}")
            cells = " | ".join(f"{100 * r['budgets'][b]['acc']:.2f} ± {100 * r['budgets'][b]['acc_std']:.2f}"
                               for b in budgets)
            out.append(f"| {r['strategy']} | {100 * r['acc']:.2f} ± {100 * r['acc_std']:.2f} | {share} | "
                       f"{r['time_x_sgd']:.2f} |" + (f" {cells} |" if cells else ""))
        out.append("")
    return "\n".join(out)
