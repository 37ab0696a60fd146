"""Device records: what detection found, with "could not collect" where a probe failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hetsam.hardware.kinds.base import format_cpulist

__all__ = ["COULD_NOT_COLLECT", "Device", "Detection", "short_error", "collect"]

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


def collect(fn):
    """``fn()``, or :data:`COULD_NOT_COLLECT` when it raises (one field of one probe)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one field of one probe
        return COULD_NOT_COLLECT


def short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]
