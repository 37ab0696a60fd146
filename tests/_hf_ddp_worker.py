"""The Hugging Face Trainer under ``torchrun --nproc-per-node 2`` with AutoSAM, gloo on CPU
(``tests/test_frameworks_ddp.py``).

Usage: ``torchrun --nproc-per-node 2 tests/_hf_ddp_worker.py OUT_DIR STRATEGY [STRATEGY ...]``. For
every strategy: one ``AutoSAMTrainer.train()`` (examples/hf_trainer.py's tiny BERT) recording each
rank's batches, then the raw DDP loop (``AutoSAM(DDP(model))``, the Trainer's AdamW groups and
options, ``max_grad_norm``) on those batches in the same processes. ``resume``: a run saved at step
3 (each rank's AutoSAM state in its own file) and resumed must end where the whole run ends.
Each rank writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from hf_trainer import CountingTask, make_model, training_args  # noqa: E402

from hetsam import AutoSAM, Plan  # noqa: E402
from hetsam.integrations._accumulate import concat  # noqa: E402
from hetsam.integrations.transformers import AutoSAMTrainer  # noqa: E402

STEPS, B = 5, 8  # steps, per-rank batch
PLANS = {
    "sam": ("sam", {}),
    "async_sam": (Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}), {}),
    "rst": (Plan(strategy="rst", options={"sam_probability": 0.5}), {}),
    "msam": ("msam", {}),
    "sampa": (Plan(strategy="sampa", options={"sampa_lambda": 0.2}), {"sampa_pairs": False}),
    "auto": ("auto", {"planner_options": {"profile_budget_seconds": 1.0, "progress": False}}),
    "async_sam_bf16_k2": (Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}), {}),
}
# bf16=True and gradient_accumulation_steps=2 over micro-batches of B/2: AutoSAM's own AMP, one step per pair
FLAGS = {"async_sam_bf16_k2": {"bf16": True, "gradient_accumulation_steps": 2}}


class Recording(AutoSAMTrainer):
    """Keeps each step's batch as the Trainer hands it to AutoSAM."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen.append({k: v.clone() for k, v in self._prepare_inputs(inputs).items()})
        return super().training_step(model, inputs, num_items_in_batch)


def trainer(name: str, out: str, steps: int = STEPS, **kw) -> Recording:
    plan, extra = PLANS[name]
    flags = FLAGS.get(name, {})
    per_step = B // flags.get("gradient_accumulation_steps", 1)
    args = training_args(out, steps, per_device_train_batch_size=per_step, lr_scheduler_type="constant", logging_steps=1,
                         ddp_backend="gloo", ddp_find_unused_parameters=False, **flags, **kw)
    t = Recording(model=make_model(0), args=args, train_dataset=CountingTask(n=128),
                  autosam={"plan": plan, "rho": 0.05, "executor": "threads", "seed": 0, "log": lambda line: None, **extra})
    t.seen = []
    return t


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_fn(model, inputs):
    return model(**inputs).loss  # what Trainer.compute_loss returns without num_items_in_batch


def reference(t: Recording, name: str) -> torch.Tensor:
    """The raw DDP loop on the batches this rank was given, with the Trainer's optimizer choice (and
    for ``auto`` the plan the Trainer's AutoSAM chose, given)."""
    plan, extra = PLANS[name]
    if plan == "auto":
        plan, extra = t.autosam.plan, {}
    names = {id(p): n for n, p in t.model.named_parameters()}
    model = make_model(0)
    mine = dict(model.named_parameters())
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [mine[names[id(p)]] for p in g["params"]]}
              for g in t.autosam.base_optimizer.param_groups]
    ddp = DistributedDataParallel(model, find_unused_parameters=False)
    k = t.args.gradient_accumulation_steps  # the raw loop's own accumulation over the concatenated micro-batches
    steps = [concat(t.seen[i:i + k]) for i in range(0, len(t.seen), k)]
    amp = "bf16" if t.args.bf16 else None
    with AutoSAM(ddp, loss_fn, type(t.autosam.base_optimizer), rho=0.05, plan=plan, executor="threads", seed=0,
                 params=groups, max_grad_norm=t.args.max_grad_norm, total_steps=t.autosam.total_steps, amp=amp,
                 warmup_steps=t.autosam.warmup_steps, log=lambda line: None, **extra) as opt:
        for batch in opt.prefetch(steps):
            opt.step(batch, accumulate=k)
    return flat(model)


def run(name: str, out: str) -> dict:
    if name == "resume":
        return resume(out)
    t = trainer(name, out)
    t.train()
    res = {"params": flat(t.model), "steps": t.state.global_step, "stats": t.autosam.stats(),
           "first_batch": t.seen[0]["input_ids"], "wrapped": type(t.autosam.model).__name__,
           "plan": t.autosam.plan.to_json(), "affinity": sorted(os.sched_getaffinity(0))}
    t.autosam.close()
    res["ref_params"] = reference(t, name)
    return res


def resume(out: str) -> dict:
    """async_sam for 6 steps, checkpointed at step 3 (each rank's AutoSAM state in its own file);
    a second Trainer resumes from there and must end where the first did."""
    whole = trainer("async_sam", os.path.join(out, "whole"), steps=6, save_strategy="steps", save_steps=3)
    whole.train()
    whole.autosam.close()
    folder = os.path.join(out, "whole", "checkpoint-3")
    resumed = trainer("async_sam", os.path.join(out, "resumed"), steps=6)
    resumed.train(resume_from_checkpoint=folder)
    resumed.autosam.close()
    return {"whole": flat(whole.model), "resumed": flat(resumed.model), "steps": resumed.state.global_step,
            "files": sorted(f for f in os.listdir(folder) if f.startswith("autosam_rank"))}


def main() -> int:
    out, names = sys.argv[1], sys.argv[2:]
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    results = {}
    for name in names:
        try:
            results[name] = run(name, out)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results[name] = {"error": traceback.format_exc()}
            break  # the ranks may be out of step now; stop rather than hang
    torch.save(results, os.path.join(out, f"rank{dist.get_rank()}.pt"))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # barrier, destroy the group, leave without finalization (a gloo bug)
