"""Reference models for profiling and examples, written without torchvision.

- ``resnet20``: the CIFAR-10 ResNet-20 of He et al., "Deep Residual Learning for Image
  Recognition" (CVPR 2016), section 4.2: a 3x3 conv with 16 filters, then three stages of
  ``n = 3`` basic blocks with 16, 32 and 64 filters (feature maps 32, 16, 8), global average
  pooling and a 10-way linear layer: 6n + 2 = 20 weighted layers. Shortcuts use **option A**
  of the paper (the one it uses on CIFAR): identity, and where the shape changes, stride-2
  subsampling plus zero-padding of the new channels, so shortcuts add no parameters.
  0.27 M parameters (269,722), as in the paper's Table 6. This is the model of the AsyncSAM
  paper's CIFAR-10 experiments.
- ``mlp``: a small multilayer perceptron on flattened 28x28 inputs (784-256-128-10, ReLU).
- ``transformer``: a small pre-norm Transformer encoder classifier over token sequences
  (vocabulary 1,000, 32 tokens, width 64, 4 heads, 2 layers, feed-forward 256, mean pooling,
  10 classes; no dropout, so its passes are deterministic); 0.17 M parameters.

Every entry of :data:`REFERENCE_MODELS` carries a builder, a sample-batch maker and a
``loss_fn(model, batch) -> scalar tensor`` (the signature ``hetsam.profile`` and ``AutoSAM``
take). Batches are ``(inputs, labels)`` of random data drawn from a seeded generator: profiling
needs the shapes, not real images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = [
    "ResNet20",
    "MLP",
    "TinyTransformer",
    "ReferenceModel",
    "REFERENCE_MODELS",
    "reference_model",
    "cross_entropy_loss",
]


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ``y = relu(F(x) + shortcut(x))`` (He et al. 2016, eq. 1)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes  # option A: zero-pad the new channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]  # option A: subsample by the stride
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 with option-A shortcuts (He et al. 2016, section 4.2); 269,722 parameters."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He (Kaiming) normal init, as in the paper
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class MLP(nn.Module):
    """A small MLP on flattened inputs: ``in -> hidden... -> classes`` with ReLU."""

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (256, 128), num_classes: int = 10):
        super().__init__()
        dims = (in_features, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class TinyTransformer(nn.Module):
    """Token ids ``(n, L)`` -> class logits: embeddings plus learned positions, pre-norm encoder
    layers (``nn.TransformerEncoderLayer``), mean over positions, a linear head."""

    def __init__(self, vocab: int = 1000, length: int = 32, width: int = 64, heads: int = 4, layers: int = 2,
                 ff: int = 256, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.zeros(length, width))
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.embed(tokens) + self.position[: tokens.shape[1]])
        return self.head(self.norm(h).mean(dim=1))


def cross_entropy_loss(model: nn.Module, batch) -> torch.Tensor:
    """``loss_fn(model, (x, y)) = mean cross-entropy of model(x) against labels y``."""
    inputs, labels = batch
    return F.cross_entropy(model(inputs), labels)


def _random_batch(shape: tuple[int, ...], num_classes: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def make(batch_size: int, seed: int = 0, device="cpu"):
        _checks.integer(batch_size, "batch size", low=1, high=1 << 20)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((batch_size, *shape), generator=gen)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        return x.to(device), y.to(device)

    return make


def _random_tokens(length: int, vocab: int, num_classes: int) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def make(batch_size: int, seed: int = 0, device="cpu"):
        _checks.integer(batch_size, "batch size", low=1, high=1 << 20)
        gen = torch.Generator().manual_seed(seed)
        x = torch.randint(0, vocab, (batch_size, length), generator=gen)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        return x.to(device), y.to(device)

    return make


@dataclass(frozen=True)
class ReferenceModel:
    """A named reference model: ``build()`` a fresh model, ``sample_batch(b)`` a batch of b samples."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    sample_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[nn.Module, object], torch.Tensor]
    sample_shape: tuple[int, ...]
    step_bytes_per_sample: float  # about what one training step allocates per sample (activations, gradients)

    def check_batch(self, batch_size: int, what: str = "--batch-size") -> int:
        """``batch_size`` if a step at that batch fits this machine's available memory; a one-line
        error before anything is allocated otherwise."""
        _checks.integer(batch_size, what, low=1, high=1 << 20)
        need = batch_size * self.step_bytes_per_sample
        try:
            import psutil

            free = psutil.virtual_memory().available
        except Exception:  # noqa: BLE001 - without the probe, only the integer bound applies
            return batch_size
        if need > 0.8 * free:
            raise HetsamInputError(f"{what} {batch_size}: a {self.name} step needs about {need / 2**30:.1f} GiB, this "
                                   f"machine has {free / 2**30:.1f} GiB available; use a smaller batch")
        return batch_size


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    "resnet20": ReferenceModel(
        "resnet20", "CIFAR-10 ResNet-20, option-A shortcuts (He et al. 2016), 0.27 M parameters",
        ResNet20, _random_batch((3, 32, 32), 10), cross_entropy_loss, (3, 32, 32), 2.5e6,
    ),
    "mlp": ReferenceModel(
        "mlp", "MLP 784-256-128-10 with ReLU on 28x28 inputs",
        MLP, _random_batch((1, 28, 28), 10), cross_entropy_loss, (1, 28, 28), 3e4,
    ),
    "transformer": ReferenceModel(
        "transformer", "Transformer encoder classifier: 32 tokens, width 64, 4 heads, 2 layers, 0.17 M parameters",
        TinyTransformer, _random_tokens(32, 1000, 10), cross_entropy_loss, (32,), 1e6,
    ),
}


def reference_model(name: str) -> ReferenceModel:
    """Look up a reference model by name; a :class:`HetsamInputError` lists the known names."""
    try:
        return REFERENCE_MODELS[name]
    except KeyError:
        raise HetsamInputError(f"unknown model {name!r}: choose one of {', '.join(sorted(REFERENCE_MODELS))}") from None
