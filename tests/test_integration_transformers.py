"""AutoSAM inside the Hugging Face Trainer against AutoSAM in a plain loop (the real package)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from hf_trainer import (  # noqa: E402
    CountingTask,
    main,
    make_model,
    make_plan,
    make_trainer,
    training_args,
)
from transformers import get_linear_schedule_with_warmup  # noqa: E402

from hetsam import AutoSAM, HetsamInputError  # noqa: E402

STEPS = 10


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class Recording:
    """Wraps a trainer's training_step to record the batches it stepped on."""

    def __init__(self, trainer):
        self.batches, inner = [], trainer.training_step

        def step(model, inputs, num_items_in_batch=None):
            self.batches.append({k: v.clone() for k, v in inputs.items()})
            return inner(model, inputs, num_items_in_batch)

        trainer.training_step = step


def plain_loop(strategy, batches, decay_names, executor="threads", amp=None, accumulate=1, sizes=None):
    """AdamW with the Trainer's decay groups and defaults (fused, as its default optim is), its linear
    schedule and clipping; ``accumulate=k``: one step on each k consecutive ``batches`` concatenated
    (``sizes``: the micro-batch count of each step instead)."""
    model = make_model(0)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n in decay_names], "weight_decay": 0.01},
              {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0}]
    opt = AutoSAM(model, lambda m, b: m(**b).loss, torch.optim.AdamW, rho=0.05, plan=make_plan(strategy), executor=executor,
                  params=groups, max_grad_norm=1.0, seed=0, amp=amp, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                  fused=True)  # the Trainer's default optim here is adamw_torch_fused
    sizes = sizes or [accumulate] * (len(batches) // accumulate)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    steps = [{k: torch.cat([b[k] for b in batches[i:i + n]]) for k in batches[i]} for i, n in zip(starts, sizes)]
    sched = get_linear_schedule_with_warmup(opt, 0, len(steps))
    with opt:
        for batch, n in zip(opt.prefetch(steps), sizes):
            opt.step(batch, accumulate=n)
            sched.step()
        return model, opt.stats()


@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_trainer_equals_the_plain_loop_bit_for_bit(strategy, tmp_path, deterministic):
    trainer = make_trainer(strategy, str(tmp_path), STEPS)
    record = Recording(trainer)
    trainer.train()
    stats = trainer.autosam.stats()
    trainer.autosam.close()
    assert trainer.state.global_step == STEPS and stats["steps"] == STEPS and len(record.batches) == STEPS
    decay = set(trainer.get_decay_parameter_names(trainer.model))
    assert any("bias" in n for n, _ in trainer.model.named_parameters() if n not in decay)  # two real groups
    ref, ref_stats = plain_loop(strategy, record.batches, decay)
    assert torch.equal(flat(trainer.model), flat(ref))
    assert trainer.autosam.last_outputs.logits.shape == (32, 2)  # compute_loss's (loss, outputs), the update pass's
    if strategy == "async_sam":  # lookahead through the Trainer's own batch fetching
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == STEPS


def test_the_trainer_schedule_and_logging_run(tmp_path):
    trainer = make_trainer("sam", str(tmp_path), STEPS)
    trainer.train()
    assert trainer.autosam.param_groups[0]["lr"] == pytest.approx(0.0)  # the linear schedule reached its end
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [2, 4, 6, 8, 10]
    trainer.autosam.close()


@pytest.mark.parametrize("k", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_checkpoint_save_and_resume_is_exact(tmp_path, k, deterministic):
    kw = {"gradient_accumulation_steps": k, "per_device_train_batch_size": 32 // k}
    whole = make_trainer("async_sam", str(tmp_path / "whole"), STEPS, **kw)
    whole.train()
    half = make_trainer("async_sam", str(tmp_path / "half"), STEPS, save_strategy="steps", save_steps=STEPS // 2, **kw)
    half.train()
    resumed = make_trainer("async_sam", str(tmp_path / "half"), STEPS, seed=3, **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "half" / f"checkpoint-{STEPS // 2}"))
    assert resumed.state.global_step == STEPS
    assert torch.equal(flat(resumed.model), flat(whole.model))
    for t in (whole, half, resumed):
        t.autosam.close()


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
def test_plan_auto_and_a_state_dict_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path / "cache"))
    trainer = make_trainer("auto", str(tmp_path), 3)
    trainer.create_optimizer()
    assert trainer.optimizer.state_dict()["hetsam"]["plan"] is None  # accelerate may ask before the first step
    trainer.train()
    assert trainer.autosam.plan is not None and trainer.state.global_step == 3
    assert trainer.autosam._controller.holder == "trainer.autosam"  # its log names what the user holds
    trainer.autosam.close()


@pytest.mark.slow  # four Trainer runs with their plain loops
@pytest.mark.parametrize("strategy, precision, k", [("sam", "bf16", 1), ("sam", "fp16", 2), ("async_sam", "32", 3),
                                                  ("rst", "bf16", 2)])
def test_precision_and_accumulation_flags_equal_autosams_own_bit_for_bit(strategy, precision, k, tmp_path, deterministic):
    """bf16=True/fp16=True are AutoSAM's amp= (the accelerator neither autocasts nor scales too);
    gradient_accumulation_steps=k is one step(concat, accumulate=k) per k micro-batches: same
    arithmetic as the plain loop, so the same bits. The schedule and global_step count optimizer steps."""
    steps, flags = 6, ({precision: True} if precision != "32" else {})
    trainer = make_trainer(strategy, str(tmp_path), steps, gradient_accumulation_steps=k,
                           per_device_train_batch_size=48 // k, **flags)
    record = Recording(trainer)
    trainer.train()
    opt = trainer.autosam
    stats = opt.stats()
    opt.close()
    assert trainer.accelerator.mixed_precision == "no" and trainer.accelerator.scaler is None
    assert (opt.scaler is not None) == (precision == "fp16")
    assert trainer.state.global_step == stats["steps"] == steps and len(record.batches) == k * steps
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0) and trainer.lr_scheduler.last_epoch == steps
    decay = set(trainer.get_decay_parameter_names(trainer.model))
    ref, ref_stats = plain_loop(strategy, record.batches, decay, amp=None if precision == "32" else precision, accumulate=k)
    assert torch.equal(flat(trainer.model), flat(ref))
    if strategy == "async_sam":  # lookahead by whole optimizer steps
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert all(0.3 < v < 1.5 for v in losses)  # the step's loss once per step, not k times or 1/k of it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 with a GradScaler on CUDA needs a GPU")
def test_fp16_on_cuda_is_autosams_own_scaler(tmp_path):
    trainer = make_trainer("sam", str(tmp_path), 4, fp16=True, use_cpu=False, gradient_accumulation_steps=2,
                           per_device_train_batch_size=16)
    trainer.train()
    opt = trainer.autosam
    assert next(trainer.model.parameters()).is_cuda and opt.scaler is not None and trainer.accelerator.scaler is None
    assert trainer.state.global_step == opt.stats()["steps"] == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    opt.close()


@pytest.mark.slow  # two epochs of the Trainer and the plain loop
def test_an_epoch_that_k_does_not_divide_ends_with_a_shorter_step(tmp_path, deterministic):
    """9 micro-batches an epoch with gradient_accumulation_steps=2: the Trainer steps on 2, 2, 2, 2, 1;
    so does AutoSAM, and two epochs are 10 optimizer steps of the schedule."""
    from hetsam.integrations.transformers import AutoSAMTrainer

    autosam = {"plan": "sam", "rho": 0.05, "seed": 0, "log": lambda line: None}
    args = training_args(str(tmp_path), -1, num_train_epochs=2, gradient_accumulation_steps=2, per_device_train_batch_size=16)
    trainer = AutoSAMTrainer(model=make_model(0), args=args, train_dataset=CountingTask(144), autosam=autosam)
    record = Recording(trainer)
    trainer.train()
    trainer.autosam.close()
    assert trainer.state.global_step == trainer.autosam.stats()["steps"] == 10 and len(record.batches) == 18
    ref, _ = plain_loop("sam", record.batches, set(trainer.get_decay_parameter_names(trainer.model)),
                        sizes=[2, 2, 2, 2, 1] * 2)
    assert torch.equal(flat(trainer.model), flat(ref))


def test_unsupported_settings_are_refused(tmp_path):
    from hetsam.integrations.transformers import AutoSAMTrainer

    with pytest.raises(HetsamInputError, match="disagree"):
        AutoSAMTrainer(model=make_model(), args=training_args(str(tmp_path), 2, bf16=True), train_dataset=CountingTask(64),
                       autosam={"amp": "fp16"})
    with pytest.raises(HetsamInputError, match="may not set"):
        AutoSAMTrainer(model=make_model(), args=training_args(str(tmp_path), 2), train_dataset=CountingTask(64),
                       autosam={"max_grad_norm": 1.0})


def test_example_runs_and_prints_one_json_line(capsys):
    assert main(["--strategy", "async_sam", "--max-steps", "4", "--precision", "bf16", "--accumulate", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["global_step"] == out["max_steps"] == 4 and out["independent_jobs"] == 0 and out["lookahead_jobs"] == 4


def test_the_framework_overhead_benchmark_runs_reduced(capsys):
    import bench_integrations

    assert bench_integrations.main(["--model", "mlp", "--steps", "7", "--rounds", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["framework"] for r in rows] == ["plain", "lightning", "trainer"]
    assert all(r["sgd_ms"] > 0 and r["sam_ms"] > 0 for r in rows)


def test_the_trainers_warmup_and_length_reach_autosam(tmp_path):
    """MSAM under the Trainer's linear warm-up (lr 0 at step 0): no climb in steps 1 to 3 (warm-up
    steps 1, 2 by the count the Trainer passes, step 3 by the rising lr), a climb in steps 4 to 7."""
    trainer = make_trainer("msam", str(tmp_path), 8, warmup_steps=3)
    trainer.train()
    opt = trainer.autosam
    stats = opt.stats()
    opt.close()
    assert opt.warmup_steps == 3 and opt.total_steps == 8
    assert stats["msam"]["warmup_steps_skipped"] == 3 and stats["perturbed_steps"] == 4


@pytest.mark.parametrize("length", ["max_steps", "epochs"])
def test_late_phase_learns_the_run_length_on_the_trainers_own_call_path(tmp_path, length):
    """transformers 5.x builds the schedule through create_scheduler (it never calls
    create_optimizer_and_scheduler): late-phase SAM learns T there, from max_steps or from the
    epochs times the dataloader's length, and takes SAM steps from floor(start T) on."""
    from hetsam.integrations.transformers import AutoSAMTrainer

    autosam = {"plan": "late_phase", "rho": 0.05, "executor": "inline", "log": lambda line: None}
    if length == "max_steps":
        args, data, expected = training_args(str(tmp_path), 6), CountingTask(), 6
    else:  # 128 samples in batches of 32, twice
        args, data, expected = training_args(str(tmp_path), -1, num_train_epochs=2), CountingTask(128), 8
    trainer = AutoSAMTrainer(model=make_model(0), args=args, train_dataset=data, autosam=autosam)
    assert trainer.autosam is None  # nothing set T beforehand
    trainer.train()
    opt = trainer.autosam
    stats = opt.stats()
    opt.close()
    first = math.floor(opt.plan.spec.option(opt.plan, "start") * expected)
    assert trainer.state.global_step == expected and opt.total_steps == expected
    assert stats["first_sam_step"] == first and stats["sam_steps"] == expected - first > 0
