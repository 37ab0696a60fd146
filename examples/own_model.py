"""Your own model: profile it with ``hetsam.profile``, plan, and check the plan in the simulator.

    python examples/own_model.py                       # profiles a small CNN here (~20 s)
    python examples/own_model.py --budget-seconds 5 --out my-profile.json
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import hetsam
from hetsam.planning.search import plan


class SmallCNN(nn.Module):
    """Any nn.Module works; this one takes 1x28x28 images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--budget-seconds", type=float, default=20.0, help="profiling time budget")
    ap.add_argument("--out", default=None, help="save the profile here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    model = SmallCNN()
    g = torch.Generator().manual_seed(0)
    sample = (torch.randn(args.batch_size, 1, 28, 28, generator=g), torch.randint(0, 10, (args.batch_size,), generator=g))

    # 1. measure: forward+backward per device over a batch ladder, copies, contention
    profile = hetsam.profile(model, loss_fn, sample, budget_seconds=args.budget_seconds, name="SmallCNN",
                             progress=not args.quiet)
    if args.out:
        profile.save(args.out)
    for dev in profile.devices:
        ms = ", ".join(f"b={b}: {m * 1e3:.1f} ms" for b, m in zip(dev.grad_seconds.batch_sizes, dev.grad_seconds.median))
        print(f"{dev.id:10s} {ms}")

    # 2. plan: the strategy that hides the ascent best within 1.05x SGD's step time
    report = plan(profile, batch_size=args.batch_size)
    chosen = report.plan
    print(f"\nchosen: {chosen.describe()}")
    print(f"predicted {report.prediction.iteration_seconds * 1e3:.1f} ms/step, "
          f"{report.prediction.overhead_vs_sgd:+.1%} vs SGD, budget met: {report.budget_met}")

    # 3. simulate it for a whole training run (steady state is detected and extrapolated)
    result = hetsam.simulate(chosen, profile, iterations=10_000, seed=0)
    print(f"simulated: {result.iteration_seconds['mean'] * 1e3:.1f} ms/step mean, "
          f"p95 {result.iteration_seconds['p95'] * 1e3:.1f} ms, {result.samples_per_second:.0f} samples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
