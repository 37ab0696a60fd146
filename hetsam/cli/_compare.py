"""``hetsam simulate``'s strategy comparison: the planner's report, made once per command, and
the comparison table (``hetsam.planning.compare``; torch-free)."""

from __future__ import annotations

from hetsam.cli._output import fmt_seconds

__all__ = ["Planner", "make_planner", "comparisons_for", "format_comparison"]


class Planner:
    """The planner's report on the simulated profile, made once, on first use (or the reason it
    refused: the comparison is then left out, and the numbers fall back to the Plan's defaults)."""

    def __init__(self, cm, kwargs: dict, also: tuple):
        self.cm, self.kwargs, self.also = cm, kwargs, also
        self.reports: dict = {}
        self.error: str | None = None

    def report(self, batch_size: int):
        from hetsam.errors import HetsamInputError
        from hetsam.planning.compare import planner_report

        if batch_size not in self.reports:
            try:
                self.reports[batch_size] = planner_report(self.cm, batch_size, also=self.also, **self.kwargs)
            except HetsamInputError as exc:
                self.reports[batch_size], self.error = None, str(exc)
        return self.reports[batch_size]


def make_planner(args, cm, scale: dict) -> Planner:
    """The command's planner from ``--budget``, ``--objective``, ``--base-optimizer``, ``--shares``."""
    shares = None
    if args.shares is not None:  # a bad file is bad input (exit 2), not a planner that refuses
        from hetsam.evidence import share_model

        shares = share_model(args.shares)
    kwargs = {"budget": args.budget, "objective": args.objective, "base_optimizer": args.base_optimizer,
              "shares": shares, **scale}
    return Planner(cm, kwargs, (args.strategy,) if args.strategy else ())


def comparisons_for(args, plan, cm, cluster, planner: Planner, notes: list) -> tuple:
    """The comparison's rows in the planner's order (``hetsam.planning.compare.ranked``) and the
    planner's settings; ``(None, None)`` with a note saying why when the planner refused."""
    from hetsam.errors import HetsamInputError
    from hetsam.planning.compare import compare_strategies, ranked

    b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
    report = planner.report(b)
    rows = None
    if report is not None:
        try:
            rows = compare_strategies(plan, cm, seed=args.seed, jitter=not args.no_jitter,
                                      loader_seconds=args.loader_seconds, cluster=cluster, report=report,
                                      planner={"shares": planner.kwargs["shares"]})
        except HetsamInputError as exc:
            planner.error = str(exc)
    if rows is None:
        notes.append(f"no strategy comparison: the planner refused this profile ({planner.error})")
        return None, None
    basis = {"budget": report.budget, "budget_seconds": report.budget_seconds, "objective": report.objective_name,
             "base_optimizer": report.base_optimizer, "batch_size": report.batch_size, "chosen": report.plan.to_dict()}
    return ranked(rows), basis


def format_comparison(rows, basis: dict | None = None) -> list[str]:
    """The comparison's rows (``hetsam.planning.compare.ranked``) as a table: rank, strategy at the
    planner's settings, share of SAM's gain with its interval, time, within the budget or not."""
    head = ("", "strategy (the planner's settings)", "share of SAM's gain", "s / iteration", "vs SGD", "vs SAM",
            "budget", "")
    table = [head]
    for c in rows:
        mark = ", ".join(m for m, on in (("the planner's choice", c.is_choice), ("this plan", c.is_given)) if on)
        table.append((f"{c.rank}", c.label.replace("\n", " "), c.share_cell(), fmt_seconds(c.iteration_seconds),
                      f"{100 * c.overhead_vs_sgd:+.1f}%", f"{c.speedup_vs_sam:.2f}x",
                      "within" if c.fits_budget else "over", f"<- {mark}" if mark else ""))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    right = (3, 4, 5)
    out = []
    level = next((c.share.level for c in rows if c.share is not None), 0.8)
    if basis:
        name = f"the share of SAM's gain the evidence supports (its {level:.0%} interval's lower end)" \
            if basis["objective"] == "robust" else "the expected share of SAM's gain"
        out += [f"  strategies at the planner's settings, best first by its objective: within the budget "
                f"({basis['budget']:g} x SGD) first, then {name}"]
    for r in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))]
        out.append(("  " + "  ".join(cells)).rstrip())
    out.append(f"  share: point estimate [{level:.0%} interval for a new task]; * = no evidence places it (a proxy); "
               "times simulated with this command's seed")
    return out
