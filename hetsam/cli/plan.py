"""``hetsam plan``: choose the plan that hides the ascent gradient on this (or a profiled) machine."""

from __future__ import annotations

import functools
import sys

from hetsam.cli._cluster import add_cluster_arguments, cluster_kwargs, format_cluster
from hetsam.cli._output import emit
from hetsam.cli.commands import COMMANDS
from hetsam.planning.options import add_flags

HELP = COMMANDS["plan"]


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--profile", help="profile JSON path or bundled reference name (default: profile this machine)")
    src.add_argument("--model", default=None, help="built-in model to profile this machine with (default: resnet20)")
    p.add_argument("--batch-size", type=int, default=None, help="descent batch size b (default: the profile's)")
    # the planner's options: declared (bounds, defaults, help) in hetsam.planning.options.OPTIONS
    add_flags(p, "budget", "max_staleness", "min_ascent_fraction", "reserve_cores", "ascent_batches")
    p.add_argument("--no-simulate", action="store_true", help="rank by the closed form only (skip the simulator)")
    add_flags(p, "profile_budget_seconds")
    p.add_argument("--refresh-profile", action="store_true", help="measure this machine again even if a cached profile exists")
    p.add_argument("--out", default=None, help="write the chosen plan as JSON here")
    p.add_argument("--json", action="store_true", help="print the chosen plan as JSON, with alternatives")
    add_flags(p, "strategies", "shares", "objective", "base_optimizer")
    p.add_argument("--all", action="store_true", help="list every candidate (default: hide dominated plans and a "
                                                       "strategy's slower plans beyond the budget)")
    add_cluster_arguments(p)


def run(args) -> int:
    from hetsam.errors import HetsamInputError
    from hetsam.planning.options import option
    from hetsam.planning.search import check_arguments, plan

    if args.batch_size is not None and args.batch_size < 1:
        raise HetsamInputError(f"--batch-size {args.batch_size} must be a positive integer")
    scale = cluster_kwargs(args)
    # every flag and the --shares file are checked before anything is measured
    _, evidence, _ = check_arguments(
        batch_size=args.batch_size or 1, budget=args.budget, max_staleness=args.max_staleness,
        min_ascent_fraction=args.min_ascent_fraction, reserve_cores=args.reserve_cores,
        strategies=_strategies(args.strategies), ascent_batches=args.ascent_batches, objective=args.objective,
        base_optimizer=args.base_optimizer, shares=args.shares)
    option("profile_budget_seconds").check(args.profile_budget_seconds, "--profile-budget-seconds")
    if args.out:
        from hetsam.io import check_writable

        check_writable(args.out, "plan")
    if args.profile is not None:
        from hetsam.profiling.cache import warning_lines
        from hetsam.profiling.schema import load_profile

        profile = load_profile(args.profile)
        for line in warning_lines(profile):
            print(line, file=sys.stderr)
    else:
        from hetsam.autosam import time_step_costs
        from hetsam.profiling.cache import profile_this_machine

        say = lambda line: print(line, file=sys.stderr)  # noqa: E731
        profile = profile_this_machine(args.model or "resnet20", args.batch_size or 64,
                                       budget_seconds=args.profile_budget_seconds, progress=not args.json,
                                       refresh=args.refresh_profile, log=say,
                                       finish=functools.partial(time_step_costs, progress=not args.json, log=say))
    report = plan(
        profile, batch_size=args.batch_size, budget=args.budget, max_staleness=args.max_staleness,
        min_ascent_fraction=args.min_ascent_fraction, reserve_cores=args.reserve_cores,
        ascent_batches=args.ascent_batches, simulate=not args.no_simulate, shares=evidence,
        strategies=_strategies(args.strategies), objective=args.objective, base_optimizer=args.base_optimizer, **scale,
    )
    if args.out:
        report.plan.save(args.out)
    return emit(args.json, report.to_dict, lambda: format_report(report, everything=args.all))


def format_report(report, everything: bool = False) -> str:
    """The header (baselines, the fixed per-step costs), the candidates in reading order
    (:meth:`PlanReport.shown`), the choice and why it won."""
    head = ("", "strategy", "descent", "ascent", "settings", "share", "s/step", "vs SGD", "vs SAM", "fits")
    rows = [head]
    shown, hidden = report.shown(everything)
    for c in shown:
        p = c.plan
        rows.append((
            "*" if p is report.plan else "",
            p.strategy,
            p.descent_device,
            p.effective_ascent_device if p.spec.uses_executor else "-",
            p.spec.settings(p, report.batch_size) or "-",
            c.share.cell() if c.share is not None else "-",
            f"{c.predicted_seconds:.4f}",
            f"{c.predicted_seconds / report.sgd_seconds - 1:+.1%}",
            f"{report.sam_seconds / c.predicted_seconds:.2f}x",
            "yes" if c.fits_budget else "no",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [
        f"batch size {report.batch_size}; SGD {report.sgd_seconds:.4f} s/step, SAM {report.sam_seconds:.4f} s/step, "
        f"budget {report.budget_seconds:.4f} s/step ({report.budget:g} x SGD)",
        *_step_costs(report),
        *format_cluster(report.cluster),
        "",
        *lines,
        "",
        f"chosen: {report.plan.describe()}  ({report.prediction.vs_sgd_text()}, "
        f"{report.prediction.speedup_vs_sam:.2f}x faster than SAM)"
        + ("" if report.budget_met else "  -- budget NOT met"),
        *_step_range(report.prediction),
        *_ratio_uncertainty(report.prediction),
        f"share of SAM's gain: {report.chosen.share.text()}",
        f"why: {report.why()}",
        f"objective: {report.objective}",
        f"shares: {_share_source(report)}",
    ]
    if hidden:
        out.append(f"({hidden} more candidate(s) hidden: dominated, or a strategy's slower plans beyond the budget; "
                   "--all lists them)")
    from hetsam._notes import note_lines

    out += note_lines(report.notes)
    return "\n".join(out)


def _step_costs(report) -> list[str]:
    """The fixed per-step terms on the chosen plan's descent device (CostModel.step_terms)."""
    cm = report.cost_model
    if cm is None:
        return []
    d = report.plan.descent_device
    t = cm.step_terms(d)
    how = "timed in AutoSAM's own steps" if t["timed"] else \
        f"the profiler's update {t['update'] * 1e3:.3f} ms + climb {t['climb'] * 1e3:.3f} ms on perturbed steps"
    return [f"step costs on {d} beside the passes: {t['plain'] * 1e3:.3f} ms, {t['perturbed'] * 1e3:.3f} ms on perturbed "
            f"steps ({how}), loop {t['loop'] * 1e3:.3f} ms (AutoSAM calibrates it on your steps)"]


def _share_source(report) -> str:
    level = report.chosen.share.level if report.chosen.share is not None else 0.8
    line = (f"share [{level:.0%} interval for a new task] from published tables, hetsam's benchmarks and your "
            "--shares study (README, \"Accuracy per second\"; hetsam.evidence)")
    if any(c.share is not None and c.share.is_proxy for c in report.candidates):
        line += "; * = no evidence places it: b'/b or p stands in, and the robust objective counts it as 0"
    return line


def _strategies(text: str | None) -> tuple[str, ...] | None:
    """``--strategies a,b`` as a tuple (the planner names an unknown one in its error)."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        from hetsam.errors import HetsamInputError

        raise HetsamInputError("--strategies is empty: give comma-separated names, e.g. --strategies async_sam,rst")
    return names


def _ratio_uncertainty(prediction) -> list[str]:
    """What the ± on "vs SGD" stands for (Prediction.ratio_uncertainty)."""
    if prediction.ratio_uncertainty is None:
        return []
    med, worst = prediction.ratio_uncertainty
    return [f"±: the plan runs on a pool and SGD on the whole socket; t(pool)/t(socket) moved by up to {worst:.1%} "
            f"(median {med:.1%}) between the profile's rounds, and its ratio to SGD moves with it; on a shared host "
            "profiles minutes apart can differ by more (compare side by side: hetsam bench)"]


def _step_range(prediction) -> list[str]:
    """Where 90% of the chosen plan's simulated steps lie: the profile's spread widens it; the
    typical (median) step above stays where it is."""
    if prediction.step_range is None:
        return []
    low, high = prediction.step_range
    return [f"step time: typical {prediction.iteration_seconds:.4g} s; 90% of simulated steps within "
            f"{low:.4g} to {high:.4g} s (the profile's measured spread)"]

