"""Spec scaling: a profile for hardware you do not own, derived from one you measured.

The spec table (:mod:`hetsam.hardware.specs`, ``hetsam/data/device_specs.json``) lists peak FP32 FLOP/s, memory bandwidth,
memory, cores and links of known devices, each with its public source, plus the efficiency
assumptions below. Everything here is pure Python (no torch).

The workload of one training step at batch ``b`` comes from the measured profile
(``provenance.workload``, written by :func:`hetsam.profiling.measure.workload`):
``flops(b) = F·b`` (training FLOPs) and ``bytes(b) = B0 + B·b`` (what the kernels read and
write), over ``K`` kernels.

**Same kind (CPU -> CPU, GPU -> GPU): roofline ratio**, as Habitat (Yu et al., "Habitat: A
Runtime-Based Computational Performance Predictor for Deep Neural Network Training", USENIX
ATC 2021) scales a measured kernel by the ratio of the peaks that bound it. At the model level,
with the source's compute share ``w = c/(c+m)``, ``c = flops(b)/P_s``, ``m = bytes(b)/W_s``::

    t_target(b) = t_source(b) · ( w · P_s/P_t + (1 − w) · W_s/W_t )

``P`` is the effective peak of the cores used: ``k · p_min · E(k)``, where ``p_min`` is the
slowest core's peak among the ``k`` (OpenMP's static schedule waits for it on hybrid CPUs) and
``E(k) = 1/(k(1−f) + f)`` is Amdahl's efficiency with the assumed parallel fraction ``f``. ``W``
of a pool of ``k`` cores is ``W · min(1, k/(s·cores))`` (bandwidth saturates at a fraction ``s``
of the cores). The source is the measured device of that kind with the fewest cores, so the
least parallel overhead of the measuring machine is baked in. GPU targets keep a floor of
``K · host_seconds_per_kernel`` (the host issues kernels no faster than that).

**Across kinds (only a CPU measured, GPU target; or the reverse): explicit roofline** with
the documented efficiencies ``e``::

    GPU: t(b) = max( K·h,  K·κ + flops(b)/(P·e_P) + bytes(b)/(W·e_W) )
    CPU: t(b) = K·h + flops(b)/(P_eff(k)·e_cpu) + bytes(b)/(W(k)·e_W)

``h`` is the host time per kernel, ``κ`` the GPU time of a tiny kernel. The update of the base
optimizer is memory-bound: ``max(3h, u · parameter_bytes / (W·e_W))`` with ``u`` bytes moved per
parameter byte. Links come from the table: a GPU's host link (PCIe) both ways, a peer link
(NVLink) between two GPUs that share one, else through the host; a socket's memcpy link
``W · memcpy_efficiency``. Contention is not scaled (1.0 is assumed) and the provenance says so.

Every assumption and every choice is written to ``provenance`` (kind ``spec-scaled``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import parse_device
from hetsam.hardware.specs import (
    DeviceSpec,
    assumptions,
    by_reported_name,
    get_spec,
    spec_table,
)
from hetsam.profiling.schema import (
    DeviceProfile,
    GradTable,
    Link,
    Profile,
    load_profile,
)

__all__ = [
    "DeviceSpec",
    "spec_table",
    "get_spec",
    "assumptions",
    "spec_scale",
    "what_if",
    "step_seconds",
    "REFERENCE_MACHINES",
    "MEASURED_REFERENCE",
    "reference_machines",
]

# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Work:
    flops: float  # training FLOPs per sample
    bytes_per_sample: float
    bytes_per_step: float
    kernels: int
    note: str = ""

    def flops_at(self, b: float) -> float:
        return self.flops * b

    def bytes_at(self, b: float) -> float:
        return self.bytes_per_step + self.bytes_per_sample * b


def _workload(profile: Profile) -> _Work:
    work = profile.provenance.get("workload") if isinstance(profile.provenance, dict) else None
    if isinstance(work, dict) and work.get("train_flops_per_sample"):
        return _Work(float(work["train_flops_per_sample"]), float(work.get("bytes_per_sample") or 0.0),
                     float(work.get("bytes_per_step") or 0.0), int(work.get("kernels_per_step") or 0))
    if profile.model.flops_per_sample:
        return _Work(3.0 * profile.model.flops_per_sample, 0.0, 0.0, 0,
                     "no workload in the profile: training FLOPs = 3 x forward FLOPs, memory traffic and kernel count unknown (0)")
    raise HetsamInputError(
        f"{profile.source or 'the profile'} has no FLOP count (model.flops_per_sample) to scale from; re-profile with 'hetsam profile'"
    )


def _cores_of(dev_id: str, spec: DeviceSpec) -> int:
    pos = parse_device(dev_id).positions
    k = len(pos) if pos is not None else int(spec.cores or 1)
    if spec.cores and k > spec.cores:
        raise HetsamInputError(f"{dev_id} asks for {k} cores but {spec.key} has {spec.cores}")
    return k


def step_seconds(spec: DeviceSpec, k: int, work: _Work, b: float, c: dict[str, float]) -> float:
    """Explicit-roofline seconds of one forward+backward of ``b`` samples (module docstring)."""
    K, h = work.kernels, c["host_seconds_per_kernel"]
    if spec.kind == "gpu":
        device = (K * c["gpu_seconds_per_kernel"] + work.flops_at(b) / (spec.peak_fp32_flops * c["gpu_compute_efficiency"])
                  + work.bytes_at(b) / (spec.memory_bandwidth * c["gpu_memory_efficiency"]))
        return max(K * h, device)
    f, s = c["cpu_parallel_fraction"], c["cpu_bandwidth_saturation"]
    return (K * h + work.flops_at(b) / (spec.pool_peak(k, f) * c["cpu_compute_efficiency"])
            + work.bytes_at(b) / (spec.pool_bandwidth(k, s) * c["cpu_memory_efficiency"]))


def _ratio(src: DeviceSpec, k_s: int, dst: DeviceSpec, k_t: int, work: _Work, b: float, c: dict[str, float]) -> float:
    """``w·P_s/P_t + (1−w)·W_s/W_t`` with the source's compute share ``w`` at batch ``b``."""
    f, s = c["cpu_parallel_fraction"], c["cpu_bandwidth_saturation"]
    p_s, p_t = src.pool_peak(k_s, f), dst.pool_peak(k_t, f)
    w_s, w_t = src.pool_bandwidth(k_s, s), dst.pool_bandwidth(k_t, s)
    compute, memory = work.flops_at(b) / p_s, work.bytes_at(b) / w_s
    w = compute / (compute + memory) if compute + memory > 0 else 1.0
    return w * p_s / p_t + (1 - w) * w_s / w_t


def _update_seconds(spec: DeviceSpec, k: int, parameter_bytes: int, c: dict[str, float]) -> float:
    bw = spec.pool_bandwidth(k, c["cpu_bandwidth_saturation"]) if spec.kind == "cpu" else spec.memory_bandwidth
    eff = c["cpu_memory_efficiency"] if spec.kind == "cpu" else c["gpu_memory_efficiency"]
    return max(3 * c["host_seconds_per_kernel"], c["update_bytes_per_parameter_byte"] * parameter_bytes / (bw * eff))


def _scale_device(profile: Profile, work: _Work, new_id: str, spec: DeviceSpec, source: DeviceProfile | None,
                  source_spec: DeviceSpec | None, c: dict[str, float]) -> tuple[DeviceProfile, str]:
    k_t = _cores_of(new_id, spec) if spec.kind == "cpu" else 1
    ref = source or profile.devices[0]
    table = ref.grad_seconds
    medians, spreads = [], []
    if source is not None and source_spec is not None:
        k_s = (source.cores or 1) if source.kind == "cpu" else 1
        for b, t, sp in zip(table.batch_sizes, table.median, table.spread):
            r = _ratio(source_spec, k_s, spec, k_t, work, b, c)
            t_new = t * r
            if spec.kind == "gpu":
                t_new = max(t_new, work.kernels * c["host_seconds_per_kernel"])
            medians.append(t_new)
            spreads.append(sp / t * t_new)
        how = f"{new_id} <- roofline ratio from measured {source.id} ({source_spec.key}, {k_s} core(s))" if source.kind == "cpu" else \
              f"{new_id} <- roofline ratio from {source.id} ({source_spec.key})"
    else:
        for b, t, sp in zip(table.batch_sizes, table.median, table.spread):
            t_new = step_seconds(spec, k_t, work, b, c)
            medians.append(t_new)
            spreads.append(sp / t * t_new)  # the measured device's relative spread
        how = f"{new_id} <- explicit roofline ({spec.kind}, efficiencies from the spec table)"
    name = spec.name if spec.kind == "gpu" or k_t == spec.cores else f"{spec.name} ({k_t} of {spec.cores} cores)"
    update = _update_seconds(spec, k_t, profile.model.parameter_bytes, c)
    dev = DeviceProfile(
        id=new_id, kind=spec.kind, name=name,
        grad_seconds=GradTable(table.batch_sizes, tuple(medians), tuple(spreads), table.repeats),
        cores=k_t if spec.kind == "cpu" else None, threads=k_t if spec.kind == "cpu" else None,
        memory_bytes=spec.memory_bytes, spec=spec.key,
        update_seconds=update, climb_seconds=_like_update(ref, "climb_seconds", update),
        auxiliary_seconds=_like_update(ref, "auxiliary_seconds", update),
        sliced_handoff_seconds=_like_update(ref, "sliced_handoff_seconds", update),
    )
    return dev, how


def _like_update(ref: DeviceProfile, key: str, update: float) -> float | None:
    """Memory-bound over the parameters like the update: the measured ratio of ``key`` to the update, scaled."""
    value = getattr(ref, key)
    return None if value is None or not ref.update_seconds else update * value / ref.update_seconds


def _pick_source(profile: Profile, kind: str, source_specs: dict[str, str]) -> tuple[DeviceProfile | None, DeviceSpec | None]:
    """The measured device of ``kind`` with a known spec and the fewest cores.

    A device's spec is ``source_specs[id]``, else its ``spec`` field, else the table row whose
    name or alias equals the device's name (as torch or NVML reports it, any case).
    """
    best = None
    for d in profile.devices:
        key = source_specs.get(d.id) or d.spec
        spec = get_spec(key) if key is not None else by_reported_name(d.name)
        if d.kind != kind or spec is None:
            continue
        if best is None or (d.cores or 0) < (best[0].cores or 0):
            best = (d, spec)
    return best if best is not None else (None, None)


def _links(devices: list[DeviceProfile], specs: dict[str, DeviceSpec], c: dict[str, float]) -> list[Link]:
    """Links from the table between the hardware units of ``devices`` (one id per socket)."""
    units: dict[str, DeviceProfile] = {}
    for d in devices:
        unit = parse_device(d.id).socket_id
        if unit not in units or d.id == unit:
            units[unit] = d
    out: list[Link] = []
    reps = list(units.values())
    for d in reps:
        if kind_of(d.id).pools and d.id in specs:  # a socket's own memory
            spec = specs[d.id]
            out.append(Link(d.id, d.id, spec.memory_bandwidth * c["memcpy_efficiency"], 1e-6))
    for i, a in enumerate(reps):
        for b in reps[i + 1:]:
            sa, sb = specs.get(a.id), specs.get(b.id)
            ka, kb = kind_of(a.id), kind_of(b.id)
            if ka.accelerator and kb.accelerator and sa and sb:
                if sa.peer_link and sb.peer_link and sa.peer_link["name"] == sb.peer_link["name"]:
                    bw = min(sa.peer_link["bytes_per_second"], sb.peer_link["bytes_per_second"])
                    lat = max(sa.peer_link["latency_seconds"], sb.peer_link["latency_seconds"])
                else:  # through the host
                    bw = min(sa.host_link["bytes_per_second"], sb.host_link["bytes_per_second"])
                    lat = sa.host_link["latency_seconds"] + sb.host_link["latency_seconds"]
                out += [Link(a.id, b.id, bw, lat), Link(b.id, a.id, bw, lat)]
            elif ka.accelerator != kb.accelerator:
                gpu = a if ka.accelerator else b
                cpu = b if gpu is a else a
                gspec = specs.get(gpu.id)
                if gspec and gspec.host_link:
                    bw, lat = gspec.host_link["bytes_per_second"], gspec.host_link["latency_seconds"]
                    out += [Link(cpu.id, gpu.id, bw, lat), Link(gpu.id, cpu.id, bw, lat)]
            elif ka.pools and kb.pools and sa and sb:  # two sockets: the slower memory
                bw = min(sa.memory_bandwidth, sb.memory_bandwidth) * c["memcpy_efficiency"] / 2
                out.append(Link(a.id, b.id, bw, 2e-6))
    return out


def _describe_source(profile: Profile) -> str:
    p = profile.provenance
    parts = [str(profile.source or "profile")]
    for key in ("kind", "machine", "date"):
        if p.get(key):
            parts.append(f"{key} {p[key]}")
    return "; ".join(parts)


def _assumption_text(c: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(c.items()))


def spec_scale(measured, target_devices: dict[str, str], *, source_specs: dict[str, str] | None = None,
               name: str | None = None) -> Profile:
    """A profile of the devices ``{new_id: spec_key}`` derived from a measured profile.

    Args:
        measured: a :class:`Profile`, a path, or a bundled profile name.
        target_devices: e.g. ``{"cuda:0": "A6000", "cpu:0": "EPYC-7452", "cpu:0[0]": "EPYC-7452"}``;
            a CPU id names the whole socket (all of the spec's cores) or a pool of k cores.
        source_specs: the spec key of measured devices that carry none (``{"cpu:0[0]": "EPYC-Zen5-2vCPU"}``).
        name: a note for the provenance (e.g. the machine's name).
    """
    prof = load_profile(measured)
    if not target_devices:
        raise HetsamInputError("spec_scale needs at least one target device, e.g. {'cuda:0': 'A6000'}")
    c = assumptions()
    work = _workload(prof)
    source_specs = dict(source_specs or {})
    for dev_id in source_specs:
        prof.device(dev_id)  # raises for an unknown id
    devices, hows, specs = [], [], {}
    for new_id, key in target_devices.items():
        spec = get_spec(key)
        dev = parse_device(new_id)
        if dev.kind != spec.kind:
            raise HetsamInputError(f"{new_id} is a {dev.kind} device but spec {spec.key} is a {spec.kind}; name a {spec.kind} id")
        canon = str(dev.canonical())
        src, src_spec = _pick_source(prof, spec.kind, source_specs)
        scaled, how = _scale_device(prof, work, canon, spec, src, src_spec, c)
        devices.append(scaled)
        hows.append(how)
        specs[canon] = spec
    links = _links(devices, specs, c)
    provenance: dict[str, Any] = {
        "kind": "spec-scaled",
        "from": _describe_source(prof),
        "specs": "; ".join(f"{i}={s.key} ({s.name})" for i, s in specs.items()),
        "scaled": "; ".join(hows),
        "method": "hetsam.cost.specscale: roofline ratio within a kind (Habitat-style), explicit roofline across kinds; links from the spec table",
        "assumptions": _assumption_text(c),
        "contention": "not scaled: 1.0 assumed between pools",
        "workload": _work_dict(work, prof),
    }
    if work.note:
        provenance["workload_note"] = work.note
    if name:
        provenance["machine"] = name
    out = Profile(prof.model, prof.batch_size, tuple(devices), tuple(links), (), provenance)
    return Profile.from_dict(out.to_dict(), where="spec-scaled profile")


def what_if(profile, swaps: dict[str, str], *, source_specs: dict[str, str] | None = None) -> Profile:
    """The profile with devices swapped for (or added as) spec'd ones: ``{"cuda:0": "H100"}``.

    Swapping a socket ``cpu:S`` rescales its pools too (they keep their core counts). A swapped
    device is scaled from itself when its spec is known (its ``spec`` field or
    ``source_specs``), else from the measured device of its kind with a known spec and the
    fewest cores, else by explicit roofline. Links touching a swapped device come from the
    table; contention entries that touch one are dropped (1.0 assumed).
    """
    prof = load_profile(profile)
    if not swaps:
        return prof
    c = assumptions()
    work = _workload(prof)
    source_specs = dict(source_specs or {})
    devices = {d.id: d for d in prof.devices}
    specs: dict[str, DeviceSpec] = {d.id: get_spec(d.spec) for d in prof.devices if d.spec}
    specs.update({i: get_spec(k) for i, k in source_specs.items()})
    known = dict(specs)  # the specs of the devices as they were
    hows, touched = [], set()
    for dev_id, key in swaps.items():
        spec = get_spec(key)
        dev = parse_device(dev_id).canonical()
        if dev.kind != spec.kind:
            raise HetsamInputError(f"{dev_id} is a {dev.kind} device but spec {spec.key} is a {spec.kind}; name a {spec.kind} id")
        ids = [str(dev)]
        if kind_of(dev).pools and dev.positions is None:  # the socket's pools follow it
            ids += [i for i in devices if i != str(dev) and parse_device(i).socket_id == dev.socket_id]
        for new_id in ids:
            old = devices.get(new_id)
            if old is not None and old.kind == spec.kind and new_id in known:
                src, src_spec = old, known[new_id]
            else:
                src, src_spec = _pick_source(prof, spec.kind, source_specs)
            devices[new_id], how = _scale_device(prof, work, new_id, spec, src, src_spec, c)
            hows.append(how + ("" if old is not None else " (added)"))
            specs[new_id] = spec
            touched.add(parse_device(new_id).socket_id)

    def touches(ids) -> bool:
        return any(parse_device(i).socket_id in touched for i in ids)

    table_links = [link for link in _links(list(devices.values()), specs, c) if touches((link.src, link.dst))]
    replaced = {(link.src, link.dst) for link in table_links}
    # measured links stay unless the table gives a new one for that pair
    links = [link for link in prof.links if (link.src, link.dst) not in replaced] + table_links
    contention = tuple(x for x in prof.contention if not touches(x.devices))
    provenance = dict(prof.provenance)
    provenance.update({
        "kind": "spec-scaled",
        "from": _describe_source(prof),
        "what_if": "; ".join(f"{i}={get_spec(k).key}" for i, k in swaps.items()),
        "scaled": "; ".join(hows),
        "assumptions": _assumption_text(c),
        "workload": _work_dict(work, prof),
    })
    if len(contention) < len(prof.contention):
        provenance["contention"] = "entries on swapped hardware dropped: 1.0 assumed"
    out = Profile(prof.model, prof.batch_size, tuple(devices.values()), tuple(links), contention, provenance)
    return Profile.from_dict(out.to_dict(), where="what-if profile")


def _work_dict(work: _Work, prof: Profile) -> dict:
    old = prof.provenance.get("workload") if isinstance(prof.provenance.get("workload"), dict) else {}
    return {**old, "train_flops_per_sample": work.flops, "bytes_per_sample": work.bytes_per_sample,
            "bytes_per_step": work.bytes_per_step, "kernels_per_step": work.kernels}


# ---------------------------------------------------------------------------------------
# the bundled reference machines (profiles/*.json), derived from the measured ResNet-20 profile
MEASURED_REFERENCE = ("cpu-2core-resnet20", {"cpu:0": "EPYC-Zen5-2vCPU", "cpu:0[0]": "EPYC-Zen5-2vCPU"})

REFERENCE_MACHINES: dict[str, tuple[str, dict[str, str]]] = {
    "a6000-epyc7452": ("NVIDIA RTX A6000 + AMD EPYC 7452 (AsyncSAM paper)",
                       {"cuda:0": "A6000", "cpu:0": "EPYC-7452", "cpu:0[0]": "EPYC-7452"}),
    "rtx4060-i9-13900hx": ("NVIDIA RTX 4060 Laptop + Intel i9-13900HX (AsyncSAM paper)",
                           {"cuda:0": "RTX4060-Laptop", "cpu:0": "i9-13900HX", "cpu:0[0]": "i9-13900HX"}),
    "rtx4060-i7-12650h": ("NVIDIA RTX 4060 Laptop + Intel i7-12650H (AsyncSAM paper)",
                          {"cuda:0": "RTX4060-Laptop", "cpu:0": "i7-12650H", "cpu:0[0]": "i7-12650H"}),
    "2xa100": ("2x NVIDIA A100 80GB SXM (NVLink) + AMD EPYC 7742, one socket (DGX A100-like)",
               {"cuda:0": "A100-80GB-SXM", "cuda:1": "A100-80GB-SXM", "cpu:0": "EPYC-7742", "cpu:0[0]": "EPYC-7742"}),
    "h100-xeon": ("NVIDIA H100 SXM + Intel Xeon Platinum 8480+ (DGX H100-like, one socket)",
                  {"cuda:0": "H100-SXM", "cpu:0": "Xeon-8480+", "cpu:0[0]": "Xeon-8480+"}),
}


def reference_machines(measured=None) -> dict[str, Profile]:
    """The spec-scaled reference profiles, by file stem, from the measured reference profile.

    Deterministic: the same measured profile and spec table give byte-identical JSON.
    """
    name, source_specs = MEASURED_REFERENCE
    prof = load_profile(measured if measured is not None else name)
    prof = replace(prof, source=f"{name}.json")
    return {stem: spec_scale(prof, targets, source_specs=source_specs, name=label)
            for stem, (label, targets) in REFERENCE_MACHINES.items()}
