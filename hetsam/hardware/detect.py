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

Each registered device kind (:mod:`hetsam.hardware.kinds`) detects its own devices; every
probe that fails leaves the value :data:`COULD_NOT_COLLECT` and a line in ``notes``, and a kind
whose detection raises adds a note instead of taking the others down.
"""

from __future__ import annotations

from hetsam.errors import HetsamInputError
from hetsam.hardware.cpus import cgroup_cpu_limit, detect_cpus
from hetsam.hardware.gpus import detect_gpus
from hetsam.hardware.kinds import kind_of, kinds
from hetsam.hardware.names import format_cpulist, parse_device
from hetsam.hardware.records import COULD_NOT_COLLECT, Detection, Device, short_error

__all__ = [
    "COULD_NOT_COLLECT",
    "Device",
    "Detection",
    "detect_devices",
    "detect_cpus",
    "detect_gpus",
    "detect",
    "cgroup_cpu_limit",
    "cpus_of",
    "split_device_list",
]


# ---------------------------------------------------------------------------------------
def detect(
    *, sysfs_root="/sys", proc_root="/proc", cgroup_root="/sys/fs/cgroup", affinity=None,
    gpus: bool = True, probe_torch: bool | None = None,
) -> Detection:
    """Every usable CPU socket and GPU (and device of a registered kind), plus the notes of
    probes that fell back. ``gpus=False`` skips the accelerators."""
    notes: list[str] = []
    probes = {"sysfs_root": sysfs_root, "proc_root": proc_root, "cgroup_root": cgroup_root, "affinity": affinity,
              "gpus": gpus, "probe_torch": probe_torch}
    devices: list[Device] = []
    for kind in kinds():
        if kind.accelerator and not gpus:
            continue
        try:
            devices += kind.detect(notes, probes)
        except Exception as exc:  # noqa: BLE001 - one kind's probe never takes the others down
            notes.append(f"{kind.record_kind}: could not collect ({short_error(exc)})")
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
    kind = kind_of(dev)
    if not kind.pools:
        raise HetsamInputError(f"device {name!r} is a {kind.record_kind.upper()}; only CPU devices have cores to pin to")
    sockets = {d.id: d for d in (devices if devices is not None else detect_cpus()) if d.kind == kind.record_kind}
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
