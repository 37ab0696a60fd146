"""CPU sockets: sysfs topology, the process's affinity, and cgroup CPU and memory limits (no torch)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from hetsam.hardware.kinds.base import parse_cpulist
from hetsam.hardware.records import COULD_NOT_COLLECT, Device

__all__ = ["detect_cpus", "cgroup_cpu_limit"]


# ---------------------------------------------------------------------------------------
# small readers: None when the file is missing or unreadable
def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# cgroup limits
def _cgroup_paths(proc_root: Path) -> tuple[str | None, str | None, str | None]:
    """(v2 path, v1 cpu path, v1 memory path) of this process, from ``/proc/self/cgroup``."""
    text = _read(proc_root / "self" / "cgroup")
    v2 = v1_cpu = v1_mem = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, path = parts
        names = controllers.split(",")
        if hier == "0" and controllers == "":
            v2 = path
        if "cpu" in names:
            v1_cpu = path
        if "memory" in names:
            v1_mem = path
    return v2, v1_cpu, v1_mem


def _ancestors(base: Path, path: str | None) -> list[Path]:
    """``base/path`` and each parent up to ``base`` (nested cgroups each impose their limit)."""
    out = []
    rel = Path((path or "/").lstrip("/"))
    while True:
        out.append(base / rel)
        if rel == Path("."):
            break
        rel = rel.parent
    return out


def cgroup_cpu_limit(cgroup_root="/sys/fs/cgroup", proc_root="/proc") -> float | None:
    """The tightest cgroup CPU quota, in cores (``quota / period``), or None when unlimited.

    cgroup v2: ``cpu.max`` holds ``"$MAX $PERIOD"`` with ``max`` meaning unlimited.
    cgroup v1: ``cpu.cfs_quota_us`` (``-1`` is unlimited) over ``cpu.cfs_period_us``.
    """
    root, proc = Path(cgroup_root), Path(proc_root)
    v2, v1_cpu, _ = _cgroup_paths(proc)
    limits: list[float] = []
    for base in (root, root / "unified"):  # unified v2, or the v2 part of a hybrid mount
        for d in _ancestors(base, v2):
            text = _read(d / "cpu.max")
            if not text:
                continue
            fields = text.split()
            try:
                if fields[0] != "max":
                    period = float(fields[1]) if len(fields) > 1 else 100000.0
                    if float(fields[0]) > 0 and period > 0:
                        limits.append(float(fields[0]) / period)
            except (ValueError, IndexError):
                continue
    for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        base = root / name
        for d in _ancestors(base, v1_cpu) if base.is_dir() else ():
            quota, period = _read_int(d / "cpu.cfs_quota_us"), _read_int(d / "cpu.cfs_period_us")
            if quota is not None and quota > 0 and period:
                limits.append(quota / period)
    return min(limits) if limits else None


def _cgroup_memory_limit(root: Path, proc: Path) -> int | None:
    v2, _, v1_mem = _cgroup_paths(proc)
    limits = []
    for base in (root, root / "unified"):
        for d in _ancestors(base, v2):
            text = _read(d / "memory.max")
            if text and text != "max" and text.isdigit():
                limits.append(int(text))
    base = root / "memory"
    for d in _ancestors(base, v1_mem) if base.is_dir() else ():
        value = _read_int(d / "memory.limit_in_bytes")
        if value is not None and 0 < value < 2**60:  # v1 writes a huge number for "unlimited"
            limits.append(value)
    return min(limits) if limits else None


# ---------------------------------------------------------------------------------------
# CPUs
def _cpu_names(proc: Path) -> dict[int, str]:
    """OS CPU id -> model name, from ``/proc/cpuinfo`` (x86 ``model name``, else the ARM fields)."""
    text = _read(proc / "cpuinfo")
    names: dict[int, str] = {}
    current: int | None = None
    fallback = None
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit():
            current = int(value)
        elif key == "model name" and current is not None and value:
            names[current] = value
        elif key in ("hardware", "cpu model", "model") and value and fallback is None and not value.isdigit():
            fallback = value
    if fallback and not names:
        names[-1] = fallback
    return names


def _meminfo_total(proc: Path) -> int | None:
    for line in (_read(proc / "meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                return int(fields[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def detect_cpus(
    sysfs_root="/sys",
    proc_root="/proc",
    cgroup_root="/sys/fs/cgroup",
    affinity=None,
    notes: list[str] | None = None,
) -> list[Device]:
    """The usable CPU sockets, one :class:`Device` each, sorted by socket id.

    The roots and the affinity set are arguments so tests can run on fake trees; by default
    they are the real ones and ``os.sched_getaffinity(0)``.
    """
    notes = notes if notes is not None else []
    sysfs, proc, cg = Path(sysfs_root), Path(proc_root), Path(cgroup_root)
    cpu_dir = sysfs / "devices" / "system" / "cpu"

    online_text = _read(cpu_dir / "online")
    try:
        online = set(parse_cpulist(online_text)) if online_text else set()
    except ValueError:
        online = set()
    if not online:
        try:
            online = {int(p.name[3:]) for p in cpu_dir.glob("cpu[0-9]*") if p.name[3:].isdigit()}
        except OSError:
            online = set()
    if affinity is None:
        try:
            affinity = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = set(range(os.cpu_count() or 1))
    affinity = set(affinity)
    if online:
        usable = sorted(online & affinity) or sorted(affinity)
        if not online & affinity:
            notes.append("cpu: the affinity mask names no online CPU in sysfs; using the affinity mask as is")
    else:
        usable = sorted(affinity)
        notes.append(f"cpu: {cpu_dir} could not collect the online CPUs; using the affinity mask")

    sockets: dict[int, list[int]] = {}
    unknown_package = False
    for cpu in usable:
        pkg = _read_int(cpu_dir / f"cpu{cpu}" / "topology" / "physical_package_id")
        if pkg is None or pkg < 0:
            unknown_package, pkg = True, 0
        sockets.setdefault(pkg, []).append(cpu)
    if unknown_package:
        notes.append("cpu: physical_package_id could not collect for some CPUs; they are counted on socket 0")

    limit = None
    try:
        limit = cgroup_cpu_limit(cg, proc)
    except OSError:  # pragma: no cover - readers already swallow OSError
        notes.append("cpu: cgroup CPU quota could not collect")
    cap = max(1, math.floor(limit + 1e-9)) if limit is not None else None

    names = _cpu_names(proc)
    if not names:
        notes.append("cpu: the model name could not collect from /proc/cpuinfo")
    mem_total = _meminfo_total(proc)
    mem_limit = _cgroup_memory_limit(cg, proc)
    memory: int | str = COULD_NOT_COLLECT
    if mem_total is not None or mem_limit is not None:
        memory = min(v for v in (mem_total, mem_limit) if v is not None)

    devices = []
    for pkg in sorted(sockets):
        cpus = tuple(sockets[pkg])
        name = names.get(cpus[0]) or names.get(-1) or next(iter(names.values()), COULD_NOT_COLLECT)
        details: dict[str, Any] = {"socket": pkg}
        cores = len(cpus)
        if cap is not None and cap < cores:
            details["cgroup_cpu_limit"] = round(limit, 3)
            cores = cap
        physical = set()
        for cpu in cpus:
            core_id = _read_int(cpu_dir / f"cpu{cpu}" / "topology" / "core_id")
            physical.add(core_id if core_id is not None else ("cpu", cpu))
        details["physical_cores"] = min(len(physical), cores)
        details["memory_shared_by"] = "all sockets (system memory, capped by the cgroup limit)"
        devices.append(Device(f"cpu:{pkg}", "cpu", name, cores, cpus, memory, details))
    return devices
