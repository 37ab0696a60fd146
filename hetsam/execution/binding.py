"""Thread binding, the one helper for every thread hetsam computes on.

- :func:`role_threads`: a role's intra-op thread count (a pool's core count by default);
- :func:`pool_cpus`: the OS CPUs a CPU pool names (None: leave the affinity alone);
- :func:`role_binding`: run a body on the calling thread under a thread count and affinity,
  both restored afterwards (the descent thread around each step, the profiler's own thread);
- :func:`enter_device`: configure a *fresh* thread for good (an ascent worker, a profiling
  thread): affinity first, so the OpenMP team it creates inherits it, then its thread count,
  or the CUDA device and a stream of its own.

With the OpenMP backend the thread count belongs to the calling thread, so a worker and the
training thread each keep their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch

from hetsam import _checks
from hetsam.hardware.kinds import kind_of, torch_kind
from hetsam.hardware.names import parse_device

__all__ = ["torch_device", "role_threads", "pool_cpus", "role_binding", "intra_op_threads", "enter_device"]


def torch_device(name: str) -> torch.device:
    """The torch device of a hetsam device name (a CPU pool is the ``cpu`` device), from its
    kind; a GPU this torch cannot use is a one-line error, not an assertion deep inside torch."""
    dev = parse_device(name)
    return kind_of(dev).torch_device(dev)


def role_threads(device: str, override: int | None = None) -> int:
    """Intra-op thread count of a role: ``override``, else a pool's core count, else the
    calling thread's current ``torch.get_num_threads()``."""
    if override is not None:
        return _checks.integer(override, "thread count", low=1, high=4096)
    dev = parse_device(device)
    if dev.positions is not None:  # a pool of cores
        return len(dev.positions)
    return torch.get_num_threads()


def pool_cpus(device: str) -> tuple[int, ...] | None:
    """OS CPU ids to pin a role on ``device`` to, or None to leave the affinity alone.

    A CPU pool or socket (``cpu:0[1]``, ``cpu:1``) maps to its OS CPUs through
    :func:`hetsam.hardware.detect.cpus_of`; ``cpu`` (every usable core), a name that spans the whole
    process affinity, and GPUs give None.
    """
    dev = parse_device(device)
    if not kind_of(dev).pools or dev.index is None:
        return None
    from hetsam.hardware.detect import cpus_of  # sysfs reads; only for pools

    cpus = cpus_of(device)
    try:
        if set(cpus) == set(os.sched_getaffinity(0)):
            return None
    except (AttributeError, OSError):  # no affinity API here: nothing to pin
        return None
    return cpus


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n)`` on the calling thread (``None``: as is).

    With the OpenMP backend the setting belongs to the calling thread, so a worker thread and
    the training thread each keep their own count.
    """
    if n is None or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def role_binding(threads: int | None, cpus: Sequence[int] | None = None) -> Iterator[None]:
    """Run the body with the calling thread's intra-op thread count ``threads`` and, when
    ``cpus`` is given, its core affinity set to ``cpus``; both are restored afterwards.

    Affinity is per thread on Linux (``sched_setaffinity`` on the calling thread). Threads
    that OpenMP created for this thread before the call keep their mask; hetsam's worker
    threads pin themselves before their first parallel region, so theirs inherit it.
    """
    old = None
    if cpus is not None:
        current = os.sched_getaffinity(0)
        if current != set(cpus):  # already there (a loop pinned by its user): no migration, nothing to restore
            old = current
            os.sched_setaffinity(0, cpus)
    try:
        with intra_op_threads(threads):
            yield
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)


def enter_device(device: torch.device, threads: int | None, cpus: Sequence[int] | None = None, *,
                 stream: bool = False) -> None:
    """Bind the calling, freshly started thread to ``device`` for the rest of its life.

    The device's kind does it (``DeviceKind.enter``). On a CPU: affinity to ``cpus`` before the
    first parallel region (the OpenMP team inherits the mask), then ``threads``; on a GPU: select
    it, and with ``stream`` run on a new stream.
    """
    torch_kind(device).enter(device, threads, cpus, stream=stream)
