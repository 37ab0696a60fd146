"""Profiles: the measured (or spec-scaled) costs of one model on one machine, as versioned JSON.

Schema version 1 (every object is closed: unknown keys are rejected)::

    {
      "schema_version": 1,
      "model": {"name": str, "parameters": int, "parameter_bytes": int,
                "flops_per_sample": float | null,      # forward FLOPs, torch.utils.flop_counter
                "sample_shape": [int, ...] | null},    # optional
      "batch_size": int,                               # the largest batch of the ladder (B)
      "devices": [{
          "id": "cpu:0" | "cpu:0[1]" | "cuda:0",       # see hetsam.hardware.names
          "kind": "cpu" | "gpu",                       # the id's kind's record_kind (hetsam.hardware.kinds)
          "name": str,
          "cores": int,                                # CPU: cores in the pool; GPU: optional
          "threads": int,                              # optional: intra-op threads used
          "memory_bytes": int | null,                  # optional
          "spec": str | null,                          # optional: key in the spec table
          "grad_seconds": {"batch_sizes": [int, ...],  # ascending
                           "median": [float, ...],     # seconds of one forward+backward
                           "spread": [float, ...],     # interquartile range, seconds
                           "repeats": int},            # optional
          "update_seconds": float,                     # optional: one optimizer update
          "climb_seconds": float,                      # optional: back up θ, climb to θ + e, restore
          "auxiliary_seconds": float,                  # optional: SAMPa's y point, restore, norm and mix
          "sliced_handoff_seconds": float,             # optional: a time-sliced ascent job beyond its pass
          "plain_fixed_seconds": float,                # optional: an SGD step beyond its pass, as AutoSAM runs it
          "perturbed_fixed_seconds": float,            # optional: a SAM step beyond its two passes, likewise
          "job_overhead_seconds": float,               # optional: what a step that hands over a job adds
          "max_batch_size": int | null                 # optional: largest batch that fit
      }, ...],
      "links": [{"src": id, "dst": id, "bytes_per_second": float, "latency_seconds": float}, ...],
      "contention": [{"devices": [id, id], "slowdown": [float, float],          # optional
                      "handoff_seconds": float,                                  # optional
                      "by_job_batch": [{"batch": int, "slowdown": [float, float]}, ...],  # optional
                      "round_trip_seconds": float},                              # optional
                     ...],
      "provenance": {"kind": "measured" | "spec-scaled" | "synthetic", ...free-form strings...}
    }

``contention`` records how much slower each of two devices computes while the other one
computes too (two pools sharing a socket's caches and memory bandwidth): 1.0 means no effect;
``handoff_seconds``, what a step of the threaded executor on the pair costs beyond its two
overlapped passes (the job's hand-off, both threads' Python), measured in the same stage;
``by_job_batch``, the slowdowns with the second device's job at each of these batches (ascending;
``hetsam.profiling.pairs``), ``slowdown`` being those at the profile's batch;
``round_trip_seconds``, how much longer than its pass a lone job takes from the submit to its
result as the descent's thread sees it (staging, the worker's wake-up and load, the return).

This module is pure Python (no torch): the planner and simulator load profiles anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of, record_kinds
from hetsam.hardware.names import parse_device
from hetsam.profiling.checker import BATCH, BYTES, COUNT, SECONDS
from hetsam.profiling.checker import Checker as _Checker
from hetsam.profiling.pairs import Contention

__all__ = [
    "SCHEMA_VERSION",
    "GradTable",
    "DeviceProfile",
    "Link",
    "Contention",
    "ModelInfo",
    "Profile",
    "load_profile",
    "reference_profile_names",
]

SCHEMA_VERSION = 1
_PROVENANCE_KINDS = ("measured", "spec-scaled", "synthetic")
# what the profiler writes into provenance.notes when its times may be off or incomplete, and
# measuring again can fix it (hetsam/profiling/measure.py, rounds.py, links.py: a busy machine,
# batch sizes cut by the time budget, a copy probe that failed); its other notes are information
WARNING_MARKERS = ("the machine may be busy", "other processes were running", "skipped batch size")


def _is_warning(note: str) -> bool:
    return any(m in note for m in WARNING_MARKERS) or (note.startswith("copy ") and "could not collect" in note)


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GradTable:
    """Forward+backward seconds at a ladder of batch sizes (median and interquartile spread)."""

    batch_sizes: tuple[int, ...]
    median: tuple[float, ...]
    spread: tuple[float, ...]
    repeats: int | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"batch_sizes": list(self.batch_sizes), "median": list(self.median), "spread": list(self.spread)}
        if self.repeats is not None:
            d["repeats"] = self.repeats
        return d

    @classmethod
    def parse(cls, value, path: str, chk: _Checker) -> GradTable:
        chk.obj(value, path, {"batch_sizes", "median", "spread"}, {"repeats"})
        bs = [chk.num(b, f"{path}.batch_sizes[{i}]", positive=True, integer=True, high=BATCH)
              for i, b in enumerate(chk.array(value["batch_sizes"], f"{path}.batch_sizes", most=64))]
        med = [chk.num(m, f"{path}.median[{i}]", positive=True, low=SECONDS[0], high=SECONDS[1])
               for i, m in enumerate(chk.array(value["median"], f"{path}.median", most=64))]
        spr = [chk.num(s, f"{path}.spread[{i}]", nonneg=True, high=SECONDS[1])
               for i, s in enumerate(chk.array(value["spread"], f"{path}.spread", most=64))]
        if any(b2 <= b1 for b1, b2 in zip(bs, bs[1:])):
            chk.fail(f"{path}.batch_sizes", f"must be strictly ascending, got {bs}")
        for name, arr in (("median", med), ("spread", spr)):
            if len(arr) != len(bs):
                chk.fail(f"{path}.{name}", f"has {len(arr)} values but batch_sizes has {len(bs)}")
        repeats = value.get("repeats")
        if repeats is not None:
            chk.num(repeats, f"{path}.repeats", positive=True, integer=True, high=1 << 30)
        return cls(tuple(bs), tuple(float(m) for m in med), tuple(float(s) for s in spr), repeats)


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    kind: str
    name: str
    grad_seconds: GradTable
    cores: int | None = None
    threads: int | None = None
    memory_bytes: int | None = None
    spec: str | None = None
    update_seconds: float | None = None
    max_batch_size: int | None = None
    climb_seconds: float | None = None
    auxiliary_seconds: float | None = None
    sliced_handoff_seconds: float | None = None
    plain_fixed_seconds: float | None = None
    perturbed_fixed_seconds: float | None = None
    job_overhead_seconds: float | None = None

    _OPTIONAL = ("cores", "threads", "memory_bytes", "spec", "update_seconds", "climb_seconds", "auxiliary_seconds",
                 "sliced_handoff_seconds", "plain_fixed_seconds", "perturbed_fixed_seconds", "job_overhead_seconds",
                 "max_batch_size")
    TIME_FIELDS = ("update_seconds", "climb_seconds", "auxiliary_seconds", "sliced_handoff_seconds",
                   "plain_fixed_seconds", "perturbed_fixed_seconds", "job_overhead_seconds")  # a step's fixed costs

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "name": self.name}
        for key in self._OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        d["grad_seconds"] = self.grad_seconds.to_dict()
        return d

    @classmethod
    def parse(cls, value, path: str, chk: _Checker) -> DeviceProfile:
        chk.obj(value, path, {"id", "kind", "name", "grad_seconds"}, set(cls._OPTIONAL))
        dev_id = chk.device_id(value["id"], f"{path}.id")
        kind = value["kind"]
        if kind not in record_kinds():
            chk.fail(f"{path}.kind", f"must be one of {', '.join(map(repr, record_kinds()))}, got {kind!r}")
        if parse_device(dev_id).kind != kind:
            chk.fail(f"{path}.kind", f"is {kind!r} but the id {dev_id!r} names a {parse_device(dev_id).kind} device")
        chk.string(value["name"], f"{path}.name")
        cores = value.get("cores")
        if kind_of(dev_id).pools and cores is None:
            chk.fail(f"{path}.cores", f"is required for a {kind.upper()} device (its pools are counted in cores)")
        pool = parse_device(dev_id).positions
        if cores is not None:
            chk.num(cores, f"{path}.cores", positive=True, integer=True, high=COUNT)
            if pool is not None and len(pool) != cores:
                chk.fail(f"{path}.cores", f"is {cores} but the pool {dev_id!r} names {len(pool)} core(s)")
        for key in ("threads", "max_batch_size"):
            if value.get(key) is not None:
                chk.num(value[key], f"{path}.{key}", positive=True, integer=True, high=COUNT if key == "threads" else 1 << 31)
        if value.get("memory_bytes") is not None:
            chk.num(value["memory_bytes"], f"{path}.memory_bytes", positive=True, high=BYTES)
        for key in cls.TIME_FIELDS:
            if value.get(key) is not None:
                chk.num(value[key], f"{path}.{key}", nonneg=True, high=SECONDS[1])
        chk.string(value.get("spec"), f"{path}.spec", nullable=True)
        table = GradTable.parse(value["grad_seconds"], f"{path}.grad_seconds", chk)
        return cls(
            id=dev_id, kind=kind, name=value["name"], grad_seconds=table, cores=cores,
            threads=value.get("threads"), memory_bytes=value.get("memory_bytes"), spec=value.get("spec"),
            max_batch_size=value.get("max_batch_size"), **{key: value.get(key) for key in cls.TIME_FIELDS},
        )


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    bytes_per_second: float
    latency_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "bytes_per_second": self.bytes_per_second, "latency_seconds": self.latency_seconds}

    @classmethod
    def parse(cls, value, path: str, chk: _Checker) -> Link:
        chk.obj(value, path, {"src", "dst", "bytes_per_second", "latency_seconds"}, set())
        return cls(
            chk.device_id(value["src"], f"{path}.src"), chk.device_id(value["dst"], f"{path}.dst"),
            float(chk.num(value["bytes_per_second"], f"{path}.bytes_per_second", positive=True, low=1e3, high=1e15)),
            float(chk.num(value["latency_seconds"], f"{path}.latency_seconds", nonneg=True, high=10.0)),
        )


@dataclass(frozen=True)
class ModelInfo:
    name: str
    parameters: int
    parameter_bytes: int
    flops_per_sample: float | None = None
    sample_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "parameters": self.parameters, "parameter_bytes": self.parameter_bytes,
            "flops_per_sample": self.flops_per_sample,
            "sample_shape": list(self.sample_shape) if self.sample_shape is not None else None,
        }

    @classmethod
    def parse(cls, value, path: str, chk: _Checker) -> ModelInfo:
        chk.obj(value, path, {"name", "parameters", "parameter_bytes"}, {"flops_per_sample", "sample_shape"})
        shape = value.get("sample_shape")
        if shape is not None:
            shape = tuple(chk.num(s, f"{path}.sample_shape[{i}]", positive=True, integer=True, high=1 << 31)
                          for i, s in enumerate(chk.array(shape, f"{path}.sample_shape", nonempty=False, most=16)))
        return cls(
            chk.string(value["name"], f"{path}.name"),
            chk.num(value["parameters"], f"{path}.parameters", positive=True, integer=True, high=1 << 44),
            chk.num(value["parameter_bytes"], f"{path}.parameter_bytes", positive=True, integer=True, high=1 << 48),
            chk.num(value.get("flops_per_sample"), f"{path}.flops_per_sample", positive=True, nullable=True, high=1e18),
            shape,
        )


@dataclass(frozen=True)
class Profile:
    """A validated profile. Build one with :meth:`from_dict` or :func:`load_profile`."""

    model: ModelInfo
    batch_size: int
    devices: tuple[DeviceProfile, ...]
    links: tuple[Link, ...] = ()
    contention: tuple[Contention, ...] = ()
    provenance: dict = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)  # where it was loaded from

    def device(self, device_id: str) -> DeviceProfile:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise HetsamInputError(
            f"device {device_id!r} is not in the profile (it has {', '.join(self.device_ids)}); "
            "name one of those or re-profile with that device"
        )

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.devices)

    @property
    def busy(self) -> bool:
        """Measured while other processes used much of the CPUs (``provenance.busy``, written by
        the profiler, :mod:`hetsam.profiling.measure`); measuring again when quiet can fix it."""
        return self.provenance.get("busy") is True

    @property
    def warnings(self) -> tuple[str, ...]:
        """The notes in ``provenance.notes`` that say its times may be off or incomplete, which
        measuring again on a quiet machine can fix (:data:`WARNING_MARKERS`)."""
        notes = self.provenance.get("notes")
        items = notes if isinstance(notes, list) else str(notes or "").split(" | ")
        return tuple(n.strip() for n in map(str, items) if _is_warning(n.strip()))

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model.to_dict(),
            "batch_size": self.batch_size,
            "devices": [dev.to_dict() for dev in self.devices],
            "links": [link.to_dict() for link in self.links],
        }
        if self.contention:
            d["contention"] = [c.to_dict() for c in self.contention]
        d["provenance"] = dict(self.provenance)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, path) -> None:
        """Write atomically (``hetsam.io``): a failure leaves any previous file as it was."""
        from hetsam.io import write_text

        write_text(path, self.to_json() + "\n", "profile")

    @classmethod
    def from_dict(cls, data, where: str = "profile") -> Profile:
        chk = _Checker(where)
        chk.obj(data, "the top level", {"schema_version", "model", "batch_size", "devices", "links", "provenance"}, {"contention"})
        if data["schema_version"] != SCHEMA_VERSION:
            chk.fail("schema_version", f"is {data['schema_version']!r}; this hetsam reads version {SCHEMA_VERSION}")
        model = ModelInfo.parse(data["model"], "model", chk)
        batch_size = chk.num(data["batch_size"], "batch_size", positive=True, integer=True, high=BATCH)
        devices = tuple(DeviceProfile.parse(d, f"devices[{i}]", chk) for i, d in enumerate(chk.array(data["devices"], "devices")))
        ids = [d.id for d in devices]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            chk.fail("devices", f"lists {', '.join(dupes)} more than once")
        links = tuple(Link.parse(v, f"links[{i}]", chk) for i, v in enumerate(chk.array(data["links"], "links", nonempty=False)))
        pairs = chk.array(data.get("contention", []), "contention", nonempty=False)
        contention = tuple(Contention.parse(v, f"contention[{i}]", chk) for i, v in enumerate(pairs))
        for i, link in enumerate(links):
            for end in ("src", "dst"):
                if getattr(link, end) not in ids:
                    chk.fail(f"links[{i}].{end}", f"names {getattr(link, end)!r}, which is not among devices ({', '.join(ids)})")
        sockets = {parse_device(i).socket_id for i in ids}
        for i, c in enumerate(contention):
            for j, dev in enumerate(c.devices):
                if dev not in ids and parse_device(dev).socket_id not in sockets:
                    chk.fail(f"contention[{i}].devices[{j}]", f"names {dev!r}, which is on no profiled device")
        prov = chk.obj(data["provenance"], "provenance", {"kind"}, set(data["provenance"]) if isinstance(data["provenance"], dict) else set())
        if prov["kind"] not in _PROVENANCE_KINDS:
            chk.fail("provenance.kind", f"must be one of {', '.join(_PROVENANCE_KINDS)}, got {prov['kind']!r}")
        return cls(model, batch_size, devices, links, contention, dict(prov), source=where)

    @classmethod
    def from_json(cls, text: str, where: str = "profile") -> Profile:
        from hetsam.io import loads

        return cls.from_dict(loads(text, where), where)


# ---------------------------------------------------------------------------------------
def _reference_dir() -> Path | None:
    try:
        from importlib.resources import files

        path = Path(str(files("hetsam.reference_profiles")))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    here = Path(__file__).resolve().parents[2] / "profiles"  # a source checkout
    return here if here.is_dir() else None


def reference_profile_names() -> list[str]:
    """Names of the profiles bundled with hetsam (``profiles/*.json``), without ``.json``."""
    folder = _reference_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder else []


def load_profile(source) -> Profile:
    """Load and validate a profile from a path, or by the name of a bundled reference profile."""
    if isinstance(source, Profile):
        return source
    path = Path(source)
    if not path.exists() and path.suffix != ".json" and os.sep not in str(source):
        folder = _reference_dir()
        candidate = folder / f"{source}.json" if folder else None
        if candidate is not None and candidate.exists():
            path = candidate
        else:
            names = ", ".join(reference_profile_names()) or "none"
            raise HetsamInputError(f"no profile file {str(source)!r} and no bundled profile of that name (bundled: {names})")
    from hetsam.io import read_json

    return Profile.from_dict(read_json(path, "profile"), where=str(source))
