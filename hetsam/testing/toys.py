"""The small model and data that the contract cases train on (and hetsam's own tests use): a
10-16-3 MLP (with BatchNorm when asked), batches of 16 random samples with a learnable label, the
mean cross-entropy. The machine they plan on is in :mod:`hetsam.testing.profiles` (torch-free).
"""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SGD_KW", "mlp", "loss_fn", "batches", "flat", "save_load", "deterministic_algorithms"]

SGD_KW = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def mlp(seed: int = 0, bn: bool = False, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(10, 16)]
    if bn:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.Tanh(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).to(dtype)


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def batches(n: int, b: int = 16, seed: int = 1, dtype=torch.float32) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(b, 10, generator=g, dtype=dtype)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        out.append((x, y))
    return out


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def save_load(obj):
    """Through ``torch.save`` and ``torch.load(weights_only=True)``, as a checkpoint goes."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@contextlib.contextmanager
def deterministic_algorithms():
    """torch's deterministic algorithms inside the block (bit-for-bit comparisons on CPU)."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)
