"""CUDA GPUs: ``cuda`` (the current device) and ``cuda:N``.

Detection asks NVML and ``torch.cuda`` (:mod:`hetsam.hardware.gpus`; torch only when a GPU is
likely). The profiler times with CUDA events; the executor queues copies and passes on CUDA
streams and orders them with events. A GPU has memory of its own: the cost model prices its
copies to the host over the profile's links, and a spare GPU may take the ascent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hetsam.errors import HetsamInputError
from hetsam.hardware.gpus import detect_gpus
from hetsam.hardware.kinds.base import DeviceKind, DeviceName

__all__ = ["CudaKind", "KIND"]


class CudaKind(DeviceKind):
    name = "cuda"
    record_kind = "gpu"
    forms = "'cuda' or 'cuda:N'"
    torch_type = "cuda"
    pools = False
    alias_spans = False
    accelerator = True
    streams = True
    amp_dtype = "float16"

    def detect(self, notes: list[str], probes: dict[str, Any]) -> list:
        if not probes.get("gpus", True):
            return []
        return detect_gpus(notes, probe_torch=probes.get("probe_torch"))

    def torch_device(self, dev: DeviceName):
        import torch

        if not torch.cuda.is_available():
            raise HetsamInputError(f"device {str(dev)!r} is a GPU, but this torch has no usable CUDA device "
                                   "(torch.cuda.is_available() is False); plan for the CPU, or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise HetsamInputError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                                   "see 'hetsam devices'")
        return torch.device("cuda") if dev.index is None else torch.device("cuda", dev.index)

    def current_index(self) -> int:
        import torch

        return torch.cuda.current_device() if torch.cuda.is_available() else 0

    def enter(self, device, threads: int | None, cpus=None, *, stream: bool = False) -> None:
        import torch

        torch.cuda.set_device(device)
        if stream:
            torch.cuda.set_stream(torch.cuda.Stream(device))

    def timed(self, device, fn: Callable[[], None]) -> float:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def synchronize(self, device) -> None:
        import torch

        torch.cuda.synchronize(device)

    def release(self) -> None:
        import torch

        torch.cuda.empty_cache()

    def new_stream(self, device):
        import torch

        return torch.cuda.Stream(device)

    def current_stream(self, device):
        import torch

        return torch.cuda.current_stream(device)

    def new_event(self):
        import torch

        return torch.cuda.Event()

    def stream_context(self, stream):
        import torch

        return torch.cuda.stream(stream)


KIND = CudaKind()
