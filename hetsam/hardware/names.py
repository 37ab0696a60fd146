"""Device names: how a plan, a profile and the command line name a device or a CPU pool.

Grammar (all forms are accepted wherever a device is named):

=================  ==========================================================================
``cpu``            every usable core of the machine (alias of ``cpu:0`` on one socket).
``cpu:S``          every usable core of socket ``S`` (``physical_package_id``).
``cpu:S[LIST]``    a *pool*: the cores at positions ``LIST`` of socket ``S``'s usable cores,
                   in ``cpulist`` syntax (``0``, ``0-3``, ``0-3,8``). Positions are 0-based
                   indices into the sorted list of that socket's usable CPUs, not OS CPU ids,
                   so a plan stays valid under a different affinity mask or cgroup.
                   ``cpu:0[0]`` and ``cpu:0[1]`` are two disjoint one-core pools.
``cuda``           the current CUDA device.
``cuda:N``         CUDA device ``N``.
=================  ==========================================================================

This module is pure Python: the planner and the simulator use it without torch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from hetsam.errors import HetsamInputError

__all__ = ["DeviceName", "parse_device", "parse_cpulist", "format_cpulist", "canonical_name", "MAX_CPUS", "MAX_INDEX"]

MAX_CPUS = 8192  # Linux's largest CONFIG_NR_CPUS: no socket has more core positions than this
MAX_INDEX = 1023  # the largest socket or GPU index a name may carry
_NAME = re.compile(r"^(?P<kind>cpu|cuda)(?::(?P<index>[0-9]{1,6}))?(?:\[(?P<pool>[0-9,\- ]{1,512})\])?$")


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse Linux ``cpulist`` syntax (``"0-3,8"``) into a sorted tuple of ints."""
    out: set[int] = set()
    text = text.strip()
    if not text:
        return ()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = _position(lo_s, part), _position(hi_s, part)
            if hi < lo:
                raise ValueError(f"bad cpulist range {part!r}: end before start")
            out.update(range(lo, hi + 1))  # bounded by MAX_CPUS before anything is built
        else:
            out.add(_position(part, part))
    return tuple(sorted(out))


def _position(text: str, part: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"bad cpulist entry {part!r}: use ASCII numbers such as 0-3,8")
    value = int(text) if len(text) <= 6 else MAX_CPUS
    if value >= MAX_CPUS:
        raise ValueError(f"core position {value} in {part!r} is beyond the {MAX_CPUS} CPUs any machine has")
    return value


def format_cpulist(items) -> str:
    """Inverse of :func:`parse_cpulist`: ``(0, 1, 2, 8) -> "0-2,8"``."""
    items = sorted(set(int(i) for i in items))
    runs: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        runs.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(runs)


@dataclass(frozen=True)
class DeviceName:
    """A parsed device name. ``index`` is None for the bare aliases ``cpu`` and ``cuda``."""

    kind: str  # "cpu" or "gpu"
    index: int | None = None
    positions: tuple[int, ...] | None = None  # pool positions within the socket

    @property
    def is_pool(self) -> bool:
        return self.positions is not None

    @property
    def socket_id(self) -> str:
        """The whole socket (or GPU) this name lives on, e.g. ``cpu:0`` for ``cpu:0[1]``."""
        prefix = "cpu" if self.kind == "cpu" else "cuda"
        return f"{prefix}:{self.index if self.index is not None else 0}"

    def __str__(self) -> str:
        prefix = "cpu" if self.kind == "cpu" else "cuda"
        s = prefix if self.index is None else f"{prefix}:{self.index}"
        if self.positions is not None:
            s += f"[{format_cpulist(self.positions)}]"
        return s

    def canonical(self) -> "DeviceName":
        """The explicit form: ``cpu`` -> ``cpu:0``, ``cuda`` -> ``cuda:0``."""
        return DeviceName(self.kind, self.index if self.index is not None else 0, self.positions)

    def overlaps(self, other: "DeviceName") -> bool:
        """Whether two names share hardware (a core, or the same GPU)."""
        a, b = self.canonical(), other.canonical()
        if a.kind != b.kind:
            return False
        if a.kind == "cpu" and self.index is None or other.kind == "cpu" and other.index is None:
            return a.kind == b.kind  # the bare alias spans every socket
        if a.index != b.index:
            return False
        if a.positions is None or b.positions is None:
            return True
        return bool(set(a.positions) & set(b.positions))


def parse_device(name: str) -> DeviceName:
    """Parse a device name; raise :class:`HetsamInputError` naming the accepted forms."""
    if isinstance(name, DeviceName):
        return name
    if not isinstance(name, str):
        raise HetsamInputError(f"device name must be a string, got {type(name).__name__}")
    if len(name) > 600:
        raise HetsamInputError(f"device name of {len(name)} characters is too long; use 'cpu', 'cpu:S[LIST]' or 'cuda:N'")
    return _parse(name)


@functools.lru_cache(maxsize=4096)
def _parse(name: str) -> DeviceName:
    """The parser behind :func:`parse_device`, memoised: the planner and the simulator name the
    same few devices tens of thousands of times."""
    m = _NAME.match(name.strip())
    if not m:
        raise HetsamInputError(
            f"unknown device {name!r}: use 'cpu', 'cpu:S', 'cpu:S[0-3]' (a pool of cores), 'cuda' or 'cuda:N'"
        )
    kind = "cpu" if m.group("kind") == "cpu" else "gpu"
    index = int(m.group("index")) if m.group("index") is not None else None
    if index is not None and index > MAX_INDEX:
        raise HetsamInputError(f"device {name!r}: index {index} is beyond {MAX_INDEX}; see 'hetsam devices'")
    pool = m.group("pool")
    if pool is not None and kind != "cpu":
        raise HetsamInputError(f"device {name!r}: only CPU sockets have core pools ('cpu:S[LIST]')")
    positions = None
    if pool is not None:
        try:
            positions = parse_cpulist(pool)
        except ValueError as exc:
            raise HetsamInputError(f"device {name!r}: {exc}") from None
        if not positions:
            raise HetsamInputError(f"device {name!r}: a pool needs at least one core position")
        if index is None:
            index = 0
    return DeviceName(kind, index, positions)


def canonical_name(name, what: str = "device") -> str:
    """The written form of a device name: pools as sorted, merged cpulists (``cpu:0[1,1]`` ->
    ``cpu:0[1]``); the aliases ``cpu`` and ``cuda`` stay as they are."""
    try:
        return _written(parse_device(name))
    except HetsamInputError as exc:
        raise HetsamInputError(f"{what}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _written(dev: DeviceName) -> str:
    return str(dev)
