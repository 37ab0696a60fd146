"""AutoSAM inside PyTorch Lightning against AutoSAM in a plain loop (the real package)."""

from __future__ import annotations

import sys
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
    quiet_trainer,
)
from torch.utils.data import DataLoader  # noqa: E402

from hetsam import AutoSAM, HetsamInputError  # noqa: E402

STEPS = 12


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def plain_loop(strategy, steps, *, max_grad_norm=None, step_lr=None):
    """The same model, batches and optimizer, without Lightning."""
    net = make_net(0)
    opt = AutoSAM(net, loss_fn, torch.optim.SGD, rho=0.05, plan=make_plan(strategy), executor="threads",
                  max_grad_norm=max_grad_norm, seed=0, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_lr, gamma=0.5) if step_lr else None
    loader = DataLoader(digits(), batch_size=64, shuffle=False)
    with opt:
        done = 0
        while done < steps:
            for batch in opt.lookahead(loader):
                opt.step(batch)
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


@pytest.mark.parametrize("mode", ["manual", "automatic"])
def test_checkpoints_save_and_resume_through_lightning_exactly(tmp_path, mode, deterministic):
    """A checkpoint in the middle of an epoch: the resumed run equals the uninterrupted one (the
    lookahead loader is resumable, and AutoSAM's state holds its pending ascent gradient)."""
    whole, _ = fit("async_sam", mode, steps=2 * STEPS)
    first = DigitsModule("async_sam", mode)
    trainer = quiet_trainer(max_steps=STEPS)
    trainer.fit(first)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = DigitsModule("async_sam", mode, seed=5)  # other initial values: all must come from the checkpoint
    trainer = quiet_trainer(max_steps=2 * STEPS)
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
    assert main(["--strategy", "async_sam", "--max-steps", "6"]) == 0
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
