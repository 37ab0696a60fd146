"""``hetsam simulate --plot``: a Gantt chart of a few iterations and a bar chart of strategies.

matplotlib is imported inside :func:`plot_simulation` only (Agg backend), so importing
``hetsam.simulator`` never pays for it.
"""

from __future__ import annotations

__all__ = ["plot_simulation", "plot_format", "COLOURS"]

COLOURS = {
    "descent": "#1f77b4",
    "update": "#17becf",
    "ascent": "#ff7f0e",
    "copy": "#9467bd",
    "wait": "#d62728",
    "loader": "#8c564b",
    "allreduce": "#2ca02c",
}
_LEGEND = {"descent": "descent gradient", "update": "update", "ascent": "ascent gradient", "copy": "copy θ / ĝ",
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


def plot_simulation(result, comparisons, path, *, title: str | None = None) -> None:
    """Save the figure for ``result`` (a SimResult) and ``comparisons`` (``compare_strategies``)
    to exactly ``path``, atomically (``hetsam.io``), in the format its suffix names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from hetsam.io import atomic_path

    fig, (ax_g, ax_b) = plt.subplots(
        2, 1, figsize=(11, 8.5), gridspec_kw={"height_ratios": [1.0, 1.15], "hspace": 0.55}
    )
    _gantt(ax_g, result, Patch)
    _bars(ax_b, comparisons)
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


def _bars(ax, comparisons) -> None:
    if not comparisons:
        ax.text(0.5, 0.5, "no comparison", ha="center", va="center", transform=ax.transAxes)
        return
    top = max(c.iteration_seconds for c in comparisons)
    scale, unit = _seconds_unit(top)
    ys = list(range(len(comparisons)))[::-1]  # SGD on top
    # comparisons start with the two baselines, SGD and SAM (hetsam.planning.compare)
    colours = ["#2ca02c" if c.is_given else "#7f7f7f" if i < 2 else "#aec7e8" for i, c in enumerate(comparisons)]
    widths = [c.iteration_seconds * scale for c in comparisons]
    ax.barh(ys, widths, color=colours, edgecolor="black", linewidth=0.6, height=0.7)
    sgd = comparisons[0].iteration_seconds * scale
    ax.axvline(sgd, color="black", linestyle="--", linewidth=0.8, label="SGD")
    for i, (y, c, w) in enumerate(zip(ys, comparisons, widths)):
        if i == 0:  # SGD
            text = f"{w:.3g} {unit}"
        else:
            text = f"{w:.3g} {unit}   {100 * c.overhead_vs_sgd:+.1f}% vs SGD, {c.speedup_vs_sam:.2f}x SAM's speed"
        ax.text(w, y, "  " + text, va="center", ha="left", fontsize=8,
                fontweight="bold" if c.is_given else None)
    ax.set_yticks(ys)
    ax.set_yticklabels([c.label.replace("\n", "  ") + ("  (this plan)" if c.is_given else "") for c in comparisons],
                       fontsize=8)
    ax.set_xlabel(f"predicted seconds per iteration ({unit}); lower is better")
    ax.set_xlim(0, max(widths) * 1.6)
    ax.set_title("strategies on this hardware", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
