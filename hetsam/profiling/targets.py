"""Where each measurement runs: the profiled devices as targets, and the threads that run on them.

Each pool (and each GPU) runs in its own Python thread, bound with the one thread-binding
helper (:func:`hetsam.execution.binding.enter_device`): its own intra-op thread count, and for a
pool its affinity set before its first parallel region, so its OpenMP team inherits the mask. A
CPU device that spans the whole process (``cpu:0`` on a one-socket machine) runs in the calling
thread instead, as the descent does in the executor (see :func:`run_threads`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hetsam.errors import HetsamInputError
from hetsam.execution.binding import enter_device
from hetsam.hardware.detect import Device, cpus_of
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import parse_device

__all__ = ["Target", "default_devices", "resolve_targets", "auto_pairs", "run_threads"]


@dataclass
class Target:
    id: str
    kind: str
    name: str
    cores: int | None = None
    threads: int | None = None
    cpus: tuple[int, ...] | None = None  # pin to these (None: leave the affinity alone)
    memory_bytes: int | None = None
    index: int | None = None  # CUDA index
    unit: str = ""  # the hardware it lives on: its socket or its GPU

    @property
    def torch_device(self) -> str:
        dev = parse_device(self.id)
        return str(kind_of(dev).torch_device(dev))


def default_devices(detected: list[Device]) -> list[str]:
    """Each socket whole, plus its one-core pool ``cpu:S[0]`` (for Amdahl), and every GPU."""
    out = []
    for d in detected:
        out.append(d.id)
        if kind_of(d.id).pools and isinstance(d.cores, int) and d.cores >= 2:
            out.append(f"{d.id}[0]")
    return out


def resolve_targets(names, detected: list[Device]) -> list[Target]:
    try:
        process = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        process = None
    targets: list[Target] = []
    for raw in names:
        dev = parse_device(raw)
        kind = kind_of(dev)
        units = {d.id: d for d in detected if d.kind == kind.record_kind}
        if kind.pools:
            sockets = units
            if dev.index is None and dev.positions is None:
                if len(sockets) != 1:
                    raise HetsamInputError(f"'cpu' is ambiguous on a machine with sockets {', '.join(sockets)}; name one, e.g. cpu:0")
                dev = parse_device(next(iter(sockets)))
            dev = dev.canonical()
            cpus = cpus_of(str(dev), list(sockets.values()))  # raises for a missing socket/position
            socket = sockets[dev.socket_id]
            mem = socket.memory_bytes if isinstance(socket.memory_bytes, int) else None
            if dev.positions is None:
                cores = socket.cores if isinstance(socket.cores, int) else len(cpus)
                name = socket.name
            else:
                cores = len(cpus)
                name = f"{socket.name} ({cores} of {socket.cores} cores)"
            pin = None if process is not None and set(cpus) == process else cpus
            targets.append(Target(str(dev), kind.record_kind, name, cores, cores, pin, mem, unit=dev.socket_id))
        else:
            index = dev.index if dev.index is not None else kind.current_index()
            gid = f"{kind.name}:{index}"
            if gid not in units:
                raise HetsamInputError(f"device {raw!r} is not here ({kind.record_kind.upper()}s: {', '.join(units) or 'none'}); "
                                       "see 'hetsam devices'")
            g = units[gid]
            mem = g.memory_bytes if isinstance(g.memory_bytes, int) else None
            targets.append(Target(gid, kind.record_kind, g.name, None, None, None, mem, index, gid))
    ids = [t.id for t in targets]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HetsamInputError(f"device(s) {', '.join(dupes)} named twice; name each device once")
    if not targets:
        raise HetsamInputError("no device to profile; name at least one (e.g. --devices cpu:0)")
    return targets


def auto_pairs(targets: list[Target], detected: list[Device], explicit_devices: bool) -> list[tuple[str, str]]:
    """One pair of disjoint pools per socket: two profiled ones, else ``cpu:S[0]`` + ``cpu:S[1]``."""
    pairs = []
    sockets = {d.id: d for d in detected if kind_of(d.id).pools}
    for sid in dict.fromkeys(t.unit for t in targets if kind_of(t.id).pools):
        pools = [t for t in targets if t.unit == sid and parse_device(t.id).positions is not None]
        found = next(((p.id, q.id) for i, p in enumerate(pools) for q in pools[i + 1:]
                      if not parse_device(p.id).overlaps(parse_device(q.id))), None)
        if found:
            pairs.append(found)
        elif isinstance(sockets[sid].cores, int) and sockets[sid].cores >= 2 and (pools or not explicit_devices):
            pairs.append((f"{sid}[0]", f"{sid}[1]"))
    return pairs


def run_threads(jobs: list[tuple[Target, Callable[[], Any]]]) -> list[Any]:
    """Run each ``fn`` in its own thread configured for its target; return results in order.

    A lone CPU job that spans the whole process (no pinning) runs in the calling thread, as
    the descent does in the executor: libgomp throttles its spin-waits once more OpenMP
    threads exist than CPUs, so a second multi-threaded team (a worker thread's, beside the
    caller's) runs small kernels several times slower than the caller's own team does.
    """
    if len(jobs) == 1 and kind_of(jobs[0][0].id).pools and jobs[0][0].cpus is None:
        target, fn = jobs[0]
        torch.set_num_threads(target.threads or 1)  # the caller restores its own count
        return [fn()]
    results: list[dict] = [{} for _ in jobs]

    def body(i, target, fn):
        try:
            enter_device(torch.device(target.torch_device), target.threads or 1, target.cpus)
            results[i]["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            results[i]["error"] = exc

    threads = [threading.Thread(target=body, args=(i, t, f), name=f"hetsam-profile-{t.id}", daemon=True) for i, (t, f) in enumerate(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for r in results:
        if "error" in r:
            raise r["error"]
    return [r["value"] for r in results]
