"""AutoSAM inside PyTorch Lightning, on scikit-learn's digits (``hetsam.integrations.lightning``).

    python examples/lightning_train.py --strategy async_sam --max-steps 200
    python examples/lightning_train.py --strategy sam --mode automatic --max-steps 100
    python examples/lightning_train.py --strategy async_sam --mode automatic --devices 2   # strategy="ddp", gloo
    python examples/lightning_train.py --strategy sam --mode automatic --precision bf16-mixed --accumulate 2

``--mode manual`` (default): ``training_step`` calls ``self.optimizers().step(batch=batch)``;
``--mode automatic``: Lightning's own loop, its closure being AutoSAM's descent pass. The train
loader is wrapped with ``self.lookahead`` so AsyncSAM perturbs each step with a gradient taken on
that step's own samples. ``--devices N`` (N > 1) trains on N CPU processes with Lightning's
``strategy="ddp"`` (gloo; automatic optimization, each process reading its own shard).
``--precision`` is Lightning's ``Trainer(precision=...)`` (AutoSAM's own AMP; on CPU Lightning runs
``"16-mixed"`` as ``"bf16-mixed"``); ``--accumulate k`` its ``accumulate_grad_batches=k`` (automatic
mode; loader batches of ``--batch-size``/k, so a step still sees ``--batch-size`` samples). Ends by
printing one JSON line (rank 0 only, with ``world_size``).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from hetsam import AutoSAM, Plan
from hetsam.integrations.lightning import AutoSAMModule, pl


def digits(seed: int = 0) -> TensorDataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    return TensorDataset(torch.tensor(x, dtype=torch.float32)[perm] / 16.0, torch.tensor(y)[perm])


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def loss_fn(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def make_plan(strategy: str):
    if strategy == "auto":
        return "auto"
    return Plan(strategy, options={"ascent_batch_size": 16}) if strategy == "async_sam" else strategy


class DigitsModule(AutoSAMModule):
    def __init__(self, strategy="sam", mode="manual", batch_size=64, executor="threads", max_grad_norm=None,
                 step_lr=None, seed=0):
        super().__init__()
        self.net = make_net(seed)
        self.automatic_optimization = mode == "automatic"
        self.strategy, self.executor, self.batch_size = strategy, executor, batch_size
        self.max_grad_norm, self.step_lr, self.losses = max_grad_norm, step_lr, []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:  # Lightning's closure: AutoSAM runs it at the perturbed parameters
            loss = loss_fn(self.net, batch)
        else:
            loss = torch.as_tensor(self.optimizers().step(batch=batch))  # a float or a detached tensor
            sched = self.lr_schedulers()
            if sched is not None:
                sched.step()
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        opt = AutoSAM(self.net, loss_fn, torch.optim.SGD, rho=0.05, plan=make_plan(self.strategy),
                      executor=self.executor, max_grad_norm=self.max_grad_norm, seed=0, log=lambda line: None,
                      planner_options={"profile_budget_seconds": 10, "progress": False} if self.strategy == "auto" else None,
                      lr=0.05, momentum=0.9)
        if self.step_lr is None:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_lr, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self):
        data, sampler = digits(), None
        if self.trainer.world_size > 1:  # Lightning cannot see through the lookahead wrapper to shard it
            sampler = DistributedSampler(data, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False)
        return self.lookahead(DataLoader(data, batch_size=self.batch_size, shuffle=False, sampler=sampler))


def quiet_trainer(devices: int = 1, **kw) -> pl.Trainer:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    if devices > 1:  # one process per device; Lightning starts the others itself (gloo on CPU)
        kw.setdefault("strategy", "ddp")
    return pl.Trainer(accelerator="cpu", devices=devices, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="async_sam", choices=("sgd", "sam", "async_sam", "sampa", "rst", "auto"))
    ap.add_argument("--mode", default="manual", choices=("manual", "automatic"))
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--devices", type=int, default=1, help="CPU processes (N > 1: strategy='ddp', automatic mode)")
    ap.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed", "16-mixed"))
    ap.add_argument("--accumulate", type=int, default=1, help="accumulate_grad_batches (automatic mode)")
    args = ap.parse_args(argv)
    if args.max_steps < 1 or args.batch_size < 1 or args.devices < 1:
        ap.error("--max-steps, --batch-size and --devices must be positive")
    if args.devices > 1 and args.mode != "automatic":
        ap.error("--devices > 1 needs --mode automatic (manual optimization would bypass Lightning's DDP wrapper)")
    if args.accumulate < 1 or args.batch_size % args.accumulate or (args.accumulate > 1 and args.mode != "automatic"):
        ap.error("--accumulate must divide --batch-size, and needs --mode automatic")
    if args.devices > 1 and (args.accumulate > 1 or args.precision != "32-true"):
        ap.error("--devices > 1 runs with --precision 32-true and --accumulate 1 (hetsam.integrations.lightning)")
    module = DigitsModule(args.strategy, args.mode, args.batch_size // args.accumulate)
    trainer = quiet_trainer(args.devices, max_steps=args.max_steps, precision=args.precision,
                            accumulate_grad_batches=args.accumulate)
    trainer.fit(module)
    stats = module.autosam.stats()
    module.autosam.close()
    if trainer.global_rank != 0:
        return 0
    print(json.dumps({"global_step": trainer.global_step, "max_steps": args.max_steps, "strategy": args.strategy,
                      "world_size": trainer.world_size,
                      "mode": args.mode, "plan": stats["plan"], "precision": str(trainer.precision),
                      "accumulate": args.accumulate, "lookahead_jobs": stats.get("lookahead_jobs", 0),
                      "independent_jobs": stats.get("independent_jobs", 0), "final_loss": module.losses[-1]}))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # several processes: barrier, destroy the group, leave without finalization (a gloo bug)
