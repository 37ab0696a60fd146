"""Device detection: every usable CPU socket and every GPU, without crashing on a failed probe.

CPU sockets (pure Python, no torch):

1. The online CPUs (``/sys/devices/system/cpu/online``) intersected with the process's
   affinity mask (``os.sched_getaffinity(0)``, which already reflects a cgroup ``cpuset``).
2. Grouped by ``topology/physical_package_id``; a socket ``S`` is named ``cpu:S``. Its
   ``cpus`` are the usable OS CPU ids, sorted; a pool ``cpu:S[LIST]`` names *positions* in that
   list (see :mod:`hetsam.hardware.names`), and :func:`cpus_of` turns a name back into OS ids.
3. A cgroup CPU quota caps the usable core count: cgroup v2 ``cpu.max`` (``"quota period"``)
   or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the tightest over the process's cgroup
   and its ancestors. The cap is ``max(1, floor(quota / period))`` cores (the Go runtime's
   automaxprocs rule), applied to each socket's ``cores``; ``cpus`` keeps every allowed CPU.
4. The name comes from ``/proc/cpuinfo`` (``model name``), the usable memory from
   ``/proc/meminfo`` capped by the cgroup memory limit.

GPUs: NVML (``pynvml`` from the ``nvidia-ml-py`` package) for names, memory and clocks, and
``torch.cuda`` for the CUDA indices. torch is imported only when it is needed: when it is
already imported, or when NVML finds an NVIDIA GPU, or when NVML is unusable but the machine
shows signs of a GPU driver (``/dev/nvidia*``, ``/dev/kfd``). On a machine with no GPU
``hetsam devices`` therefore never imports torch.

Every probe that fails leaves the value :data:`COULD_NOT_COLLECT` and a line in ``notes``.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetsam.hardware.names import format_cpulist, parse_cpulist, parse_device
from hetsam.errors import HetsamInputError

__all__ = [
    "COULD_NOT_COLLECT",
    "Device",
    "Detection",
    "detect_devices",
    "detect_cpus",
    "detect",
    "cgroup_cpu_limit",
    "cpus_of",
    "split_device_list",
]

COULD_NOT_COLLECT = "could not collect"


@dataclass
class Device:
    """One CPU socket or one GPU. Values a probe could not read are :data:`COULD_NOT_COLLECT`."""

    id: str
    kind: str  # "cpu" or "gpu"
    name: str
    cores: int | str | None = None  # CPU: usable cores (after the cgroup cap)
    cpus: tuple[int, ...] | None = None  # CPU: usable OS CPU ids, sorted
    memory_bytes: int | str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "name": self.name}
        if self.cores is not None:
            d["cores"] = self.cores
        if self.cpus is not None:
            d["cpus"] = list(self.cpus)
            d["cpulist"] = format_cpulist(self.cpus)
        if self.memory_bytes is not None:
            d["memory_bytes"] = self.memory_bytes
        d.update(self.details)
        return d


@dataclass
class Detection:
    """The result of :func:`detect`: the devices and one note per probe that fell back."""

    devices: list[Device]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"devices": [d.to_dict() for d in self.devices], "notes": list(self.notes)}


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


# ---------------------------------------------------------------------------------------
# GPUs
def _nvml_devices(notes: list[str], nvml=None) -> list[dict] | None:
    """NVML's view: one dict per GPU, or None when NVML is unusable here."""
    if nvml is None:
        try:
            import pynvml as nvml  # the nvidia-ml-py package
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            notes.append(f"gpu: NVML could not collect (pynvml not importable: {type(exc).__name__})")
            return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, driver missing, ...
        notes.append(f"gpu: NVML could not collect ({_short(exc)})")
        return None
    out = []
    try:
        count = nvml.nvmlDeviceGetCount()
        driver = _try(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
            out.append({
                "nvml_index": i,
                "name": _try(lambda: _text(nvml.nvmlDeviceGetName(h))),
                "uuid": _try(lambda: _text(nvml.nvmlDeviceGetUUID(h))),
                "memory_bytes": mem.total if mem != COULD_NOT_COLLECT else mem,
                "sm_clock_max_mhz": _try(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
                "memory_clock_max_mhz": _try(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
                "pcie_generation": _try(lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(h)),
                "pcie_width": _try(lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(h)),
                "driver": driver,
            })
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: NVML could not collect the device list ({_short(exc)})")
    finally:
        _try(nvml.nvmlShutdown)
    return out


def _torch_gpus(notes: list[str]) -> list[dict] | None:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: torch.cuda could not collect (torch not importable: {type(exc).__name__})")
        return None
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            uuid = getattr(p, "uuid", None)
            out.append({
                "index": i, "name": p.name, "memory_bytes": int(p.total_memory),
                "multiprocessors": p.multi_processor_count,
                "compute_capability": f"{p.major}.{p.minor}",
                "uuid": str(uuid) if uuid is not None else None,
            })
        return out
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: torch.cuda could not collect ({_short(exc)})")
        return None


def _gpu_driver_present(dev_root: Path) -> bool:
    try:
        return any(dev_root.glob("nvidia[0-9]*")) or (dev_root / "kfd").exists()
    except OSError:
        return False


def detect_gpus(notes: list[str] | None = None, *, probe_torch: bool | None = None, nvml=None, dev_root="/dev") -> list[Device]:
    """GPUs as ``cuda:N`` devices (torch's indices), described by NVML where it is present.

    ``probe_torch``: True forces the torch probe, False forbids it, None decides (see the
    module docstring). ``nvml`` may be a stand-in for the ``pynvml`` module.
    """
    notes = notes if notes is not None else []
    nv = _nvml_devices(notes, nvml)
    if probe_torch is None:
        probe_torch = "torch" in sys.modules or bool(nv) or (nv is None and _gpu_driver_present(Path(dev_root)))
        if not probe_torch:
            why = "NVML reports no GPU" if nv is not None else "no GPU driver (NVML unusable, no /dev/nvidia*, /dev/kfd)"
            notes.append(f"gpu: torch.cuda not probed: {why}")
    tg = _torch_gpus(notes) if probe_torch else None

    devices = []
    if tg is not None:
        by_uuid = {str(n.get("uuid", "")).removeprefix("GPU-"): n for n in nv or []}
        for g in tg:
            match = by_uuid.get(str(g.get("uuid") or "").removeprefix("GPU-"))
            if match is None and nv is not None and len(nv) == len(tg):
                match = nv[g["index"]]  # same count: assume the same order
            details = {k: g[k] for k in ("multiprocessors", "compute_capability")}
            if match is not None:
                details.update({k: v for k, v in match.items() if k not in ("name", "memory_bytes", "uuid")})
            else:
                details["clocks"] = COULD_NOT_COLLECT
            devices.append(Device(f"cuda:{g['index']}", "gpu", g["name"], None, None, g["memory_bytes"], details))
    elif nv:
        notes.append("gpu: CUDA indices assumed to follow NVML's order (torch.cuda could not collect)")
        for n in nv:
            details = {k: v for k, v in n.items() if k not in ("name", "memory_bytes", "uuid")}
            devices.append(Device(f"cuda:{n['nvml_index']}", "gpu", n["name"], None, None, n["memory_bytes"], details))
    return devices


# ---------------------------------------------------------------------------------------
def detect(
    *, sysfs_root="/sys", proc_root="/proc", cgroup_root="/sys/fs/cgroup", affinity=None,
    gpus: bool = True, probe_torch: bool | None = None,
) -> Detection:
    """Every usable CPU socket and GPU, plus the notes of probes that fell back."""
    notes: list[str] = []
    devices = detect_cpus(sysfs_root, proc_root, cgroup_root, affinity, notes)
    if gpus:
        try:
            devices += detect_gpus(notes, probe_torch=probe_torch)
        except Exception as exc:  # noqa: BLE001 - a GPU probe never takes the CPU list down
            notes.append(f"gpu: could not collect ({_short(exc)})")
    return Detection(devices, notes)


def detect_devices(**kwargs) -> list[Device]:
    """Every usable CPU socket and GPU as :class:`Device` records (see :func:`detect`)."""
    return detect(**kwargs).devices


def cpus_of(name, devices: list[Device] | None = None) -> tuple[int, ...]:
    """OS CPU ids of a CPU device name, for ``os.sched_setaffinity``.

    ``cpu`` is every usable CPU; ``cpu:S`` a socket's; ``cpu:S[LIST]`` the CPUs at positions
    ``LIST`` of the socket's sorted usable CPUs. ``devices`` defaults to :func:`detect_cpus`.
    """
    dev = parse_device(name)
    if dev.kind != "cpu":
        raise HetsamInputError(f"device {name!r} is a GPU; only CPU devices have cores to pin to")
    sockets = {d.id: d for d in (devices if devices is not None else detect_cpus()) if d.kind == "cpu"}
    if dev.index is None:
        return tuple(sorted(c for d in sockets.values() for c in d.cpus or ()))
    socket = sockets.get(dev.socket_id)
    if socket is None or not socket.cpus:
        raise HetsamInputError(
            f"device {name!r}: socket {dev.socket_id} is not usable here (usable: {', '.join(sorted(sockets)) or 'none'}); see 'hetsam devices'"
        )
    if dev.positions is None:
        return tuple(socket.cpus)
    bad = [p for p in dev.positions if p >= len(socket.cpus)]
    if bad:
        raise HetsamInputError(
            f"device {name!r}: socket {dev.socket_id} has {len(socket.cpus)} usable core(s) "
            f"(positions 0-{len(socket.cpus) - 1}); position(s) {format_cpulist(bad)} do not exist"
        )
    return tuple(socket.cpus[p] for p in dev.positions)


def split_device_list(text: str) -> list[str]:
    """Split ``"cpu:0,cpu:0[0-3,8],cuda:0"`` at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [d for d in out if d]


# ---------------------------------------------------------------------------------------
def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one field of one probe
        return COULD_NOT_COLLECT


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]
