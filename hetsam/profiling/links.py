"""Copy links: ``latency + bytes / bandwidth`` between each pair of hardware units, measured."""

from __future__ import annotations

import math
import time

import torch

from hetsam._progress import Progress
from hetsam.hardware.kinds import kind_of, torch_kind
from hetsam.profiling.ladder import is_oom
from hetsam.profiling.schema import Link
from hetsam.profiling.stats import Measurement
from hetsam.profiling.targets import Target, run_threads

__all__ = ["measure_links"]


def _copy_fit(t_small: float, t_big: float, nbytes: int) -> tuple[float, float]:
    """Latency and bandwidth from a one-element and an ``nbytes`` copy: t = lat + n / bw."""
    latency = max(0.0, t_small)
    dt = t_big - latency
    bw = nbytes / dt if dt > 0 else nbytes / max(t_big, 1e-9)
    return bw, latency


def measure_links(reps_by_unit: dict[str, Target], nbytes: int, allot: float, progress: Progress) -> tuple[list[Link], list[str]]:
    """A copy link between each pair of hardware units (both directions for a GPU), plus memcpy."""
    links, notes = [], []
    units = list(reps_by_unit.items())
    numel = max(1, nbytes // 4)
    host = {u: not kind_of(u).accelerator for u, _ in units}  # in the host's memory (a socket)
    pairs = [(u, u) for u, _ in units if host[u]]
    for i, (u, _) in enumerate(units):
        for v, _ in units[i + 1:]:
            pairs.append((u, v))
            if not (host[u] and host[v]):
                pairs.append((v, u))
    per_pair = allot / max(1, len(pairs)) if math.isfinite(allot) else 0.3
    for src_u, dst_u in pairs:
        src, dst = reps_by_unit[src_u], reps_by_unit[dst_u]
        progress.step(f"copy {src.id} -> {dst.id}")

        def job(src=src, dst=dst):
            sdev, ddev = torch.device(src.torch_device), torch.device(dst.torch_device)
            skind, dkind = torch_kind(sdev), torch_kind(ddev)
            pin = skind.accelerator != dkind.accelerator  # host <-> GPU: page-locked host memory

            def alloc(n, dev):
                if not torch_kind(dev).accelerator and pin:
                    return torch.empty(n, pin_memory=True)
                return torch.empty(n, device=dev)

            def timed_copy(n):
                s, d = alloc(n, sdev).fill_(1.0), alloc(n, ddev)
                queued = [(k, x) for k, x in ((skind, sdev), (dkind, ddev)) if k.streams]

                def once():
                    for k, x in queued:
                        k.synchronize(x)
                    t0 = time.perf_counter()
                    d.copy_(s)
                    for k, x in queued:
                        k.synchronize(x)
                    return time.perf_counter() - t0

                once()
                t_est = once()
                reps = max(5, min(200, int(per_pair / 2 / max(t_est, 1e-9))))
                return Measurement([once() for _ in range(reps)]).median

            return _copy_fit(timed_copy(1), timed_copy(numel), numel * 4)

        try:
            bw, lat = run_threads([(dst, job)])[0]
            links.append(Link(src.id, dst.id, float(bw), float(lat)))
        except Exception as exc:  # noqa: BLE001 - a failed copy probe is a note, not a crash
            if not is_oom(exc) and not isinstance(exc, RuntimeError):
                raise
            notes.append(f"copy {src.id} -> {dst.id}: could not collect ({' '.join(str(exc).split())[:120]})")
    return links, notes
