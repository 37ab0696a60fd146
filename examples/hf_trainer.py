"""AutoSAM inside the Hugging Face Trainer: a tiny BERT on a synthetic text task
(``hetsam.integrations.transformers``).

    python examples/hf_trainer.py --strategy async_sam --max-steps 200
    torchrun --nproc-per-node 2 examples/hf_trainer.py --strategy async_sam --max-steps 100   # 2 processes, gloo
    python examples/hf_trainer.py --strategy sam --precision bf16 --accumulate 2

``--precision bf16``/``fp16`` sets the Trainer's ``bf16=True``/``fp16=True`` (AutoSAM's own AMP);
``--accumulate k`` its ``gradient_accumulation_steps=k`` (per-device batch 32/k, so a step still
sees 32 samples).

The task: sequences of 16 token ids from a vocabulary of 24; the label says whether token 3
occurs more often than token 4. The model is ``BertForSequenceClassification`` from a small
config (no download, no tokenizer). The Trainer's own AdamW with its decay/no-decay groups,
linear schedule, ``max_grad_norm``, ``max_steps`` and logging all run; AutoSAM does the steps.
Under torchrun each process trains on its own shard (``ddp_backend="gloo"`` on CPU), the descent
all-reduced through the Trainer's DDP wrapper (``hetsam.integrations.transformers``). Ends by
printing one JSON line (rank 0 only, with ``world_size``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import warnings

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from hetsam import Plan
from hetsam.integrations.transformers import AutoSAMTrainer

VOCAB, LENGTH = 24, 16


class CountingTask(torch.utils.data.Dataset):
    """Label 1 when token 3 occurs more often than token 4 (seeded, offline)."""

    def __init__(self, n: int = 2048, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
        self.labels = ((self.ids == 3).sum(1) > (self.ids == 4).sum(1)).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": self.labels[i]}


def make_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # no RNG in the passes
    return BertForSequenceClassification(config)


def make_plan(strategy: str):
    if strategy == "auto":
        return "auto"
    return Plan(strategy, options={"ascent_batch_size": 8}) if strategy == "async_sam" else strategy


def training_args(out: str, max_steps: int, **kw) -> TrainingArguments:
    base = dict(output_dir=out, max_steps=max_steps, per_device_train_batch_size=32, learning_rate=1e-3,
                weight_decay=0.01, max_grad_norm=1.0, logging_steps=max(1, max_steps // 5), save_strategy="no",
                report_to=[], seed=0, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: gloo on CPU
        base.update(ddp_backend="gloo", ddp_find_unused_parameters=False)
    base.update(kw)
    return TrainingArguments(**base)


def make_trainer(strategy: str, out: str, max_steps: int, *, executor: str = "threads", seed: int = 0, **kw):
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*label_names.*")
    autosam = {"plan": make_plan(strategy), "rho": 0.05, "executor": executor, "seed": 0, "log": lambda line: None}
    if strategy == "auto":
        autosam["planner_options"] = {"profile_budget_seconds": 10, "progress": False}
    return AutoSAMTrainer(model=make_model(seed), args=training_args(out, max_steps, **kw), train_dataset=CountingTask(),
                          autosam=autosam)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", default="async_sam", choices=("sgd", "sam", "async_sam", "sampa", "rst", "auto"))
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--precision", default="32", choices=("32", "bf16", "fp16"))
    ap.add_argument("--accumulate", type=int, default=1, help="gradient_accumulation_steps (divides the batch of 32)")
    args = ap.parse_args(argv)
    if args.max_steps < 1:
        ap.error("--max-steps must be positive")
    if args.accumulate < 1 or 32 % args.accumulate:
        ap.error("--accumulate must divide the batch of 32")
    flags = {args.precision: True} if args.precision != "32" else {}
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(args.strategy, out, args.max_steps, gradient_accumulation_steps=args.accumulate,
                               per_device_train_batch_size=32 // args.accumulate, **flags)
        result = trainer.train()
        stats = trainer.autosam.stats()
        trainer.autosam.close()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if trainer.args.process_index != 0:
        return 0
    print(json.dumps({"global_step": trainer.state.global_step, "max_steps": args.max_steps, "strategy": args.strategy,
                      "world_size": trainer.args.world_size,
                      "plan": stats["plan"], "precision": args.precision, "accumulate": args.accumulate,
                      "lookahead_jobs": stats.get("lookahead_jobs", 0),
                      "independent_jobs": stats.get("independent_jobs", 0),
                      "final_loss": losses[-1] if losses else result.training_loss}))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # several processes: barrier, destroy the group, leave without finalization (a gloo bug)
