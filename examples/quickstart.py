"""Quickstart: train a model with hetsam.AutoSAM, which profiles this machine and plans for you.

    python examples/quickstart.py                 # a small CNN on scikit-learn's digits
    python examples/quickstart.py --epochs 2 --plan sam

The first run profiles the model here (cached in ~/.cache/hetsam, so later runs skip it) and
logs the chosen plan in one line.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import hetsam


def digits_data(seed: int = 0):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_test = len(x) // 5
    return (x[n_test:], y[n_test:]), (x[:n_test], y[:n_test])


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--plan", default="auto", help="auto, or a strategy: sgd, sam, async_sam, sampa, rst")
    ap.add_argument("--profile-budget-seconds", type=float, default=20.0)
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    (x_train, y_train), (x_test, y_test) = digits_data()
    model = make_model()
    options = {"profile_budget_seconds": args.profile_budget_seconds} if args.plan == "auto" else None
    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan=args.plan, planner_options=options,
                         lr=0.05, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    with opt:
        for epoch in range(args.epochs):
            perm = torch.randperm(len(x_train))
            loader = [(x_train[i], y_train[i]) for i in perm.split(args.batch_size)]
            losses = [opt.step(batch) for batch in opt.prefetch(loader)]
            model.eval()
            with torch.no_grad():
                acc = (model(x_test).argmax(1) == y_test).float().mean().item()
            model.train()
            print(f"epoch {epoch + 1}: loss {float(torch.stack(losses).mean()):.3f}, test accuracy {acc:.1%}")
        stats = opt.stats()
    print(f"plan: {stats['plan']}; {stats['steps']} steps in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
