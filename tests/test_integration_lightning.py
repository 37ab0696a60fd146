"""AutoSAM inside PyTorch Lightning against AutoSAM in a plain loop (the real package)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from lightning_train import (  # noqa: E402
    DigitsModule,
    digits,
    loss_fn,
    main,
    make_net,
    make_plan,
    pl,
    quiet_trainer,
)
from torch.utils.data import DataLoader  # noqa: E402

from hetsam import AutoSAM, HetsamInputError  # noqa: E402

STEPS = 12


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def plain_loop(strategy, steps, *, max_grad_norm=None, step_lr=None, amp=None, accumulate=1, net=None):
    """The same model, batches and optimizer, without Lightning; ``accumulate=k``: one step on k
    loader batches of 64/k, concatenated (no epoch ends within ``steps`` here)."""
    net = make_net(0) if net is None else net
    opt = AutoSAM(net, loss_fn, torch.optim.SGD, rho=0.05, plan=make_plan(strategy), executor="threads",
                  max_grad_norm=max_grad_norm, seed=0, amp=amp, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_lr, gamma=0.5) if step_lr else None
    loader = DataLoader(digits(), batch_size=64 // accumulate, shuffle=False)
    if accumulate > 1:
        micro = list(loader)[:steps * accumulate]
        loader = [tuple(torch.cat(parts) for parts in zip(*micro[i:i + accumulate])) for i in range(0, len(micro), accumulate)]
    with opt:
        done = 0
        while done < steps:
            for batch in opt.lookahead(loader):
                opt.step(batch, accumulate=accumulate)
                if sched is not None:
                    sched.step()
                done += 1
                if done == steps:
                    break
        return net, opt.stats(), [g["lr"] for g in opt.param_groups]


def fit(strategy, mode, steps=STEPS, **kw):
    module = DigitsModule(strategy, mode, **kw)
    trainer = quiet_trainer(max_steps=steps)
    trainer.fit(module)
    return module, trainer


@pytest.mark.parametrize("mode", ["manual", "automatic"])
@pytest.mark.parametrize("strategy", ["sam", "async_sam"])
def test_lightning_equals_the_plain_loop_bit_for_bit(strategy, mode, deterministic):
    module, trainer = fit(strategy, mode)
    ref, ref_stats, _ = plain_loop(strategy, STEPS)
    stats = module.autosam.stats()
    module.autosam.close()
    assert trainer.global_step == STEPS and stats["steps"] == STEPS
    assert torch.equal(flat(module.net), flat(ref))
    if strategy == "async_sam":  # lookahead, through Lightning's own fetching and device moves
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == ref_stats["lookahead_jobs"] == STEPS


@pytest.mark.slow  # five Lightning fits with their plain loops
@pytest.mark.parametrize("strategy, mode, precision, k", [
    ("sam", "automatic", "bf16-mixed", 1), ("async_sam", "automatic", "32-true", 2), ("sam", "automatic", "16-mixed", 2),
    ("rst", "automatic", "bf16-mixed", 3), ("async_sam", "manual", "bf16-mixed", 1)])
def test_precision_and_accumulation_flags_equal_autosams_own_bit_for_bit(strategy, mode, precision, k, deterministic):
    """precision="bf16-mixed" is AutoSAM's amp="bf16" with no second autocast (on CPU Lightning
    runs "16-mixed" as "bf16-mixed"); accumulate_grad_batches=k is one step(concat, accumulate=k) per
    k micro-batches. Same arithmetic as the plain loop: the same bits. Step-interval schedulers and
    global_step count optimizer steps, and gradient_clip_val clips the update gradient."""
    module = DigitsModule(strategy, mode, batch_size=64 // k, step_lr=4)
    with pytest.warns(UserWarning, match="fp16 is not supported on CPU") if precision == "16-mixed" else nullcontext():
        trainer = quiet_trainer(max_steps=STEPS, precision=precision, accumulate_grad_batches=k,
                                **({"gradient_clip_val": 0.5} if mode == "automatic" else {}))
    trainer.fit(module)
    stats = module.autosam.stats()
    module.autosam.close()
    ref, ref_stats, lrs = plain_loop(strategy, STEPS, amp=None if precision == "32-true" else "bf16", accumulate=k,
                                     step_lr=4, max_grad_norm=0.5 if mode == "automatic" else None)
    assert trainer.global_step == stats["steps"] == STEPS and len(module.losses) == k * STEPS
    assert str(trainer.precision) == ("32-true" if precision == "32-true" else "bf16-mixed")
    assert [g["lr"] for g in module.autosam.param_groups] == lrs
    assert torch.equal(flat(module.net), flat(ref))
    if strategy == "async_sam":  # lookahead by whole optimizer steps, through Lightning's fetching
        assert stats["independent_jobs"] == 0 and stats["lookahead_jobs"] == STEPS


def bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


class Fp16Module(DigitsModule):
    """AutoSAM's own float16 AMP and GradScaler on CPU (Lightning's "16-mixed" runs bf16 there)."""

    def configure_optimizers(self):
        opt = AutoSAM(self.net, loss_fn, torch.optim.SGD, rho=0.05, plan="sam", executor="threads", seed=0, amp="fp16",
                      max_grad_norm=self.max_grad_norm, log=lambda line: None, lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_float16_with_a_scaler_unscales_before_lightnings_clipping(deterministic):
    """The GradScaler's gradient is unscaled before on_before_optimizer_step and gradient_clip_val,
    so Lightning's clipping equals AutoSAM's max_grad_norm in the plain loop, bit for bit."""
    module = Fp16Module("sam", "automatic", batch_size=32)
    trainer = quiet_trainer(max_steps=STEPS, accumulate_grad_batches=2, gradient_clip_val=0.5)
    trainer.fit(module)
    module.autosam.close()
    ref, _, lrs = plain_loop("sam", STEPS, amp="fp16", accumulate=2, step_lr=4, max_grad_norm=0.5)
    assert module.autosam.scaler is not None and [g["lr"] for g in module.autosam.param_groups] == lrs
    assert torch.equal(flat(module.net), flat(ref))


def test_collected_steps_leave_batchnorm_statistics_to_autosams_update_pass(deterministic):
    """accumulate_grad_batches=2: Lightning's training_step forwards (for the logged loss) put the
    running statistics back, so they are those of the plain loop, where only the update pass moves them."""
    module = DigitsModule("sam", "automatic", batch_size=32)
    module.net = bn_net()
    trainer = quiet_trainer(max_steps=4, accumulate_grad_batches=2)
    trainer.fit(module)
    module.autosam.close()
    ref, _, _ = plain_loop("sam", 4, accumulate=2, net=bn_net())
    bn, ref_bn = module.net[1], ref[1]
    assert int(bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 4 * 2  # one pass per micro-batch of a step
    assert torch.equal(bn.running_mean, ref_bn.running_mean) and torch.equal(bn.running_var, ref_bn.running_var)
    assert torch.equal(flat(module.net), flat(ref))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast in Lightning needs CUDA (on CPU it runs bf16)")
def test_16_mixed_on_cuda_is_autosams_fp16_with_its_own_scaler():
    module = DigitsModule("sam", "automatic", batch_size=32)
    trainer = pl.Trainer(accelerator="cuda", devices=1, precision="16-mixed", accumulate_grad_batches=2, max_steps=4,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module)
    opt = module.autosam
    assert opt.scaler is not None and trainer.global_step == opt.stats()["steps"] == 4
    opt.close()


def test_autosams_messages_name_self_autosam():
    """A parameter unfrozen after AutoSAM was built: the warning names what the module holds."""
    module = DigitsModule("sam", "automatic")
    module.net[0].bias.requires_grad_(False)
    trainer = quiet_trainer(max_steps=1)

    def configure():
        opt = DigitsModule.configure_optimizers(module)
        module.net[0].bias.requires_grad_(True)  # unfrozen after AutoSAM took the trainable parameters
        return opt

    module.configure_optimizers = configure
    with pytest.warns(UserWarning, match=r"self\.autosam\.add_param_group"):
        trainer.fit(module)
    module.autosam.close()


class OutputsModule(DigitsModule):
    """training_step returns loss_fn's (loss, logits), or a dict with the loss."""

    def __init__(self, form, **kw):
        super().__init__("sam", "automatic", **kw)
        self.form, self.seen = form, []

    def training_step(self, batch, batch_idx):
        loss, logits = loss_fn(self.net, batch), self.net(batch[0])
        return (loss, logits) if self.form == "tuple" else {"loss": loss, "logits": logits}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen.append(sorted(outputs))


@pytest.mark.parametrize("form", ["tuple", "dict"])
@pytest.mark.parametrize("k", [1, 2])
def test_training_step_may_return_loss_and_outputs(form, k):
    """In both automatic paths (Lightning's closure as the descent, and collected steps)."""
    module = OutputsModule(form, batch_size=64 // k)
    trainer = quiet_trainer(max_steps=2, accumulate_grad_batches=k)
    trainer.fit(module)
    module.autosam.close()
    assert trainer.global_step == module.autosam.stats()["steps"] == 2
    assert module.seen == [sorted(["loss", "outputs" if form == "tuple" else "logits"])] * (2 * k)


def test_unsupported_precisions_are_refused():
    module = DigitsModule("sam", "automatic")
    with pytest.raises(HetsamInputError, match="bf16-true"):
        quiet_trainer(max_steps=2, precision="bf16-true").fit(module)
    module.autosam.close()
    clipped = Fp16Module("sam", "automatic", max_grad_norm=1.0)
    with pytest.raises(HetsamInputError, match="gradient_clip_val"):
        quiet_trainer(max_steps=2).fit(clipped)
    clipped.autosam.close()


def test_schedulers_and_clipping_from_lightning(deterministic):
    # manual: AutoSAM's max_grad_norm; a scheduler stepped by the module
    module, _ = fit("sam", "manual", max_grad_norm=0.05, step_lr=4)
    ref, _, lrs = plain_loop("sam", STEPS, max_grad_norm=0.05, step_lr=4)
    assert torch.equal(flat(module.net), flat(ref))
    assert [g["lr"] for g in module.autosam.param_groups] == lrs == [0.05 * 0.5 ** 3]
    module.autosam.close()
    # automatic: Lightning's gradient_clip_val clips the update gradient, Lightning steps the scheduler
    auto = DigitsModule("sam", "automatic", step_lr=4)
    trainer = quiet_trainer(max_steps=STEPS, gradient_clip_val=0.05)
    trainer.fit(auto)
    assert torch.equal(flat(auto.net), flat(ref))
    assert [g["lr"] for g in auto.autosam.param_groups] == lrs
    auto.autosam.close()


@pytest.mark.parametrize("mode, k, precision", [("manual", 1, "32-true"), ("automatic", 1, "32-true"),
                                               pytest.param("automatic", 2, "bf16-mixed", marks=pytest.mark.slow)])
def test_checkpoints_save_and_resume_through_lightning_exactly(tmp_path, mode, k, precision, deterministic):
    """A checkpoint in the middle of an epoch: the resumed run equals the uninterrupted one (the
    lookahead loader is resumable, counting loader batches when a step takes k of them; AutoSAM's
    state holds its pending ascent gradient, and its AMP is set before the checkpoint loads)."""
    kw = {"accumulate_grad_batches": k, "precision": precision}
    whole = DigitsModule("async_sam", mode, batch_size=64 // k)
    quiet_trainer(max_steps=2 * STEPS, **kw).fit(whole)
    first = DigitsModule("async_sam", mode, batch_size=64 // k)
    trainer = quiet_trainer(max_steps=STEPS, **kw)
    trainer.fit(first)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = DigitsModule("async_sam", mode, seed=5, batch_size=64 // k)  # other initial values: all from the checkpoint
    trainer = quiet_trainer(max_steps=2 * STEPS, **kw)
    trainer.fit(resumed, ckpt_path=tmp_path / "half.ckpt")
    assert trainer.global_step == 2 * STEPS and resumed.autosam.stats()["steps"] == 2 * STEPS
    assert torch.equal(flat(resumed.net), flat(whole.net))
    for m in (whole, first, resumed):
        m.autosam.close()


def test_sampa_is_refused_in_automatic_optimization_but_runs_manually():
    refused = DigitsModule("sampa", "automatic")
    with pytest.raises(HetsamInputError, match="sampa"):
        quiet_trainer(max_steps=2).fit(refused)
    refused.autosam.close()  # the refusal leaves the user's optimizer theirs to close
    module, trainer = fit("sampa", "manual", steps=3)
    assert trainer.global_step == 3
    module.autosam.close()


def test_example_runs_and_prints_one_json_line(capsys):
    assert main(["--strategy", "async_sam", "--max-steps", "6", "--mode", "automatic", "--precision", "bf16-mixed",
                 "--accumulate", "2"]) == 0
    import json

    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["global_step"] == out["max_steps"] == 6 and out["independent_jobs"] == 0 and out["lookahead_jobs"] == 6


class WarmupModule(DigitsModule):
    """MSAM with a linear warm-up scheduler that Lightning steps (Lightning has no warm-up setting)."""

    def configure_optimizers(self):
        opt = AutoSAM(self.net, loss_fn, torch.optim.SGD, plan="msam", executor="inline", log=lambda line: None,
                      lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=4)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_msam_in_lightning_skips_the_warmup_by_its_lr_rule():
    module = WarmupModule("msam", "automatic")
    trainer = quiet_trainer(max_steps=10)
    trainer.fit(module)
    stats = module.autosam.stats()
    module.autosam.close()
    assert trainer.global_step == 10 and stats["warmup_steps"] is None
    assert stats["msam"]["warmup_steps_skipped"] == 4 and stats["perturbed_steps"] == 10 - 1 - 4
