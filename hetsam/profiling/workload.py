"""What one training step of a model does: FLOPs, bytes moved and kernels (for spec scaling)."""

from __future__ import annotations

import copy

import torch

from hetsam.execution.batches import batch_size, detach_to, slice_batch

__all__ = ["workload"]


def workload(model, loss_fn, sample_batch) -> dict | None:
    """FLOPs, bytes and kernel counts of one training step, from two small CPU passes.

    ``bytes(n) = bytes_per_step + n · bytes_per_sample`` is fitted from batches of 2 and 4
    samples, counting every non-view ATen op's input and output tensor bytes (what its kernel
    reads and writes). ``kernels_per_step`` counts those ops. ``flops`` use FlopCounterMode.
    Returns None when the passes fail (e.g. a model that cannot run on the CPU).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class _Traffic(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0
            self.bytes = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                self.ops += 1
                for group in (args, (kwargs or {}).values(), out if isinstance(out, (list, tuple)) else (out,)):
                    for t in group:
                        if isinstance(t, torch.Tensor):
                            self.bytes += t.numel() * t.element_size()
            return out

    B = batch_size(sample_batch)
    sizes = [2, 4] if B >= 4 else [B]
    try:
        replica = copy.deepcopy(model).to("cpu").train()
        batch = detach_to(sample_batch, "cpu")
        counts = {}
        for n in sizes:
            replica.zero_grad(set_to_none=True)
            with FlopCounterMode(display=False) as fc, _Traffic() as tr:
                loss_fn(replica, slice_batch(batch, 0, n)).backward()
            counts[n] = (fc.get_total_flops(), tr.bytes, tr.ops)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            loss_fn(replica, slice_batch(batch, 0, sizes[-1]))
        fwd = fc.get_total_flops() / sizes[-1]
    except Exception:  # noqa: BLE001 - FLOP/traffic counting is best effort
        return None
    n2 = sizes[-1]
    flops2, bytes2, ops2 = counts[n2]
    if len(sizes) == 2:
        flops1, bytes1, _ = counts[sizes[0]]
        per_sample = (bytes2 - bytes1) / (n2 - sizes[0])
        fixed = max(0.0, bytes2 - per_sample * n2)
    else:
        per_sample, fixed = bytes2 / n2, 0.0
    return {
        "forward_flops_per_sample": float(fwd) if fwd > 0 else None,
        "train_flops_per_sample": float(flops2 / n2) if flops2 > 0 else None,
        "bytes_per_sample": float(max(per_sample, 0.0)),
        "bytes_per_step": float(fixed),
        "kernels_per_step": int(ops2),
        "method": "FlopCounterMode; bytes = inputs+outputs of non-view ATen ops, fitted at batches " + "/".join(map(str, sizes)),
    }
