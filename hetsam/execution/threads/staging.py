"""Double-buffered parameter snapshots for the ascent worker (staging slots and their copies).

``submit`` copies θ and the buffers into a free slot on the ascent device and returns; the
worker loads the slot into its replica. A slot is free again once its job has completed, so
with exact staleness τ at most τ slots exist. With a GPU on either side the copy is
``non_blocking`` on a dedicated copy stream, ordered by CUDA events: after the training stream,
before the training stream changes θ again, and before the worker reads the slot.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hetsam.execution.jobs import GradJob
from hetsam.hardware.kinds import torch_kind

__all__ = ["Slot", "Staging"]


class Slot:
    """One staging copy of θ and the buffers on the ascent device (plus its CUDA events)."""

    __slots__ = ("params", "buffers", "ready", "free")

    def __init__(self, params: list[Tensor], buffers: list[Tensor]):
        self.params = params
        self.buffers = buffers
        self.ready: Any = None  # CUDA event: the copy into the slot is done
        self.free: Any = None  # CUDA event: the worker has read the slot (GPU ascent)

    def fits(self, job: GradJob) -> bool:
        """Whether the slot has the job's tensor shapes (parameter groups may have been added)."""
        return len(self.params) == len(job.params) and len(self.buffers) == len(job.buffers) and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(self.params, job.params))


class Staging:
    """The slots of one worker's device; ``copy_stream`` is set when a device with streams (a
    GPU) is on either side, on the result side's if it has them."""

    def __init__(self, device: torch.device, out_device: torch.device):
        self.device = device
        on = out_device if torch_kind(out_device).streams else device if torch_kind(device).streams else None
        self.kind = torch_kind(on) if on is not None else None  # the kind whose streams order the copies
        self.copy_stream = self.kind.new_stream(on) if on is not None else None
        self.slots: list[Slot] = []

    def stage(self, job: GradJob, free: Slot | None) -> Slot:
        """Copy the job's θ and buffers into ``free`` (or a new slot); returns the slot."""
        slot = free
        if slot is None or not slot.fits(job):
            if slot is not None:
                self.slots.remove(slot)
            slot = self._new_slot(job)
            self.slots.append(slot)
        if self.copy_stream is None:
            with torch.no_grad():
                torch._foreach_copy_(slot.params, list(job.params))
                if slot.buffers:
                    torch._foreach_copy_(slot.buffers, list(job.buffers))
            slot.ready = None
            return slot
        self._copy_streamed(job, slot)
        return slot

    def _new_slot(self, job: GradJob) -> Slot:
        dev = self.device
        pin = not torch_kind(dev).accelerator and self.copy_stream is not None  # GPU -> host: page-locked, async

        def like(t: Tensor) -> Tensor:
            return torch.empty(t.shape, dtype=t.dtype, device=dev, pin_memory=pin)

        return Slot([like(p) for p in job.params], [like(b) for b in job.buffers])

    def _copy_streamed(self, job: GradJob, slot: Slot) -> None:
        """θ → slot on the copy stream, between the training stream and the worker."""
        src = job.params[0].device if job.params else self.device
        caller = torch_kind(src).current_stream(src) if torch_kind(src).streams else None
        stream = self.copy_stream
        with self.kind.stream_context(stream), torch.no_grad():
            if caller is not None:
                stream.wait_stream(caller)  # θ as the training stream left it
            if slot.free is not None:
                stream.wait_event(slot.free)  # the worker has finished reading the slot
            torch._foreach_copy_(slot.params, list(job.params), non_blocking=True)
            if slot.buffers:
                torch._foreach_copy_(slot.buffers, list(job.buffers), non_blocking=True)
            slot.ready = self.kind.new_event()
            slot.ready.record(stream)
        if caller is not None:
            caller.wait_event(slot.ready)  # the training stream may change θ only after the copy read it
            for t in (*job.params, *job.buffers):
                t.record_stream(stream)

    def held_tensors(self) -> list[Tensor]:
        return [t for slot in self.slots for t in (*slot.params, *slot.buffers)]

    def clear(self) -> None:
        self.slots.clear()
