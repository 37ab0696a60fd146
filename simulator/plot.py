"""``hetsam simulate --plot``: a Gantt chart of a few iterations and a bar chart of strategies.

matplotlib is imported inside :func:`plot_simulation` only (Agg backend), so importing
``hetsam.simulator`` never pays for it.
"""

from __future__ import annotations

__all__ = ["plot_simulation", "plot_format", "bar_labels", "COLOURS"]

COLOURS = {
    "descent": "#1f77b4",
    "update": "#17becf",
    "ascent": "#ff7f0e",
    "copy": "#9467bd",
    "handover": "#bcbd22",
    "wait": "#d62728",
    "loader": "#8c564b",
    "allreduce": "#2ca02c",
}
_LEGEND = {"descent": "descent gradient", "update": "update", "ascent": "ascent gradient", "copy": "copy θ / ĝ",
           "handover": "the executor's hand-over (wake-up, load, return)",
           "wait": "descent waits for ĝ", "loader": "data loading", "allreduce": "ring all-reduce (DDP bucket)"}


def _seconds_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1.0:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def plot_format(path) -> str:
    """The file format ``path``'s suffix names, if matplotlib writes it; else a one-line error.
    Checked before any simulation runs, so a bad name costs nothing."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from hetsam.errors import HetsamInputError

    formats = FigureCanvasAgg.get_supported_filetypes()
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix not in formats:
        named = f"format {suffix!r}" if suffix else "no format (the file name has no suffix)"
        raise HetsamInputError(f"--plot {str(path)!r} names {named}; end the name with one matplotlib writes: "
                               f"{', '.join('.' + f for f in sorted(formats))}")
    return suffix


def plot_simulation(result, comparisons, path, *, title: str | None = None, budget: float | None = None) -> None:
    """Save the figure for ``result`` (a SimResult) and ``comparisons`` (the rows of
    ``hetsam.planning.compare``, top first: ``ranked`` gives the planner's order) to exactly
    ``path``, atomically (``hetsam.io``), in the format its suffix names. ``budget``: the
    planner's, as a multiple of SGD's step, drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from hetsam.io import atomic_path

    fig, (ax_g, ax_b) = plt.subplots(
        2, 1, figsize=(11, 8.5), gridspec_kw={"height_ratios": [1.0, 1.15], "hspace": 0.55}
    )
    _gantt(ax_g, result, Patch)
    _bars(ax_b, comparisons, budget)
    fig.suptitle(title or f"hetsam simulate: {result.plan.describe()}", fontsize=12, fontweight="bold")
    try:
        with atomic_path(path, "plot") as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", format=plot_format(path))
    finally:
        plt.close(fig)


def _gantt(ax, result, Patch) -> None:
    tracks = list(result.tracks)
    events = result.timeline
    if not events:
        ax.text(0.5, 0.5, "no timeline recorded", ha="center", va="center", transform=ax.transAxes)
        return
    end = max(e.start + e.duration for e in events)
    scale, unit = _seconds_unit(end)
    rows = {t: len(tracks) - 1 - i for i, t in enumerate(tracks)}
    used = set()
    min_width = end * scale / 300  # sub-pixel copies are widened so that they show
    widened = False
    for e in events:
        y = rows[e.track]
        h = 0.36 if e.category == "wait" else 0.7
        width = e.duration * scale
        if 0 < width < min_width:
            width, widened = min_width, True
        ax.broken_barh([(e.start * scale, width)], (y - h / 2, h),
                       facecolors=COLOURS.get(e.category, "grey"), edgecolor="white", linewidth=0.6,
                       hatch="//" if e.category == "wait" else None, alpha=0.95)
        used.add(e.category)
        if e.category in ("descent", "ascent") and e.duration * scale > end * scale / 40:
            ax.text((e.start + e.duration / 2) * scale, y, str(e.iteration), ha="center", va="center",
                    fontsize=8, color="white", fontweight="bold")
    ax.set_yticks([rows[t] for t in tracks])
    ax.set_yticklabels([f"{t}\n{result.tracks[t]}" if result.tracks[t] else t for t in tracks], fontsize=9)
    ax.set_xlabel(f"time ({unit}); numbers are step indices" + ("; tiny intervals drawn wider" if widened else ""))
    ax.set_xlim(0, end * scale * 1.01)
    ax.set_ylim(-0.6, len(tracks) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    n = 1 + max(e.iteration for e in events)
    mean = result.iteration_seconds["mean"]
    ms, mu = _seconds_unit(mean)
    ax.set_title(f"first {n} iterations   (steady state: {mean * ms:.3g} {mu}/iteration, "
                 f"descent waits {result.descent_wait_per_iteration * ms:.3g} {mu}/iteration)", fontsize=10)
    handles = [Patch(facecolor=COLOURS[c], label=_LEGEND[c], hatch="//" if c == "wait" else None)
               for c in COLOURS if c in used]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(handles), fontsize=9,
              frameon=False)


def _bars(ax, comparisons, budget) -> None:
    """One bar per row, top first; each label carries the row's rank and share of SAM's gain (its
    interval), the planner's choice is green, the given plan orange, rows over the budget grey."""
    if not comparisons:
        ax.text(0.5, 0.5, "no comparison", ha="center", va="center", transform=ax.transAxes)
        return
    top = max(c.iteration_seconds for c in comparisons)
    scale, unit = _seconds_unit(top)
    ys = list(range(len(comparisons)))[::-1]  # the first row on top
    colours = ["#2ca02c" if c.is_choice else "#ff7f0e" if c.is_given else "#aec7e8" if c.fits_budget else "#c7c7c7"
               for c in comparisons]
    widths = [c.iteration_seconds * scale for c in comparisons]
    ax.barh(ys, widths, color=colours, edgecolor="black", linewidth=0.6, height=0.7)
    c0 = comparisons[0]
    sgd = c0.iteration_seconds / (1.0 + c0.overhead_vs_sgd) * scale
    ax.axvline(sgd, color="black", linestyle="--", linewidth=0.8, label="SGD")
    if budget is not None:
        ax.axvline(sgd * budget, color="#d62728", linestyle=":", linewidth=1.0, label=f"budget ({budget:g} x SGD)")
    for y, c, w in zip(ys, comparisons, widths):
        text = f"{w:.3g} {unit}   {100 * c.overhead_vs_sgd:+.1f}% vs SGD, {c.speedup_vs_sam:.2f}x SAM's speed"
        ax.text(w, y, "  " + text, va="center", ha="left", fontsize=8,
                fontweight="bold" if c.is_choice or c.is_given else None)
    ax.set_yticks(ys)
    ax.set_yticklabels(bar_labels(comparisons), fontsize=8)
    ax.set_xlabel(f"predicted seconds per iteration ({unit}); share = of SAM's gain [80% interval], * = a proxy")
    ax.set_xlim(0, max(widths) * 1.6)
    ax.set_title("strategies at the planner's settings, ranked by its objective (within the budget first)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    kinds = [("#2ca02c", "the planner's choice"), ("#ff7f0e", "this plan"), ("#aec7e8", "within the budget"),
             ("#c7c7c7", "over the budget")]
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.6, label=t) for c, t in kinds if c in colours]
    lines, _ = ax.get_legend_handles_labels()
    ax.legend(handles=lines + handles, loc="lower right", fontsize=8, frameon=False)


def bar_labels(comparisons) -> list[str]:
    """The comparison chart's labels, top first: ``1. MSAM rho=1  ·  share 77% [54,101]  (planner's choice)``."""
    out = []
    for c in comparisons:
        rank = f"{c.rank}. " if c.rank else ""
        marks = [m for m, on in (("planner's choice", c.is_choice), ("this plan", c.is_given)) if on]
        out.append(f"{rank}{c.label.replace(chr(10), '  ')}  ·  share {c.share_cell()}"
                   + (f"  ({', '.join(marks)})" if marks else ""))
    return out
