"""Lightning's ``strategy="ddp"`` with AutoSAM: 2 processes, gloo on CPU (``tests/test_frameworks_ddp.py``).

Usage: ``python tests/_lightning_ddp_worker.py OUT_DIR STRATEGY [STRATEGY ...]`` with ``MASTER_ADDR``
and ``MASTER_PORT`` set; Lightning starts the second process itself (the same command, with
``LOCAL_RANK=1``). For every strategy: one ``Trainer.fit`` (automatic optimization) recording each
rank's batches, then the raw DDP loop (``examples/ddp.py``'s arrangement: ``AutoSAM(DDP(model))``)
on those batches in the same processes (``spawn``, alone: async_sam under ``strategy="ddp_spawn"``,
each spawned process comparing itself there); ``resume``: a run saved at step 3 and resumed must end
where the whole run ends. Each rank writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from hetsam import AutoSAM, Plan
from hetsam.integrations.lightning import AutoSAMModule, pl

STEPS, B = 6, 8  # steps, per-rank batch
PLANS = {
    "sam": "sam",
    "async_sam": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
    "rst": Plan(strategy="rst", options={"sam_probability": 0.5}),
    "msam": "msam",
    "sampa": Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
}


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(96, 10, generator=g), torch.randint(0, 3, (96,), generator=g))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def autosam(model, name: str) -> AutoSAM:
    return AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan=PLANS[name], executor="threads", seed=0,
                   total_steps=STEPS, log=lambda line: None, lr=0.05, momentum=0.9)


class Module(AutoSAMModule):
    def __init__(self, name: str, lookahead: bool, manual: bool = False):
        super().__init__()
        self.net, self.name, self.use_lookahead, self.seen = net(), name, lookahead, []
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        return loss_fn(self.net, batch)

    def on_train_batch_start(self, batch, batch_idx):
        super().on_train_batch_start(batch, batch_idx)
        self.seen.append([t.clone() for t in batch])

    def configure_optimizers(self):
        return autosam(self.net, self.name)

    def train_dataloader(self):
        data = dataset()
        if not self.use_lookahead:
            return DataLoader(data, batch_size=B)  # Lightning puts its DistributedSampler in
        sampler = DistributedSampler(data, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False)
        return self.lookahead(DataLoader(data, batch_size=B, sampler=sampler))


class SpawnModule(Module):
    """For ``strategy="ddp_spawn"``: AutoSAM lives in the spawned processes, so each compares itself
    with the raw DDP loop there, at the end of training, and writes what it found."""

    out_dir = ""

    def on_train_end(self):
        out = {"params": flat(self.net), "steps": len(self.seen), "stats": self.autosam.stats(), "first_batch": self.seen[0][0]}
        self.autosam.close()
        ref = DistributedDataParallel(net())
        with autosam(ref, self.name) as opt:
            for batch in opt.prefetch(self.seen):
                opt.step(batch)
        out["ref_params"] = flat(ref.module)
        torch.save({"spawn": out}, os.path.join(self.out_dir, f"rank{dist.get_rank()}.pt"))
        atexit.register(_leave)  # after Lightning's own teardown and its (synchronous) return queue


def _leave() -> None:
    """A spawned rank's last act: leave without interpreter finalization, where torch 2.13's gloo
    threads sometimes abort ("terminate called without an active exception", SIGABRT; the
    launcher's ranks use hetsam.execution.distributed.exit_process for the same reason)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(out_dir: str) -> None:
    """async_sam under ``strategy="ddp_spawn"`` (the spawned processes write the results)."""
    module = SpawnModule("async_sam", lookahead=True)
    module.out_dir = out_dir
    trainer(out_dir, strategy="ddp_spawn").fit(module)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def resume(out_dir: str) -> dict:
    """async_sam: a whole run of STEPS steps; a run of 3 steps saved (every rank's AutoSAM state in
    the one file) and resumed to STEPS must end where the whole run did."""
    whole = Module("async_sam", lookahead=True)
    trainer(out_dir).fit(whole)
    first = Module("async_sam", lookahead=True)
    t = trainer(out_dir, max_steps=3)
    t.fit(first)
    path = os.path.join(out_dir, "half.ckpt")
    t.save_checkpoint(path)  # on every rank, as Lightning asks
    resumed = Module("async_sam", lookahead=True)
    trainer(out_dir).fit(resumed, ckpt_path=path)
    for m in (whole, first, resumed):
        m.autosam.close()
    saved = torch.load(path, weights_only=False)
    return {"whole": flat(whole.net), "resumed": flat(resumed.net), "steps": len(resumed.seen),
            "rank_states": len(saved["hetsam_rank_states"]["states"])}


def run(name: str, out_dir: str) -> dict:
    if name == "resume":
        return resume(out_dir)
    if name in ("manual", "sampa", "bf16", "accumulate"):  # refused in one line at on_train_start
        module = Module(name if name == "sampa" else "sam", lookahead=False, manual=name == "manual")
        flags = {"bf16": {"precision": "bf16-mixed"}, "accumulate": {"accumulate_grad_batches": 2}}.get(name, {})
        try:
            trainer(out_dir, **flags).fit(module)
        except Exception as exc:  # noqa: BLE001 - the message is what the test checks
            return {"refused": f"{type(exc).__name__}: {exc}"}
        return {"refused": None}
    module = Module(name, lookahead=name == "async_sam")
    trainer(out_dir).fit(module)
    out = {"params": flat(module.net), "steps": len(module.seen), "stats": module.autosam.stats(),
           "first_batch": module.seen[0][0]}
    module.autosam.close()
    ref = DistributedDataParallel(net())  # the raw DDP loop on the batches this rank was given
    with autosam(ref, name) as opt:
        for batch in opt.prefetch(module.seen):
            opt.step(batch)
    out["ref_params"] = flat(ref.module)
    return out


def trainer(out_dir: str, **kw) -> pl.Trainer:
    kw = {"max_steps": STEPS, "strategy": "ddp", **kw}
    return pl.Trainer(accelerator="cpu", devices=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir, **kw)


def main() -> int:
    out_dir, names = sys.argv[1], sys.argv[2:]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    if names == ["spawn"]:  # a launch of its own: this process only spawns the two ranks
        spawn(out_dir)
        return 0
    results = {}
    for name in names:
        try:
            results[name] = run(name, out_dir)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results[name] = {"error": traceback.format_exc()}
            break  # the ranks may be out of step now; stop rather than hang
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("LOCAL_RANK", 0))
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # barrier, destroy the group, leave without finalization (a gloo bug)
