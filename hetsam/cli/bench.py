"""``hetsam bench``: measure SGD, SAM and the parallel strategies side by side on this machine,
each next to the simulator's prediction (see :mod:`hetsam.bench`).

The profile's warnings (measured while the machine was busy, ...) go to stderr once, with where
it is cached and how to measure again; the report's notes print once per pattern with a count
(``hetsam._notes``), and its JSON keeps every note and adds ``profile_warnings``."""

from __future__ import annotations

import functools
import sys

from hetsam import defaults as D
from hetsam.cli._output import emit
from hetsam.cli.commands import COMMANDS

HELP = COMMANDS["bench"]

__all__ = ["HELP", "add_arguments", "run"]


def add_arguments(p) -> None:
    p.add_argument("--model", default="resnet20", help="reference model: resnet20 (default), mlp or transformer (hetsam.profiling.models)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="descent batch b (default 64); b' = b/4")
    p.add_argument("--steps", type=int, default=10, metavar="N", help="timed steps per strategy per round (default 10)")
    p.add_argument("--rounds", type=int, default=5, metavar="R", help="interleaved rounds A B C ... A B C ... (default 5)")
    p.add_argument("--min-seconds", type=float, default=D.BENCH_MIN_SECONDS, metavar="S",
                   help=f"more rounds (up to {D.BENCH_MAX_AUTO_ROUNDS}) when --rounds would measure for less than S seconds "
                        f"(default {D.BENCH_MIN_SECONDS:g}; 0: exactly --rounds)")
    p.add_argument("--turn-warmup", type=int, default=D.BENCH_TURN_WARMUP, metavar="N",
                   help=f"untimed steps at the start of each strategy's turn in a round (default {D.BENCH_TURN_WARMUP}): the "
                        "worker restarts and the thread team resizes there")
    p.add_argument("--warmup", type=int, default=3, metavar="N", help="untimed steps per strategy first (default 3)")
    p.add_argument("--profile", metavar="P", help="profile JSON path or bundled name for the predictions "
                   "(default: a cached profile of this machine with the same model and batch, measured if missing)")
    p.add_argument("--no-predict", action="store_true", help="measure only; no profile, no simulator")
    p.add_argument("--plan", metavar="PLAN.json", help="also measure this plan (default: the planner's plan for the profile)")
    p.add_argument("--only", metavar="LABELS", help="comma-separated subset of the default strategies to measure "
                   "(sgd, sam, 'async_sam pools', 'async_sam time-sliced', 'sampa pools', rst, plan)")
    p.add_argument("--concurrent", action="store_true",
                   help="also measure AsyncSAM with a worker thread on the shared cores (both roles on 'cpu'), and with "
                        "the executor's own measured choice between that and time-slicing")
    p.add_argument("--profile-budget-seconds", type=float, default=D.PROFILE_BUDGET_SECONDS, metavar="S",
                   help=f"time budget when a profile must be measured (default {D.PROFILE_BUDGET_SECONDS:g})")
    p.add_argument("--refresh-profile", action="store_true", help="measure this machine's profile again (replaces the cached one)")
    p.add_argument("--interleave-profile", action="store_true",
                   help="profile this machine briefly at the start of every round (b/4 and b, all cores and one pool, "
                        "contention) and predict from the medians: the profile sees the same machine as the measurements")
    p.add_argument("--quiet-seconds", type=float, default=0.0, metavar="S",
                   help="before each round, wait up to S seconds for other processes to use < 5%% of the CPUs (default 0: no wait)")
    p.add_argument("--max-other-load", type=float, default=0.10, metavar="F",
                   help="measure a round again when other processes used more than this share of the CPUs during it "
                        "(default 0.10; at most R repeats; 1 disables)")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc's allocator as it is, here and in the profile it measures (default: keep freed memory "
                        "in the process, which removes "
                        "the per-step page faults that make CPU timings depend on the process's history)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _check(args) -> None:
    from hetsam import _checks
    from hetsam.errors import HetsamInputError

    _checks.integer(args.steps, "--steps", low=1, high=100_000)
    _checks.integer(args.rounds, "--rounds", low=1, high=10_000)
    _checks.integer(args.warmup, "--warmup", low=0, high=100_000)
    _checks.integer(args.turn_warmup, "--turn-warmup", low=0, high=100_000)
    _checks.number(args.min_seconds, "--min-seconds", low=0.0, high=86_400.0)
    _checks.number(args.quiet_seconds, "--quiet-seconds", low=0.0, high=3600.0)
    _checks.number(args.max_other_load, "--max-other-load", low=0.0, high=1e6, low_open=True,
                   hint="a share of the CPUs; 1 disables")
    _checks.number(args.profile_budget_seconds, "--profile-budget-seconds", low=0.0, high=86400.0, low_open=True)
    if args.no_predict and args.profile:
        raise HetsamInputError("--no-predict and --profile cannot be combined")


def run(args) -> int:
    _check(args)
    from hetsam.execution import allocator

    # the profiler and AutoSAM follow the same policy within the run (hetsam.execution.allocator)
    with allocator.override("system" if args.system_malloc else allocator.policy()):
        return _run(args, allocator.apply_policy())


def _run(args, allocator: str) -> int:
    from hetsam.bench import Arrangement, default_arrangements, run_bench
    from hetsam.errors import HetsamInputError
    from hetsam.planning.plan import Plan
    from hetsam.profiling.models import reference_model

    reference_model(args.model).check_batch(args.batch_size)  # unknown names, huge batches: before anything runs
    given = Plan.load(args.plan) if args.plan else None
    say = (lambda line: None) if args.json else (lambda line: print(f"hetsam bench: {line}", file=sys.stderr, flush=True))

    def warn(line: str) -> None:  # the cache's lines and the profile's warnings: also under --json
        print(line, file=sys.stderr, flush=True)

    profile, source, probe = None, None, None
    if args.interleave_profile:
        from hetsam.bench import probe_profile

        if args.no_predict or args.profile:
            raise HetsamInputError("--interleave-profile measures the profile itself; drop --no-predict/--profile")
        probe = probe_profile(args.model, args.batch_size)
        if args.quiet_seconds > 0:
            from hetsam.bench import wait_quiet

            wait_quiet(args.quiet_seconds)
        say("measuring a first profile for the planner")
        profile, source = probe(), "median of the profiles measured in the rounds"
    elif not args.no_predict:
        if args.profile:
            from hetsam.profiling.cache import warning_lines
            from hetsam.profiling.schema import load_profile

            profile, source = load_profile(args.profile), args.profile
            for line in warning_lines(profile):
                warn(line)
        else:
            from hetsam.autosam import time_step_costs
            from hetsam.profiling.cache import profile_this_machine

            hint = "add --refresh-profile to this hetsam bench command to measure again (when the machine is quiet)"
            profile = profile_this_machine(args.model, args.batch_size, budget_seconds=args.profile_budget_seconds,
                                           progress=not args.json, refresh=args.refresh_profile, log=warn,
                                           refresh_hint=hint, finish=functools.partial(
                                               time_step_costs, progress=not args.json, log=warn))
            source = f"this machine ({args.model}, batch {args.batch_size}, cached)"

    arrangements = default_arrangements(args.batch_size)
    if profile is not None:
        from hetsam.bench import fitted_pool_arrangement

        fitted = fitted_pool_arrangement(profile, args.batch_size)
        if fitted is not None and fitted.plan.spec.ascent_batch_size(fitted.plan, args.batch_size) != args.batch_size // 4:
            at = next(i for i, a in enumerate(arrangements) if a.label == "async_sam pools") + 1
            arrangements.insert(at, fitted)
    if args.concurrent:
        shared = next(a for a in arrangements if a.label == "async_sam time-sliced")
        arrangements.append(Arrangement("async_sam concurrent", shared.plan, {"share": "concurrent"}))
        arrangements.append(Arrangement("async_sam shared auto", shared.plan))
    if given is not None:
        arrangements.append(Arrangement("plan", given))
    elif profile is not None:
        from hetsam.planning.search import plan as make_plan

        chosen = make_plan(profile, batch_size=args.batch_size).plan
        say(f"the planner chose {chosen.describe()}")
        arrangements.append(Arrangement("plan", chosen))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        known = [a.label for a in arrangements]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise HetsamInputError(f"--only {', '.join(unknown)}: not measured here; choose from {', '.join(known)}")
        arrangements = [a for a in arrangements if a.label in wanted]

    say(f"allocator: {allocator}")
    report = run_bench(arrangements, model=args.model, batch_size=args.batch_size, steps=args.steps, rounds=args.rounds,
                       warmup=args.warmup, profile=None if probe else profile, profile_source=source, progress=say,
                       quiet_seconds=args.quiet_seconds, profile_probe=probe,
                       max_other_load=None if args.max_other_load >= 1 else args.max_other_load,
                       min_seconds=args.min_seconds, turn_warmup=args.turn_warmup)
    report.notes.insert(0, f"allocator: {allocator}")
    warnings = list(profile.warnings) if profile is not None and not probe else []
    return emit(args.json, lambda: {**report.to_dict(), "profile_warnings": warnings}, lambda: _text(report))


def _text(report) -> str:
    """``format_report`` with the notes collapsed, once per pattern (``hetsam._notes``)."""
    from dataclasses import replace

    from hetsam._notes import collapsed_texts
    from hetsam.bench import format_report

    return format_report(replace(report, notes=collapsed_texts(report.notes)))
