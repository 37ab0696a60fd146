"""What a framework adds to a step: AutoSAM vs plain SGD, in a plain loop, Lightning and the Trainer.

    python examples/bench_integrations.py --steps 60 --rounds 5

The same model (ResNet-20 at b = 64 by default, or the digits MLP with ``--model mlp``) and the
same batches run in six arrangements, each timed per step from the framework's own batch hooks
(plain loop: around ``step``; Lightning: ``on_train_batch_start``..``end``; Trainer:
``on_step_begin``..``end``), in interleaved rounds (A B C ... A B C ...). For each framework it
reports the median step of plain SGD and of AutoSAM (SAM), and what the framework adds to each over
the plain loop: the goal is that it adds no more to AutoSAM than to SGD.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader

from hetsam import AutoSAM
from hetsam.profiling.models import reference_model

SKIP = 5  # warm-up steps of every run left out of the medians


def make(model_name: str, batch_size: int, n_batches: int, seed: int = 0):
    ref = reference_model(model_name)
    torch.manual_seed(seed)
    net = ref.build()
    data = [ref.sample_batch(batch_size, seed=i) for i in range(n_batches)]
    return net, ref.loss_fn, data


def plain(net, loss_fn, data, use_sam):
    times = []
    if use_sam:
        opt = AutoSAM(net, loss_fn, torch.optim.SGD, plan="sam", lr=0.01, momentum=0.9)
        for batch in data:
            t = time.perf_counter()
            opt.step(batch)
            times.append(time.perf_counter() - t)
        opt.close()
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        for batch in data:
            t = time.perf_counter()
            opt.zero_grad()
            loss_fn(net, batch).backward()
            opt.step()
            times.append(time.perf_counter() - t)
    return times


def lightning(net, loss_fn, data, use_sam):
    from lightning_train import quiet_trainer

    from hetsam.integrations.lightning import AutoSAMModule, pl

    times = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.t)

    class Module(AutoSAMModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            return loss_fn(self.net, batch)

        def configure_optimizers(self):
            if use_sam:
                return AutoSAM(self.net, loss_fn, torch.optim.SGD, plan="sam", lr=0.01, momentum=0.9)
            return torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)

        def on_train_start(self):
            if use_sam:
                super().on_train_start()

        def optimizer_step(self, *args, **kwargs):
            if use_sam:
                return super().optimizer_step(*args, **kwargs)
            return pl.LightningModule.optimizer_step(self, *args, **kwargs)

    loader = DataLoader(_Listed(data), batch_size=None, shuffle=False)
    module = Module()
    quiet_trainer(max_steps=len(data), callbacks=[Timer()]).fit(module, train_dataloaders=loader)
    if use_sam:
        module.autosam.close()
    return times


def trainer(net, loss_fn, data, use_sam):
    import transformers

    from hetsam.integrations.transformers import AutoSAMTrainer

    times = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    class Wrapped(nn.Module):  # the Trainer's calling convention: model(**batch) -> {"loss": ...}
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, y):
            return {"loss": loss_fn(self.net, (x, y))}

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {"x": data[i][0], "y": data[i][1]}

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(out, max_steps=len(data), per_device_train_batch_size=1, learning_rate=0.01,
                                              optim="sgd", max_grad_norm=0.0, report_to=[], save_strategy="no",
                                              use_cpu=True, disable_tqdm=True, logging_strategy="no")
        kw = dict(model=Wrapped(), args=args, train_dataset=Rows(), data_collator=_first, callbacks=[Timer()])
        t = AutoSAMTrainer(autosam={"plan": "sam"}, **kw) if use_sam else transformers.Trainer(**kw)
        t.remove_callback(transformers.PrinterCallback)
        t._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(Rows())
        t.train()
        if use_sam:
            t.autosam.close()
    return times


class _Listed(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def _first(rows):  # batches are made already; the Trainer's loader gives one row per step
    return rows[0]


FRAMEWORKS = {"plain": plain, "lightning": lightning, "trainer": trainer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=("resnet20", "mlp"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40, help="steps per run (the first 5 are warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.steps <= SKIP or args.rounds < 1 or args.batch_size < 1:
        ap.error(f"--steps must exceed {SKIP}, --rounds and --batch-size must be positive")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from hetsam.execution.allocator import apply_policy

    apply_policy()  # freed activations stay in the process: no page-fault cost that depends on history
    samples = {(f, s): [] for f in FRAMEWORKS for s in (False, True)}
    order = list(samples)
    for r in range(args.rounds):
        for name, use_sam in order[r % len(order):] + order[:r % len(order)]:  # a rotated order each round
            net, loss_fn, data = make(args.model, args.batch_size, args.steps)
            samples[(name, use_sam)] += FRAMEWORKS[name](net, loss_fn, data, use_sam)[SKIP:]
    med = {k: statistics.median(v) for k, v in samples.items()}
    rows = []
    for name in FRAMEWORKS:
        sgd, sam = med[(name, False)], med[(name, True)]
        rows.append({"framework": name, "sgd_ms": sgd * 1e3, "sam_ms": sam * 1e3,
                     "added_to_sgd_ms": (sgd - med[("plain", False)]) * 1e3,
                     "added_to_sam_ms": (sam - med[("plain", True)]) * 1e3,
                     "sgd_vs_plain": sgd / med[("plain", False)], "sam_vs_plain": sam / med[("plain", True)]})
    if args.json:
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows}))
        return 0
    print(f"{args.model} at b = {args.batch_size}: median step over {args.rounds} interleaved rounds of "
          f"{args.steps - SKIP} timed steps")
    print(f"{'framework':<10} {'SGD ms':>8} {'SAM ms':>8} {'adds to SGD':>12} {'adds to SAM':>12} {'SGD x':>6} {'SAM x':>6}")
    for r in rows:
        print(f"{r['framework']:<10} {r['sgd_ms']:8.2f} {r['sam_ms']:8.2f} {r['added_to_sgd_ms']:+11.2f}  "
              f"{r['added_to_sam_ms']:+11.2f}  {r['sgd_vs_plain']:6.3f} {r['sam_vs_plain']:6.3f}")
    return 0


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
