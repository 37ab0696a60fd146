"""AutoSAM in a Hugging Face Accelerate loop, on scikit-learn's digits (``hetsam.integrations.accelerate``).

    python examples/accelerate_train.py --strategy async_sam --steps 200
    python examples/accelerate_train.py --strategy sam --precision bf16 --accumulate 2

``--precision`` is ``Accelerator(mixed_precision=...)`` (AutoSAM's own AMP), ``--accumulate k`` its
``gradient_accumulation_steps=k`` (loader batches of 64/k, so a step still sees 64 samples), with
the loop under ``accelerator.accumulate(model)`` as accelerate's documentation writes it. A
prepared cosine schedule counts optimizer steps. The model is prepared first and AutoSAM built on
what ``prepare`` returned, so under ``torchrun``/``accelerate launch`` its passes go through DDP.
Ends by printing one JSON line (the main process's; ``ranks_identical``: every process ended
with the same parameters).
"""

from __future__ import annotations

import argparse
import json

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hetsam import AutoSAM, Plan
from hetsam.integrations.accelerate import prepare

BATCH = 64


def digits(seed: int = 0) -> TensorDataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(torch.tensor(x, dtype=torch.float32)[perm] / 16.0, torch.tensor(y)[perm])


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), logits


def make_plan(strategy: str):
    return Plan(strategy, options={"ascent_batch_size": 16}) if strategy == "async_sam" else strategy


def make_autosam(net: nn.Module, strategy: str, executor: str = "threads") -> AutoSAM:
    return AutoSAM(net, loss_fn, torch.optim.SGD, rho=0.05, plan=make_plan(strategy), executor=executor, seed=0,
                   log=lambda line: None, lr=0.05, momentum=0.9)


def train(strategy: str, steps: int, precision: str = "no", accumulate: int = 1, executor: str = "threads",
          cpu: bool | None = None):
    """The Accelerate loop (on the GPU when there is one, unless ``cpu``); returns (model, AutoSAM,
    losses, accelerator)."""
    cpu = not torch.cuda.is_available() if cpu is None else cpu
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision, gradient_accumulation_steps=accumulate)
    model = accelerator.prepare(make_net(0))  # first: under torchrun AutoSAM trains the DDP-wrapped model
    autosam = make_autosam(model, strategy, executor)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(autosam, T_max=steps)
    loader = DataLoader(digits(), batch_size=BATCH // accumulate, shuffle=False)
    opt, loader, sched = prepare(accelerator, autosam, loader, sched)
    losses = []
    while autosam.stats()["steps"] < steps:
        for batch in opt.prefetch(loader):
            with accelerator.accumulate(model):
                loss = opt.step(batch)
            sched.step()
            if loss is not None:
                losses.append(float(loss))
                if len(losses) == steps:
                    break
    return model, autosam, losses, accelerator


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="async_sam", choices=("sgd", "sam", "async_sam", "rst", "msam"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--accumulate", type=int, default=1, help="gradient_accumulation_steps (divides the batch of 64)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be positive")
    if args.accumulate < 1 or BATCH % args.accumulate:
        ap.error("--accumulate must divide the batch of 64")
    model, autosam, losses, accelerator = train(args.strategy, args.steps, args.precision, args.accumulate)
    stats = autosam.stats()
    autosam.close()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    everyone = accelerator.gather(flat[None])  # every rank's parameters: identical when the descent was all-reduced
    identical = all(torch.equal(everyone[0], row) for row in everyone)
    if accelerator.is_main_process:
        print(json.dumps({"steps": stats["steps"], "loss": losses[-1], "world_size": accelerator.num_processes,
                          "ranks_identical": identical,
                          "strategy": args.strategy, "plan": stats["plan"], "precision": args.precision,
                          "accumulate": args.accumulate, "lookahead_jobs": stats.get("lookahead_jobs", 0),
                          "independent_jobs": stats.get("independent_jobs", 0)}))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # several processes: barrier, destroy the group, leave without finalization (a gloo bug)
