"""``hetsam bench``'s text table."""

from __future__ import annotations

from hetsam.bench.arrangements import POOLS, SLICED
from hetsam.bench.results import ERROR_CONFIDENCE, ERROR_GOAL, BenchReport
from hetsam.profiling.stats import median

__all__ = ["format_report"]


def format_report(report: BenchReport) -> str:
    """An aligned text table of a :class:`BenchReport`, the winner and the conditions."""
    data = report.to_dict()
    head = ("strategy", "plan", "ms/step", "IQR", "vs SGD", "vs SAM", "wait ms", "wait %", "predicted", "error",
            "error vs SGD")
    rows = [head]
    for r, res in zip(data["results"], report.results):
        pred = r["predicted_iteration_seconds"]
        rows.append((
            r["label"], res.arrangement.plan.describe(), f"{r['measured_iteration_seconds'] * 1e3:.1f}",
            f"{r['iqr_seconds'] * 1e3:.1f}",
            "-" if r["throughput_vs_sgd"] is None else f"{r['throughput_vs_sgd']:.2f}x",
            "-" if r["throughput_vs_sam"] is None else f"{r['throughput_vs_sam']:.2f}x",
            f"{r['descent_wait_seconds'] * 1e3:.1f}", f"{r['descent_wait_fraction']:.1%}",
            "-" if pred is None else f"{pred * 1e3:.1f}",
            "-" if r["relative_error"] is None else f"{r['relative_error']:+.1%}",
            _error_cell(r),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [f"{report.model} at batch {report.batch_size}: {report.rounds} interleaved rounds of {report.steps} steps "
           f"per strategy (median and IQR over all timed steps; throughput = SGD's or SAM's median / this median)", ""]
    out += lines
    sam_like = [r for r, res in zip(data["results"], report.results) if res.arrangement.plan.spec.uses_executor]
    if sam_like:
        best = min(sam_like, key=lambda r: r["measured_iteration_seconds"])
        out.append("")
        line = f"fastest parallel arrangement here: {best['label']} ({best['measured_iteration_seconds'] * 1e3:.1f} ms/step"
        if best["throughput_vs_sam"] is not None:
            line += f", {best['throughput_vs_sam']:.2f}x SAM's throughput"
        out.append(line + ")")
        by_label = {r["label"]: r for r in sam_like}
        if POOLS in by_label and SLICED in by_label:
            p, t = by_label[POOLS], by_label[SLICED]
            faster, slower = (t, p) if t["measured_iteration_seconds"] < p["measured_iteration_seconds"] else (p, t)
            out.append(f"at b'={report.batch_size // 4}: {faster['label']} beats {slower['label']} by "
                       f"{slower['measured_iteration_seconds'] / faster['measured_iteration_seconds']:.2f}x")
    err = data["simulator_error"]
    if err is not None:
        line = f"simulator: median |error| {err['median_abs']:.1%}, worst {err['max_abs']:.1%}"
        if "vs_sgd_median_abs" in err:
            line += f"; relative to SGD {err['vs_sgd_median_abs']:.1%}, worst {err['vs_sgd_max_abs']:.1%}"
        out.append(f"{line} (profile: {report.profile_source})")
        if err.get("judged_rows") or err.get("unjudged_rows"):
            judged = (f"median {err['judged_vs_sgd_median_abs']:.1%}, worst {err['judged_vs_sgd_max_abs']:.1%} over "
                      f"{err['judged_rows']} judged row(s)") if err["judged_rows"] else "no row could be judged"
            out.append(f"error vs SGD round by round ({ERROR_CONFIDENCE:.0%} interval over the rounds): {judged}; "
                       f"{err['unjudged_rows']} row(s) not judged (interval wider than ±{ERROR_GOAL:.0%}: too noisy "
                       "to tell; more --rounds, or a quieter machine)")
    if err is not None and err.get("stated_rows"):
        out.append(f"hetsam's stated ± on plans on pools (the profile's worst pool/socket deviation, as hetsam plan shows "
                   f"it): the error's interval reached into it for {err['within_stated_rows']} of {err['stated_rows']} row(s)")
    if report.other_load:
        load = report.other_load
        out.append("other processes' CPU share per round: " + (", ".join(f"{x:.0%}" for x in load) if len(load) <= 10 else
                   f"median {median(load):.0%}, most {max(load):.0%} over {len(load)} rounds (each in the JSON)"))
    out += [f"note: {n}" for n in report.notes]
    return "\n".join(out)


def _error_cell(r: dict) -> str:
    """The per-round error relative to SGD with its interval; '?' marks a row too noisy to judge."""
    if r.get("error_vs_sgd_interval") is None:
        return "-" if r["error_vs_sgd"] is None else f"{r['error_vs_sgd']:+.1%}"
    low, high = r["error_vs_sgd_interval"]
    mark = "" if r["judged"] else " ?"
    stated = "" if r.get("stated_uncertainty_vs_sgd") is None else f" (stated ±{r['stated_uncertainty_vs_sgd']:.1%})"
    return f"{r['error_vs_sgd_rounds']:+.1%} [{low:+.1%},{high:+.1%}]{mark}{stated}"

