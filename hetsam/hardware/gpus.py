"""GPUs: NVML (``nvidia-ml-py``) for names, memory and clocks, ``torch.cuda`` for CUDA indices.

torch is imported only when it is needed (already imported, or NVML found an NVIDIA GPU, or NVML
is unusable but the machine shows a GPU driver), so ``hetsam devices`` on a CPU-only machine
never imports torch. Every failed probe leaves "could not collect" and a note.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hetsam.hardware.records import COULD_NOT_COLLECT, Device, collect, short_error

__all__ = ["detect_gpus"]


def _nvml_devices(notes: list[str], nvml=None) -> list[dict] | None:
    """NVML's view: one dict per GPU, or None when NVML is unusable here."""
    if nvml is None:
        try:
            import pynvml as nvml  # the nvidia-ml-py package
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            notes.append(f"gpu: NVML could not collect (pynvml not importable: {type(exc).__name__})")
            return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, driver missing, ...
        notes.append(f"gpu: NVML could not collect ({short_error(exc)})")
        return None
    out = []
    try:
        count = nvml.nvmlDeviceGetCount()
        driver = collect(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = collect(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
            out.append({
                "nvml_index": i,
                "name": collect(lambda: _text(nvml.nvmlDeviceGetName(h))),
                "uuid": collect(lambda: _text(nvml.nvmlDeviceGetUUID(h))),
                "memory_bytes": mem.total if mem != COULD_NOT_COLLECT else mem,
                "sm_clock_max_mhz": collect(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM)),
                "memory_clock_max_mhz": collect(lambda: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)),
                "pcie_generation": collect(lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(h)),
                "pcie_width": collect(lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(h)),
                "driver": driver,
            })
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: NVML could not collect the device list ({short_error(exc)})")
    finally:
        collect(nvml.nvmlShutdown)
    return out


def _torch_gpus(notes: list[str]) -> list[dict] | None:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: torch.cuda could not collect (torch not importable: {type(exc).__name__})")
        return None
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            uuid = getattr(p, "uuid", None)
            out.append({
                "index": i, "name": p.name, "memory_bytes": int(p.total_memory),
                "multiprocessors": p.multi_processor_count,
                "compute_capability": f"{p.major}.{p.minor}",
                "uuid": str(uuid) if uuid is not None else None,
            })
        return out
    except Exception as exc:  # noqa: BLE001
        notes.append(f"gpu: torch.cuda could not collect ({short_error(exc)})")
        return None


def _gpu_driver_present(dev_root: Path) -> bool:
    try:
        return any(dev_root.glob("nvidia[0-9]*")) or (dev_root / "kfd").exists()
    except OSError:
        return False


def detect_gpus(notes: list[str] | None = None, *, probe_torch: bool | None = None, nvml=None, dev_root="/dev") -> list[Device]:
    """GPUs as ``cuda:N`` devices (torch's indices), described by NVML where it is present.

    ``probe_torch``: True forces the torch probe, False forbids it, None decides (see the
    module docstring). ``nvml`` may be a stand-in for the ``pynvml`` module.
    """
    notes = notes if notes is not None else []
    nv = _nvml_devices(notes, nvml)
    if probe_torch is None:
        probe_torch = "torch" in sys.modules or bool(nv) or (nv is None and _gpu_driver_present(Path(dev_root)))
        if not probe_torch:
            why = "NVML reports no GPU" if nv is not None else "no GPU driver (NVML unusable, no /dev/nvidia*, /dev/kfd)"
            notes.append(f"gpu: torch.cuda not probed: {why}")
    tg = _torch_gpus(notes) if probe_torch else None

    devices = []
    if tg is not None:
        by_uuid = {str(n.get("uuid", "")).removeprefix("GPU-"): n for n in nv or []}
        for g in tg:
            match = by_uuid.get(str(g.get("uuid") or "").removeprefix("GPU-"))
            if match is None and nv is not None and len(nv) == len(tg):
                match = nv[g["index"]]  # same count: assume the same order
            details = {k: g[k] for k in ("multiprocessors", "compute_capability")}
            if match is not None:
                details.update({k: v for k, v in match.items() if k not in ("name", "memory_bytes", "uuid")})
            else:
                details["clocks"] = COULD_NOT_COLLECT
            devices.append(Device(f"cuda:{g['index']}", "gpu", g["name"], None, None, g["memory_bytes"], details))
    elif nv:
        notes.append("gpu: CUDA indices assumed to follow NVML's order (torch.cuda could not collect)")
        for n in nv:
            details = {k: v for k, v in n.items() if k not in ("name", "memory_bytes", "uuid")}
            devices.append(Device(f"cuda:{n['nvml_index']}", "gpu", n["name"], None, None, n["memory_bytes"], details))
    return devices


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
