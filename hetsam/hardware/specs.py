"""The device spec table: peak FP32 FLOP/s, memory bandwidth, memory, cores and links of known
devices, each with its public source (``hetsam/data/device_specs.json``), plus the efficiency
assumptions that spec scaling uses (``hetsam.cost.specscale``). Pure Python."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from hetsam.errors import HetsamInputError

__all__ = ["DeviceSpec", "spec_table", "get_spec", "assumptions", "by_reported_name"]

_TABLE = Path(__file__).resolve().parents[1] / "data" / "device_specs.json"


@dataclass(frozen=True)
class DeviceSpec:
    """One row of the spec table."""

    key: str
    kind: str
    name: str
    peak_fp32_flops: float
    memory_bandwidth: float
    source: str
    memory_bytes: int | None = None
    cores: int | None = None
    core_peaks: tuple[float, ...] = ()  # CPU: FP32 FLOP/s of each core, fastest first
    host_link: dict | None = None
    peer_link: dict | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def pool_peak(self, k: int, f: float) -> float:
        """Effective FP32 FLOP/s of ``k`` cores: ``k · slowest · E(k)``, Amdahl ``E(k) = 1/(k(1−f)+f)``."""
        if self.kind != "cpu":
            return self.peak_fp32_flops
        slowest = min(self.core_peaks[:k])
        return k * slowest / (k * (1 - f) + f)

    def pool_bandwidth(self, k: int, saturation: float) -> float:
        if self.kind != "cpu" or not self.cores:
            return self.memory_bandwidth
        return self.memory_bandwidth * min(1.0, k / max(1e-9, saturation * self.cores))


def _parse_spec(key: str, raw: dict) -> DeviceSpec:
    try:
        kind = raw["kind"]
        peaks: list[float] = []
        if kind == "cpu":
            types = raw.get("core_types") or [{"count": raw["cores"], "base_ghz": raw["base_ghz"], "flops_per_cycle": raw["flops_per_cycle"]}]
            for t in sorted(types, key=lambda t: -t["base_ghz"] * t["flops_per_cycle"]):
                peaks += [t["base_ghz"] * 1e9 * t["flops_per_cycle"]] * int(t["count"])
        known = {"kind", "name", "peak_fp32_flops", "memory_bandwidth", "source", "memory_bytes", "cores", "host_link", "peer_link"}
        return DeviceSpec(
            key=key, kind=kind, name=raw["name"], peak_fp32_flops=float(raw["peak_fp32_flops"]),
            memory_bandwidth=float(raw["memory_bandwidth"]), source=raw["source"], memory_bytes=raw.get("memory_bytes"),
            cores=raw.get("cores"), core_peaks=tuple(peaks), host_link=raw.get("host_link"), peer_link=raw.get("peer_link"),
            extra={k: v for k, v in raw.items() if k not in known},
        )
    except (KeyError, TypeError) as exc:
        raise HetsamInputError(f"spec table entry {key!r} is malformed (missing {exc}); fix hetsam/data/device_specs.json") from None


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict[str, DeviceSpec], dict[str, str], dict[str, float]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HetsamInputError(f"cannot read the spec table {path}: {exc}") from None
    specs = {key: _parse_spec(key, raw) for key, raw in data["devices"].items()}
    index = {}
    for key, raw in data["devices"].items():
        for name in [key, raw.get("name", key), *raw.get("aliases", [])]:
            index[name.lower()] = key
    consts = {name: float(v["value"]) for name, v in data["assumptions"].items()}
    return specs, index, consts


def spec_table(path=None) -> dict[str, DeviceSpec]:
    """Every spec in the table, by key."""
    return dict(_load(str(path or _TABLE))[0])


def assumptions(path=None) -> dict[str, float]:
    """The efficiency assumptions of the table (see the module docstring)."""
    return dict(_load(str(path or _TABLE))[2])


def by_reported_name(name: str) -> DeviceSpec | None:
    """The row whose name or alias equals a name torch/NVML/cpuinfo reports, if any."""
    try:
        return get_spec(name)
    except HetsamInputError:
        return None


def get_spec(key, path=None) -> DeviceSpec:
    """A spec by key or alias, case-insensitively; :class:`HetsamInputError` lists the keys."""
    if isinstance(key, DeviceSpec):
        return key
    specs, index, _ = _load(str(path or _TABLE))
    found = index.get(str(key).lower())
    if found is None:
        raise HetsamInputError(f"unknown device spec {key!r}: choose one of {', '.join(sorted(specs))}")
    return specs[found]
