"""The provenance of a measured profile: the machine, the method, the budget and the load it was
measured under (:mod:`hetsam.profiling.measure` fills it in; ``Profile.busy`` and
``Profile.warnings`` read it back)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from typing import Any

import torch

from hetsam import __version__
from hetsam.hardware.kinds import kind_of

__all__ = ["provenance", "load_average"]


def provenance(run, detected, work, t_work, load_before, budget_seconds) -> dict[str, Any]:
    """The profile's provenance: how, when and under what load it was measured (``run``: the
    profiler's ``_Run``)."""
    s, clock = run.settings, run.clock
    prov: dict[str, Any] = {
        "kind": "measured",
        "machine": _machine(detected),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch": torch.__version__,
        "hetsam": __version__,
        "python": platform.python_version(),
        "parallel_backend": _parallel_backend(),
        "method": (f"the executors' gradient pass (Replica.run) at each batch size; {s.warmup} warm-up run(s), "
                   + (f"{s.repeats} repeats" if s.repeats else
                      f"adaptive repeats ({s.min_repeats}-{s.max_repeats}, ~{s.target:g} s per point)")
                   + "; median and interquartile spread; CPU pools in their own thread with their own "
                   "torch.set_num_threads and affinity; update = SGD(momentum=0.9).step()"),
        "budget": (f"{budget_seconds:g} s; used {time.perf_counter() - clock.start:.1f} s" if budget_seconds is not None
                   else "none") + (": " + "; ".join(clock.notes) if clock.notes else ""),
        "elapsed_seconds": round(time.perf_counter() - clock.start, 2),
        "flop_count_seconds": round(t_work, 2),
    }
    notes = run.notes
    usable = sum(d.cores for d in detected if kind_of(d.id).pools and isinstance(d.cores, int)) or 1
    load_after = load_average()
    if load_before is not None and load_after is not None:
        # information only: the load meter of each stage (other_load) decides whether the profile is busy
        prov["load_average"] = f"{load_before:.2f} at start, {load_after:.2f} at end (1-minute; {usable} usable cores)"
    if run.load:
        prov["other_load"] = {k: None if v is None else round(v, 3) for k, v in run.load.items()}
    if run.remeasured:
        prov["remeasured"] = list(run.remeasured)
    prov["busy"] = bool(run.busy)
    if notes:
        prov["notes"] = " | ".join(notes)
    if work is not None:
        prov["workload"] = work
    return prov


def _machine(detected) -> str:
    parts = []
    for d in detected:
        if kind_of(d.id).pools:
            parts.append(f"{d.id} {d.name}, {d.cores} usable cores")
        else:
            parts.append(f"{d.id} {d.name}")
    return "; ".join(parts) or "unknown"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _parallel_backend() -> str:
    try:
        for line in torch.__config__.parallel_info().splitlines():
            if "parallel backend" in line:
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001
        pass
    return "could not collect"
