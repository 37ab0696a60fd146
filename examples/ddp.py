"""AutoSAM data-parallel: one process per rank, a DDP model, launched by torchrun.

    torchrun --nproc-per-node 2 examples/ddp.py                      # AsyncSAM on digits, CPU (gloo)
    torchrun --nproc-per-node 2 examples/ddp.py --strategy sampa     # SAMPa across the rank pair
    torchrun --nproc-per-node 2 examples/ddp.py --strategy sam --model resnet20 --steps 40 --json out.json
    torchrun --nproc-per-node 2 examples/ddp.py --strategy auto --steps 40   # each rank on its own cores

The same loop as single-process training: wrap the model in ``DistributedDataParallel`` and give
it to ``hetsam.AutoSAM``. The descent is all-reduced by DDP; each rank's ascent runs on that
rank's ``--ascent-device`` on its own shard of the batch (see ``hetsam.execution.distributed``). Data: the
scikit-learn digits (1,797 8x8 images, offline), 80/20 split; ``--model resnet20`` upsamples them
to 3x32x32 for the CIFAR ResNet-20. ``--batch-size`` is per rank (per pair with SAMPa pairs).

Device names may use ``{local_rank}`` and ``{next_local_rank}``: on this 2-core machine
``--descent-device 'cpu:0[{local_rank}]' --ascent-device 'cpu:0[{next_local_rank}]'`` gives each
rank one core for its descent and puts its ascent worker on the other rank's core.

``--strategy auto`` plans at the first step (``plan="auto"``): each rank is pinned to its own share
of the node's cores, profiles there, and all run rank 0's plan; ``opt.distributed`` (the data
shard) is known at construction all the same.

``--json PATH`` (rank 0 writes it): step times (median after ``--warmup`` steps), losses, test
accuracy, ``opt.stats()``, and whether the parameters are bit-identical on every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import hetsam
from hetsam.profiling.models import ResNet20


def digits(model: str) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    if model == "resnet20":  # 8x8 -> 3x32x32, nearest neighbour
        x = x.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    else:
        x = x.reshape(len(x), -1)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    cut = int(0.8 * len(x))
    train, test = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def build_model(name: str) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    if name == "resnet20":
        return ResNet20()
    return nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        x, y = data.tensors
        right = (model(x).argmax(1) == y).sum().item()
    model.train()
    return right / len(y)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="async_sam", choices=["sgd", "sam", "async_sam", "sampa", "rst", "auto"])
    ap.add_argument("--executor", default="threads", choices=["threads", "inline"])
    ap.add_argument("--model", default="mlp", choices=["mlp", "resnet20"])
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: --epochs)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="per rank (per pair with SAMPa pairs)")
    ap.add_argument("--ascent-batch-size", type=int, default=None, help="AsyncSAM's b' (default b)")
    ap.add_argument("--policy", default=None, choices=["lookahead", "independent"],
                    help="AsyncSAM's batch policy (default lookahead)")
    ap.add_argument("--descent-device", default="cpu")
    ap.add_argument("--ascent-device", default=None)
    ap.add_argument("--no-sampa-pairs", action="store_true", help="SAMPa: both gradients on every rank")
    ap.add_argument("--on-worker-failure", default="raise", choices=["raise", "degrade"])
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the median step time")
    ap.add_argument("--profile-budget", type=float, default=5.0, help="--strategy auto: seconds of profiling per rank")
    ap.add_argument("--json", default=None, help="rank 0 writes the results here")
    ap.add_argument("--no-fault-agreement", action="store_true",
                    help="measuring only: skip the per-step agreement on ascent failures (a failure then hangs)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.set_num_threads(args.threads)
    names = {"local_rank": local, "next_local_rank": (local + 1) % local_world}
    # the flags given become the strategy's options (a strategy refuses an option it does not have)
    options = {k: v for k, v in (("ascent_batch_size", args.ascent_batch_size), ("ascent_batches", args.policy))
               if v is not None}
    if args.strategy == "auto":  # the planner chooses the strategy, its numbers and each rank's devices
        if options or args.ascent_device or args.descent_device != "cpu":
            raise SystemExit("--strategy auto chooses the devices and options itself; drop --ascent-device, "
                             "--descent-device, --ascent-batch-size and --policy")
        plan = "auto"
    else:
        plan = hetsam.Plan(strategy=args.strategy, descent_device=args.descent_device.format(**names),
                           ascent_device=args.ascent_device.format(**names) if args.ascent_device else None, options=options)

    train, test = digits(args.model)
    model = DistributedDataParallel(build_model(args.model))
    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=args.rho, plan=plan, executor=args.executor,
                         on_worker_failure=args.on_worker_failure, sampa_pairs=False if args.no_sampa_pairs else None,
                         seed=0, lr=args.lr, momentum=0.9, weight_decay=5e-4,
                         planner_options={"profile_budget_seconds": args.profile_budget, "progress": False} if plan == "auto" else None)
    shard = opt.distributed  # at construction, whatever the plan; with SAMPa pairs both ranks of a pair read the same shard
    shard.fault_agreement = not args.no_fault_agreement
    sampler = DistributedSampler(train, num_replicas=shard.data_world, rank=shard.data_rank, shuffle=True, seed=0,
                                 drop_last=True)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    times, losses = [], []
    with opt:
        for epoch in range(10**9 if args.steps else args.epochs):
            sampler.set_epoch(epoch)
            for batch in opt.prefetch(loader):
                start = time.perf_counter()
                losses.append(opt.step(batch))
                times.append(time.perf_counter() - start)
                if args.steps and len(times) >= args.steps:
                    break
            if args.steps and len(times) >= args.steps:
                break
        stats = opt.stats()

    flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    everyone = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(everyone, flat)
    identical = all(torch.equal(everyone[0], f) for f in everyone)
    kept = times[args.warmup:] or times
    result = {
        "strategy": args.strategy, "executor": args.executor, "model": args.model, "ranks": world,
        "batch_per_rank": args.batch_size, "plan": opt.plan.describe(), "steps": len(times), "cpus": list(shard.cpus),
        "median_step_seconds": statistics.median(kept), "step_seconds": times,
        "first_loss": float(losses[0]), "last_loss": float(losses[-1]), "test_accuracy": accuracy(model.module, test),
        "ranks_bit_identical": identical, "stats": stats,
    }
    if rank == 0:
        print(f"{args.strategy} ({opt.plan.describe()}) on {world} ranks: {len(times)} steps, median "
              f"{result['median_step_seconds'] * 1e3:.1f} ms/step, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
              f"test accuracy {result['test_accuracy']:.3f}, ranks bit-identical: {identical}")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # barrier, destroy the group, leave without finalization (a gloo bug)
