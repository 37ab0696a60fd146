"""What a kind of device is: :class:`DeviceKind`, the parsed :class:`DeviceName`, cpulists.

A kind owns everything hetsam does differently per kind of hardware (``docs/architecture.md``,
"How to add a device kind"): its names, its detection, what the profiler times, how the
executor runs work on it, and what the cost model needs to know. The declarations here are
pure Python; a kind imports torch only inside the methods that run work.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hetsam.errors import HetsamInputError

__all__ = ["DeviceKind", "DeviceName", "parse_cpulist", "format_cpulist", "MAX_CPUS", "MAX_INDEX"]

MAX_CPUS = 8192  # Linux's largest CONFIG_NR_CPUS: no socket has more core positions than this
MAX_INDEX = 1023  # the largest socket or device index a name may carry


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
    """A parsed device name: ``type`` is the kind's name (``cpu``, ``cuda``), ``kind`` the kind
    its records carry (``cpu``, ``gpu``); ``index`` is None for a bare alias (``cpu``, ``cuda``)."""

    type: str
    index: int | None = None
    positions: tuple[int, ...] | None = None  # pool positions within the unit
    kind: str = ""
    spans: bool = False  # a bare alias that spans every unit of its kind (``cpu``)

    @property
    def is_pool(self) -> bool:
        return self.positions is not None

    @property
    def socket_id(self) -> str:
        """The whole unit (socket, GPU) this name lives on, e.g. ``cpu:0`` for ``cpu:0[1]``."""
        return f"{self.type}:{self.index if self.index is not None else 0}"

    def __str__(self) -> str:
        s = self.type if self.index is None else f"{self.type}:{self.index}"
        if self.positions is not None:
            s += f"[{format_cpulist(self.positions)}]"
        return s

    def canonical(self) -> DeviceName:
        """The explicit form: ``cpu`` -> ``cpu:0``, ``cuda`` -> ``cuda:0``."""
        return DeviceName(self.type, self.index if self.index is not None else 0, self.positions, self.kind)

    def overlaps(self, other: DeviceName) -> bool:
        """Whether two names share hardware (a core, or the same device)."""
        if self.type != other.type:
            return False
        if self.spans or other.spans:
            return True  # the bare alias spans every unit
        a, b = self.canonical(), other.canonical()
        if a.index != b.index:
            return False
        if a.positions is None or b.positions is None:
            return True
        return bool(set(a.positions) & set(b.positions))


class DeviceKind(abc.ABC):
    """One kind of device. Subclasses set the class attributes and implement :meth:`detect`;
    the torch-side methods have the synchronous, stream-less defaults of a host device."""

    name: str = ""  # the prefix of its device names: "cpu", "cuda"
    record_kind: str = ""  # the kind its detection and profile records carry: "cpu", "gpu"
    forms: str = ""  # its accepted names, for messages: "'cuda' or 'cuda:N'"
    torch_type: str | None = None  # torch.device.type of its devices; None: hetsam does not run work on it
    # what the cost model and the planner need
    pools: bool = False  # names may carry a pool of cores, "name:S[LIST]"; pools of one unit share its cores
    alias_spans: bool = False  # the bare name spans every unit ("cpu") rather than naming unit 0 ("cuda")
    accelerator: bool = False  # memory of its own: copies to the host cross a link; a spare one may take a role
    # how the executor runs work on it
    streams: bool = False  # work is queued on streams and ordered by events; else computed synchronously
    amp_dtype: str = "bfloat16"  # the autocast dtype of amp=True

    # ---- naming ---------------------------------------------------------------------------
    def parse(self, text: str, index: int | None, pool: str | None) -> DeviceName:
        """The :class:`DeviceName` of ``text`` (already split by the grammar), or a one-line error."""
        if index is not None and index > MAX_INDEX:
            raise HetsamInputError(f"device {text!r}: index {index} is beyond {MAX_INDEX}; see 'hetsam devices'")
        positions = None
        if pool is not None:
            if not self.pools:
                raise HetsamInputError(f"device {text!r}: {self.name} devices have no core pools; use {self.forms}")
            try:
                positions = parse_cpulist(pool)
            except ValueError as exc:
                raise HetsamInputError(f"device {text!r}: {exc}") from None
            if not positions:
                raise HetsamInputError(f"device {text!r}: a pool needs at least one core position")
            index = 0 if index is None else index
        return DeviceName(self.name, index, positions, self.record_kind, self.alias_spans and index is None)

    def name_of(self, device: Any) -> str:
        """The hetsam name of a torch device of this kind (``cuda:0`` for ``cuda``)."""
        return f"{self.name}:{device.index if device.index is not None else 0}"

    # ---- detection ------------------------------------------------------------------------
    @abc.abstractmethod
    def detect(self, notes: list[str], probes: dict[str, Any]) -> list:
        """The usable devices of this kind as ``hetsam.hardware.records.Device``; a failed probe
        appends a line to ``notes`` (the registry also catches what escapes)."""

    # ---- running work (torch, imported by the subclass where it runs) ----------------------
    def current_index(self) -> int:
        """The unit the bare alias names (``cuda``: torch's current device)."""
        return 0

    def torch_device(self, dev: DeviceName):
        raise HetsamInputError(f"device {dev}: hetsam does not run work on {self.name} devices; plan for another device")

    def enter(self, device, threads: int | None, cpus=None, *, stream: bool = False) -> None:  # noqa: B027 - optional: a no-op unless a kind needs it
        """Bind a freshly started thread to ``device`` for the rest of its life."""

    def timed(self, device, fn: Callable[[], None]) -> float:
        """Seconds ``fn`` takes on ``device`` (what the profiler measures)."""
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def synchronize(self, device) -> None:  # noqa: B027 - optional: a no-op unless a kind needs it
        """Wait for the work queued on ``device``."""

    def release(self) -> None:  # noqa: B027 - optional: a no-op unless a kind needs it
        """Return cached memory after a measurement."""

    def new_stream(self, device):
        return None

    def current_stream(self, device):
        return None

    def new_event(self):
        return None

    def stream_context(self, stream):
        raise NotImplementedError(f"{self.name} devices have no streams")
