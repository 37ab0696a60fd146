"""``hetsam simulate``: predict a plan's time per iteration from a profile, without torch.

Builds the prediction (``hetsam.simulator.simulate``), then prints it as a short table or
as JSON; ``--trace`` writes a Chrome trace, ``--plot`` a PNG with a Gantt chart and a bar
chart of strategies, ``--what-if cuda:0=H100`` swaps a device for a spec-table one first.
``--nodes N --devices-per-node G`` simulates one rank of a data-parallel job with DDP's
all-reduce (``hetsam.cost.network``).

The planner runs once on the profile (``--budget``, ``--objective``, ``--base-optimizer``,
``--shares`` as in ``hetsam plan``): the numbers ``--strategy`` leaves out are its, and the
strategy comparison (``--plot``, ``--compare``) shows each strategy at its settings, ranked by
its objective (``hetsam.planning.compare``). Notes print once per pattern with a count
(``hetsam._notes``); JSON keeps every note. A profile's warnings (measured while the machine was
busy, ...) go to stderr first (``hetsam.profiling.cache.warning_lines``).
"""

from __future__ import annotations

from hetsam import strategies
from hetsam.cli._cluster import add_cluster_arguments, cluster_kwargs, format_cluster
from hetsam.cli._compare import comparisons_for, format_comparison, make_planner
from hetsam.cli._output import emit, fmt_seconds
from hetsam.cli.commands import COMMANDS

HELP = COMMANDS["simulate"]

_PLAN_OPTIONS = ("strategy", "descent_device", "ascent_device", "batch_size", "ascent_batch_size", "staleness",
                 "ascent_batches", "probability", "sampa_lambda", "option")
# flag (argparse dest) -> the strategy option it sets (the spec says whether the strategy has it)
_OPTION_OF = {"ascent_batch_size": "ascent_batch_size", "staleness": "staleness", "ascent_batches": "ascent_batches",
              "probability": "sam_probability", "sampa_lambda": "sampa_lambda"}
_FLAG_OF = {"descent_device": "--descent-device", "ascent_device": "--ascent-device",
            **{name: f"--{flag.replace('_', '-')}" for flag, name in _OPTION_OF.items()}}


def add_arguments(p) -> None:
    p.add_argument("--profile", required=True, help="profile JSON path or bundled reference name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", help="plan JSON (as written by 'hetsam plan --out')")
    src.add_argument("--strategy", choices=strategies.names(), help="simulate this strategy (registered: "
                     + ", ".join(f"{s.name}: {s.summary}" for s in strategies.specs()) + ")")
    p.add_argument("--descent-device", help="descent device (default: the profile's fastest at b)")
    p.add_argument("--ascent-device", help="ascent device (default for async_sam/sampa: the fastest other device with a link)")
    p.add_argument("--batch-size", type=int, help="descent batch b (default: the profile's)")
    p.add_argument("--ascent-batch-size", type=int, help="AsyncSAM ascent batch b' (default: b)")
    p.add_argument("--staleness", type=int, help="AsyncSAM staleness tau (default 1)")
    p.add_argument("--ascent-batches", choices=("lookahead", "independent"), help="AsyncSAM batch policy")
    p.add_argument("--probability", type=float, help="RST probability p (default 0.5)")
    p.add_argument("--sampa-lambda", type=float, help="SAMPa lambda (default 0.2)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of a strategy that declares its own options (repeatable)")
    p.add_argument("--iterations", type=int, default=1000, help="iterations to predict (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the jitter and RST coin (default 0)")
    p.add_argument("--no-jitter", action="store_true", help="use the median times, no spread")
    p.add_argument("--no-steady-state", action="store_true",
                   help="simulate every iteration instead of stopping once the mean is known to 0.5%% and extrapolating")
    p.add_argument("--loader-seconds", type=float, default=0.0, help="data loading seconds per step on the descent side")
    p.add_argument("--timeline-iterations", type=int, default=6, help="iterations kept for --trace/--plot (default 6)")
    p.add_argument("--what-if", action="append", default=[], metavar="DEVICE=SPEC",
                   help="swap a device for one from the spec table, e.g. cuda:0=H100 (repeatable, or comma-separated)")
    p.add_argument("--trace", metavar="OUT.json", help="write the timeline as Chrome-trace JSON (Perfetto opens it)")
    p.add_argument("--plot", metavar="OUT.png", help="draw a Gantt chart and a strategy comparison (needs matplotlib)")
    p.add_argument("--compare", action="store_true", help="print the strategy comparison of --plot without drawing it")
    g = p.add_argument_group("the planner (its numbers fill in what --strategy leaves out, and set the comparison's)")
    from hetsam.planning.options import (
        add_flags,  # declared in hetsam.planning.options.OPTIONS
    )

    add_flags(g, "budget", "objective", "base_optimizer", "shares", help={
        "objective": "what the planner maximises, as in 'hetsam plan' (default %(default)s)",
        "base_optimizer": "your base optimizer's family, as in 'hetsam plan' (default %(default)s)",
        "shares": "your own evidence, as in 'hetsam plan --shares'"})
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_cluster_arguments(p)


def run(args) -> int:
    from hetsam._checks import number
    from hetsam.cost.cluster import Cluster
    from hetsam.cost.model import CostModel
    from hetsam.errors import HetsamInputError
    from hetsam.io import check_writable
    from hetsam.planning.plan import Plan
    from hetsam.profiling.schema import load_profile
    from hetsam.simulator import simulate

    for out in (args.trace, args.plot):  # refused before any work, not after it
        if out is not None:
            check_writable(out, "--trace/--plot output")
    if args.plot:
        try:
            from hetsam.simulator.plot import plot_format, plot_simulation
        except ImportError as exc:  # pragma: no cover - matplotlib is a test dependency
            raise HetsamInputError(f"--plot needs matplotlib ({exc}); pip install 'hetsam[plot]'") from None
        plot_format(args.plot)
    number(args.budget, "--budget", low=1.0, high=100.0, hint="a multiple of the SGD step time")
    scale = cluster_kwargs(args)
    profile = load_profile(args.profile)
    _say_warnings(profile)
    swaps = parse_what_if(args.what_if)
    if swaps:
        profile = apply_what_if(profile, swaps)
    cm = CostModel(profile)
    cluster = Cluster(cm, **scale)
    planner = make_planner(args, cm, scale)
    picked: dict = {}
    if args.plan is not None:
        given = [f"--{o.replace('_', '-')}" for o in _PLAN_OPTIONS if getattr(args, o, None) not in (None, [])]
        if given:
            raise HetsamInputError(f"{', '.join(given)} cannot be combined with --plan; edit the plan file or use --strategy")
        plan = Plan.load(args.plan)
    else:
        plan, picked = plan_from_args(args, cm, cluster, scale, planner=planner)
    result = simulate(plan, cm, iterations=args.iterations, seed=args.seed, jitter=not args.no_jitter,
                      timeline_iterations=args.timeline_iterations, loader_seconds=args.loader_seconds,
                      steady_state=not args.no_steady_state, cluster=cluster)
    notes = list(result.notes)
    comparisons, basis = None, None
    if args.plot or args.compare:
        comparisons, basis = comparisons_for(args, plan, cm, cluster, planner, notes)
    if args.trace:
        from hetsam.simulator.trace import write_chrome_trace

        write_chrome_trace(result, args.trace)
    if args.plot:
        plot_simulation(result, comparisons, args.plot, budget=basis["budget"] if basis else None)

    def data() -> dict:
        d = result.to_dict()
        d["profile"] = profile.source
        d["profile_warnings"] = list(profile.warnings)
        d["what_if"] = swaps
        d["notes"] = notes  # every note, uncollapsed
        if comparisons is not None:
            d["comparison"] = [c.to_dict() for c in comparisons]
            d["comparison_planner"] = basis
        d["planner_chose"] = picked
        return d

    return emit(args.json, data, lambda: format_result(result, profile, swaps, comparisons, picked, notes, basis))


def _say_warnings(profile) -> None:
    """A loaded profile's warnings, on stderr, in two lines (``hetsam.profiling.cache.warning_lines``)."""
    import sys

    from hetsam.profiling.cache import warning_lines

    for line in warning_lines(profile):
        print(line, file=sys.stderr)


def parse_what_if(items) -> dict[str, str]:
    """``["cuda:0=H100", "cpu:0=EPYC-7452,cuda:1=A100"]`` -> ``{"cuda:0": "H100", ...}``."""
    from hetsam.errors import HetsamInputError

    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            dev, sep, spec = part.partition("=")
            if not sep or not dev.strip() or not spec.strip():
                raise HetsamInputError(f"--what-if {part!r} must look like DEVICE=SPEC, e.g. cuda:0=H100")
            out[dev.strip()] = spec.strip()
    return out


def apply_what_if(profile, swaps: dict[str, str]):
    """``hetsam.cost.specscale.what_if(profile, swaps)``: the profile with devices scaled to spec-table ones."""
    from hetsam.errors import HetsamInputError

    try:
        from hetsam.cost.specscale import what_if
    except ImportError:
        raise HetsamInputError("--what-if needs hetsam.cost.specscale.what_if, which this installation lacks") from None
    return what_if(profile, swaps)


def plan_from_args(args, cm, cluster=None, scale=None, planner=None):
    """A Plan from ``--strategy`` and its flags; what the flags leave open comes from the planner.

    Every number not given (the devices, b', τ, p, λ) is the planner's for this profile: its best
    plan of that strategy (by its objective) among those on the devices given. The numbers it
    chose are returned beside the plan, for the output to say so. A flag the strategy does not
    read (``--staleness`` for ``sam``) is refused. ``planner`` makes the report once for the whole
    command (default: one for this call, as ``hetsam plan`` runs it). When the planner has no such
    plan, the devices default to the profile's fastest (with G > 1 ranks per node the ascent device is one
    the rank owns: its CPU pool, or a spare GPU) and the numbers to the Plan's defaults.
    """
    from hetsam.errors import HetsamInputError
    from hetsam.planning.plan import Plan

    spec = strategies.get(args.strategy)
    declared = [o.name for o in spec.options]
    flagged = {name: getattr(args, flag) for flag, name in _OPTION_OF.items() if getattr(args, flag, None) is not None}
    unread = ["--ascent-device"] if args.ascent_device is not None and "ascent_device" not in spec.fields else []
    unread += [_FLAG_OF[name] for name in flagged if name not in declared]
    if unread:
        reads = [_FLAG_OF.get(f, f) for f in spec.fields] + [_FLAG_OF.get(n, f"--option {n}=") for n in declared]
        raise HetsamInputError(f"{', '.join(unread)} does not apply to strategy {spec.name!r} (it reads: "
                               f"{', '.join(reads) or 'no setting beyond the devices'})")
    b = args.batch_size if args.batch_size is not None else cm.profile.batch_size
    if b < 1:
        raise HetsamInputError(f"--batch-size {b} must be a positive integer")
    given = {k: getattr(args, k) for k in ("descent_device", "ascent_device") if getattr(args, k, None)}
    options = {**parse_options(args.option), **flagged}
    if planner is None:
        planner = make_planner(args, cm, scale or {})
    chosen = _planners_plan(spec, cm, b, given, planner)
    if chosen is not None:
        picked = {f: getattr(chosen, f) for f in ("descent_device", *spec.fields)
                  if f not in given and getattr(chosen, f) is not None}
        mine = {k: v for k, v in chosen.options.items() if k not in options and v is not None}
        if mine:
            picked["options"] = mine  # b', τ, p, λ, MSAM's ρ, interval's k, ...
        devices = {k: given.get(k, getattr(chosen, k)) for k in ("descent_device", "ascent_device")}
        return Plan(args.strategy, **devices, batch_size=b, options={**chosen.options, **options}), picked
    descent = args.descent_device or min(cm.device_ids, key=lambda d: cm.grad_seconds(d, b))
    ascent = args.ascent_device
    if ascent is None and spec.uses_executor:
        from hetsam.cost.cluster import Cluster

        others = (cluster or Cluster(cm)).ascent_devices(descent)
        ascent = min(others, key=lambda d: cm.grad_seconds(d, b)) if others else None
    return Plan(args.strategy, descent_device=descent, ascent_device=ascent, batch_size=b, options=options), {}


def _planners_plan(spec, cm, b: int, given: dict, planner):
    """The planner's best plan of ``spec`` on ``cm`` at batch ``b`` (``PlanReport.best_of``: by its
    objective within the budget, else the fastest) among those on the devices in ``given``, or None."""
    from hetsam.hardware.names import canonical_name

    if not spec.planned:
        return None
    report = planner.report(b)
    if report is None:
        return None
    want = {k: canonical_name(cm.resolve(given[k])) for k in ("descent_device", "ascent_device") if given.get(k)}
    if not want:
        best = report.best_of(spec.name)
        return best.plan if best is not None else None
    mine = [c for c in report.candidates if c.plan.strategy == spec.name
            and all(canonical_name(cm.resolve(getattr(c.plan, k))) == v for k, v in want.items())]
    within = [c for c in mine if c.fits_budget]
    if within:  # best_of's order, on the devices given
        return max(within, key=lambda c: (c.fidelity, -c.predicted_seconds)).plan
    return min(mine, key=lambda c: (c.predicted_seconds, [-x for x in c.fidelity])).plan if mine else None


def parse_options(items) -> dict:
    """``["k=10", "f=0.5"]`` -> ``{"k": 10, "f": 0.5}`` (numbers; the strategy's spec bounds them)."""
    from hetsam.errors import HetsamInputError

    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise HetsamInputError(f"--option {item!r} must look like NAME=VALUE, e.g. --option interval=10")
        try:
            value = int(text) if text.strip().lstrip("-").isdigit() and len(text.strip()) < 20 else float(text)
        except ValueError:
            raise HetsamInputError(f"--option {item!r}: {text!r} is not a number") from None
        out[name.strip()] = value
    return out


def format_result(result, profile, swaps, comparisons=None, picked=None, notes=None, basis=None) -> str:
    """The human-readable table: the prediction, its notes (collapsed, ``hetsam._notes``), and the
    strategy comparison when there is one (:func:`format_comparison`)."""
    from hetsam._notes import note_lines

    it = result.iteration_seconds
    prov = profile.provenance.get("kind", "?")
    lines = [f"plan        {result.plan.describe()}"]
    if picked:
        chosen = ", ".join(_picked_text(k, v) for k, v in picked.items())
        lines.append(f"            (the planner chose {chosen} for this profile; give the flags to override)")
    lines += [
        f"profile     {profile.model.name} ({prov}{'; what-if ' + ', '.join(f'{k}={v}' for k, v in swaps.items()) if swaps else ''})",
        f"iterations  {result.iterations}: {result.note}",
        "",
        f"  {'seconds / iteration':<24}mean {fmt_seconds(it['mean'])}   p50 {fmt_seconds(it['p50'])}   p95 {fmt_seconds(it['p95'])}",
        f"  {'samples / second':<24}{result.samples_per_second:,.1f}",
        f"  {'total':<24}{fmt_seconds(result.total_seconds)}",
        f"  {'descent wait':<24}{fmt_seconds(result.descent_wait_per_iteration)} / iteration "
        f"({100 * result.descent_wait_per_iteration / it['mean']:.1f}% of a step; {fmt_seconds(result.descent_wait_seconds)} in all)",
    ]
    for name, u in result.utilisation.items():
        lines.append(f"  {'busy ' + name:<24}{100 * u:.1f}%")
    for name, u in result.link_utilisation.items():
        lines.append(f"  {'busy ' + name:<24}{100 * u:.1f}%")
    if result.cluster:
        lines += ["", *format_cluster(result.cluster),
                  f"               all-reduce not hidden by the backward: {fmt_seconds(result.allreduce_exposed_per_iteration)}"
                  " / iteration"]
    lines += note_lines(result.notes if notes is None else notes)
    if comparisons:
        lines += ["", *format_comparison(comparisons, basis)]
    return "\n".join(lines)


def _picked_text(field: str, value) -> str:
    if field == "options":
        return ", ".join(f"{_FLAG_OF[k]} {v:g}" if k in _FLAG_OF and not isinstance(v, str) else
                         f"{_FLAG_OF[k]} {v}" if k in _FLAG_OF else f"--option {k}={v:g}" for k, v in value.items())
    return f"{_FLAG_OF.get(field, field)} {value}"
