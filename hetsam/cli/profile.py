"""``hetsam profile``: measure a reference model on this machine's devices and save the Profile JSON."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from hetsam import _checks, defaults
from hetsam.cli._output import emit
from hetsam.cli.commands import COMMANDS
from hetsam.errors import HetsamInputError

DEFAULT_BUDGET = defaults.PROFILE_BUDGET_SECONDS

HELP = COMMANDS["profile"]

__all__ = ["HELP", "DEFAULT_BUDGET", "add_arguments", "run", "summary"]


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20", help="reference model: resnet20 (default), mlp or transformer (see hetsam.profiling.models)")
    parser.add_argument("--batch-size", type=int, default=128, metavar="B", help="the largest batch of the ladder (default 128)")
    parser.add_argument("--out", required=True, metavar="PATH", help="where to write the profile JSON")
    parser.add_argument("--devices", metavar="LIST", help="comma-separated device names, e.g. cpu:0,cpu:0[0] "
                        "(default: every socket, its one-core pool and every GPU)")
    parser.add_argument("--ladder", metavar="LIST", help="batch sizes to measure, ascending, e.g. 8,16,32,64 "
                        "(default: powers of two from B/8, and B)")
    parser.add_argument("--budget-seconds", type=float, default=DEFAULT_BUDGET, metavar="S",
                        help=f"bound the measuring time (default {DEFAULT_BUDGET:g}; 0: no bound); repeats, then ladder "
                             "points are cut, with a note in the profile")
    parser.add_argument("--repeats", type=int, metavar="N", help="fixed repeats per point (default: adaptive, about 1 s per point)")
    parser.add_argument("--no-contention", action="store_true", help="skip the two-pool contention measurement")
    parser.add_argument("--no-step-costs", action="store_true",
                        help="skip timing a step's fixed costs in AutoSAM's own steps on the CPU devices (a few seconds each)")
    parser.add_argument("--json", action="store_true", help="also print the profile JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_out(path: str) -> Path:
    """Before any measuring: a regular file (or none yet) in a writable folder."""
    from hetsam.io import check_writable

    out = check_writable(path, "--out")
    parent = out.parent if str(out.parent) else Path(".")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise HetsamInputError(f"--out {path!r} is not writable; choose another path")
    return out


def _ladder(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ladder = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HetsamInputError(f"--ladder {text[:60]!r} must be comma-separated integers, e.g. 8,16,32,64") from None
    if len(ladder) > 64:
        raise HetsamInputError(f"--ladder has {len(ladder)} points; at most 64")
    return ladder


def _check_devices(text: str) -> None:
    """Reject unknown names and missing CPU sockets/cores before importing torch."""
    from hetsam.hardware.detect import cpus_of, detect_cpus, split_device_list
    from hetsam.hardware.kinds import kind_of
    from hetsam.hardware.names import parse_device

    names = split_device_list(text)
    if not names:
        raise HetsamInputError(f"--devices {text!r} names no device; e.g. --devices cpu:0,cpu:0[0]")
    sockets = None
    for name in names:
        if kind_of(parse_device(name)).pools:
            sockets = sockets if sockets is not None else detect_cpus()
            cpus_of(name, sockets)


def summary(prof) -> str:
    """A short text table of a profile."""
    ladder = ", ".join(map(str, prof.devices[0].grad_seconds.batch_sizes))
    lines = [f"model {prof.model.name}: {prof.model.parameters:,} parameters; batch sizes {ladder}"]
    for d in prof.devices:
        g = d.grad_seconds
        times = ", ".join(f"{m * 1e3:.1f}±{s * 1e3:.1f}" for m, s in zip(g.median, g.spread))
        cores = f", {d.cores} core(s)" if d.cores else ""
        extra = f"; update {d.update_seconds * 1e3:.2f} ms" if d.update_seconds is not None else ""
        extra += f", climb {d.climb_seconds * 1e3:.2f} ms" if d.climb_seconds is not None else ""
        fit = f"; max batch {d.max_batch_size}" if d.max_batch_size else ""
        lines.append(f"  {d.id:<10} {d.name}{cores}: grad ms {times}{extra}{fit}")
    for link in prof.links:
        lines.append(f"  copy {link.src} -> {link.dst}: {link.bytes_per_second / 1e9:.2f} GB/s, latency {link.latency_seconds * 1e6:.1f} us")
    for c in prof.contention:
        at = "".join(f"; with the job at {m}: {x[0]:.2f}, {x[1]:.2f}" for m, x in c.by_job_batch[:-1])
        at += f"; hand-off {c.handoff_seconds * 1e3:.2f} ms" if c.handoff_seconds is not None else ""
        at += f"; a lone job's round trip beyond its pass {c.round_trip_seconds * 1e3:.2f} ms" if c.round_trip_seconds is not None else ""
        lines.append(f"  contention {c.devices[0]} + {c.devices[1]}: slowdown {c.slowdown[0]:.2f}, {c.slowdown[1]:.2f}{at}")
    rep = prof.provenance.get("ratio_repeatability")
    if isinstance(rep, dict):
        parts = [f"{what} {v['median_deviation']:.1%} (worst {v['max_deviation']:.1%})" for what, v in
                 (("t(b)/t(B)", rep.get("batch_ratio")), ("t(pool)/t(socket)", rep.get("pool_ratio"))) if isinstance(v, dict)]
        if parts:
            lines.append(f"  ratios across {rep.get('rounds')} rounds vary by " + ", ".join(parts))
    if prof.provenance.get("allocator"):
        lines.append(f"  allocator: {prof.provenance['allocator']} (hetsam.execution.allocator)")
    return "\n".join(lines)


def run(args) -> int:
    _checks.number(args.budget_seconds, "--budget-seconds", low=0.0, high=86400.0, hint="0: no bound")
    _checks.optional(_checks.integer, args.repeats, "--repeats", low=1, high=100_000)
    out = _check_out(args.out)
    ladder = _ladder(args.ladder)
    if args.devices is not None:
        _check_devices(args.devices)

    from hetsam.hardware.detect import split_device_list
    from hetsam.profiling.models import reference_model

    ref = reference_model(args.model)
    ref.check_batch(args.batch_size)  # before anything is allocated
    devices = split_device_list(args.devices) if args.devices is not None else None

    from hetsam.profiling.measure import profile

    prof = profile(
        ref.build(), ref.loss_fn, ref.sample_batch(args.batch_size), devices, batch_sizes=ladder,
        budget_seconds=args.budget_seconds or None, repeats=args.repeats, contention=False if args.no_contention else None,
        name=ref.name, progress=not args.quiet,
    )
    if not args.no_step_costs:
        from hetsam.autosam import time_step_costs

        prof = time_step_costs(prof, ref.build(), ref.loss_fn, ref.sample_batch(args.batch_size), progress=not args.quiet,
                                log=lambda line: print(line, file=sys.stderr))
    _save(prof, out)
    return emit(args.json, prof.to_dict, lambda: summary(prof) + f"\nsaved {out}")


def _save(prof, out: Path) -> None:
    """Write the profile; if that fails (a full disk, a file-size limit), the minutes of measuring
    are not lost: it goes to a file in the temporary folder, and the error says where."""
    try:
        prof.save(out)
    except HetsamInputError as exc:
        import tempfile

        spare = None
        try:
            fd, spare = tempfile.mkstemp(prefix="hetsam-profile-", suffix=".json")
            os.close(fd)
            prof.save(spare)
        except (HetsamInputError, OSError):
            if spare is not None:  # the fallback failed too: leave no empty file behind
                with contextlib.suppress(OSError):
                    os.unlink(spare)
            raise exc from None
        raise HetsamInputError(f"{exc}; the measurement was saved to {spare} instead") from None
