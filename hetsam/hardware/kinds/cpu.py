"""CPU sockets and pools of their cores: ``cpu``, ``cpu:S``, ``cpu:S[LIST]``.

Detection reads sysfs, the affinity mask and cgroup limits (:mod:`hetsam.hardware.cpus`, no
torch). The profiler times a pool with the wall clock in a thread pinned to its cores; the
executor computes on a thread with its own intra-op thread count and affinity. Pools of one
socket share its cores and memory (the cost model's contention), and copies between them go
through the socket's memory.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from hetsam.hardware.cpus import detect_cpus
from hetsam.hardware.kinds.base import DeviceKind, DeviceName

__all__ = ["CpuKind", "KIND"]


class CpuKind(DeviceKind):
    name = "cpu"
    record_kind = "cpu"
    forms = "'cpu', 'cpu:S', 'cpu:S[0-3]' (a pool of cores)"
    torch_type = "cpu"
    pools = True
    alias_spans = True
    accelerator = False
    streams = False
    amp_dtype = "bfloat16"

    def name_of(self, device: Any) -> str:
        return "cpu"  # torch has one CPU device: hetsam's "every usable core"

    def detect(self, notes: list[str], probes: dict[str, Any]) -> list:
        roots = {k: probes[k] for k in ("sysfs_root", "proc_root", "cgroup_root", "affinity") if k in probes}
        return detect_cpus(**roots, notes=notes)

    def torch_device(self, dev: DeviceName):
        import torch

        return torch.device("cpu")  # a pool is the cpu device, pinned by its thread

    def enter(self, device, threads: int | None, cpus=None, *, stream: bool = False) -> None:
        import torch

        if cpus is not None:
            os.sched_setaffinity(threading.get_native_id(), cpus)  # before the OpenMP team exists
        torch.get_num_threads()  # the per-thread lazy init first, so it cannot undo the next line
        if threads is not None:
            torch.set_num_threads(threads)


KIND = CpuKind()
