"""``hetsam devices [--json]``: list the usable CPU sockets and GPUs (no torch unless a GPU is there)."""

from __future__ import annotations

from hetsam.cli._output import emit
from hetsam.cli.commands import COMMANDS

HELP = COMMANDS["devices"]

__all__ = ["HELP", "add_arguments", "run", "render"]


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print {\"devices\": [...], \"notes\": [...]} as JSON")


def _gib(value) -> str:
    return f"{value / 2**30:.1f} GiB" if isinstance(value, (int, float)) else str(value)


def render(data: dict) -> str:
    """Human-readable text for a detection dict (``Detection.to_dict()``)."""
    from hetsam.hardware.kinds import kind_of

    lines, pooled = [], False
    for d in data["devices"]:
        if kind_of(d["id"]).pools:
            pooled = pooled or d["cores"] != "could not collect" and d["cores"] > 1
            extra = f", cgroup limit {d['cgroup_cpu_limit']} cores" if "cgroup_cpu_limit" in d else ""
            lines.append(f"{d['id']:<8} {d['kind']:<4} {d['name']}: {d['cores']} usable core(s) "
                         f"(OS CPUs {d['cpulist']}{extra}), memory {_gib(d.get('memory_bytes'))}")
        else:
            clock = d.get("sm_clock_max_mhz", "could not collect")
            lines.append(f"{d['id']:<8} {d['kind']:<4} {d['name']}: memory {_gib(d.get('memory_bytes'))}, max SM clock {clock} MHz")
    if pooled:
        lines.append("pools: 'cpu:S[LIST]' names cores by position in the socket's list, e.g. cpu:0[0] and cpu:0[1] are disjoint")
    lines += [f"note: {n}" for n in data.get("notes", [])]
    return "\n".join(lines)


def run(args) -> int:
    from hetsam.hardware.detect import detect

    data = detect().to_dict()  # build the data, then print it
    return emit(args.json, lambda: data, lambda: render(data))
