"""AutoSAM in the Hugging Face ``Trainer`` (README, "Hugging Face Trainer").

:class:`AutoSAMTrainer` is a ``transformers.Trainer`` that trains with :class:`~hetsam.AutoSAM`::

    trainer = AutoSAMTrainer(model=model, args=TrainingArguments(...), train_dataset=...,
                             autosam={"plan": "async_sam", "rho": 0.05})
    trainer.train()

- **The optimizer** is the Trainer's own choice (``optim``, ``learning_rate``, ``weight_decay``,
  ``adam_*``, and its decay/no-decay parameter groups): ``create_optimizer`` lets the Trainer
  build it, then hands its class, groups and options to AutoSAM as the base optimizer.
- **A step**: ``training_step`` runs ``AutoSAM.step`` on the batch (every pass and the update).
  The Trainer then calls ``optimizer.step()``; what it holds is a stand-in whose ``step`` does
  nothing (the update is done) and which shares AutoSAM's parameter groups, so the Trainer's
  learning-rate schedule drives AutoSAM and its checkpoints hold AutoSAM's ``state_dict``.
- ``max_grad_norm`` becomes AutoSAM's: it clips the update gradient before the update.
- **Outputs**: every pass calls ``compute_loss(..., return_outputs=True)``, so after a step
  ``trainer.autosam.last_outputs`` holds the model outputs of the update pass.
- **Lookahead**: ``get_batch_samples`` reads the Trainer's batches through ``AutoSAM.prefetch``,
  so AsyncSAM perturbs each step with a gradient taken on that step's own samples.
- ``plan="auto"`` profiles the model on the first batch, as in a plain loop.
- **The schedule's length and warm-up**: when the Trainer builds its schedule, AutoSAM learns the
  planned steps (``total_steps``, for late-phase SAM) and the warm-up steps
  (``args.get_warmup_steps(max_steps)``, for MSAM, which does not climb during the warm-up),
  unless ``autosam={...}`` set them.
- ``autosam`` holds AutoSAM's keyword arguments (``plan``, ``rho``, ``executor``, ``amp``, ...).
- **Precision**: ``bf16=True``/``fp16=True`` become AutoSAM's ``amp="bf16"``/``"fp16"`` (autocast in
  every pass; for float16 one GradScaler across the step's passes, unscaled before the ascent norm).
  The Trainer's accelerator is built with ``mixed_precision="no"`` (``_build_accelerator_args``), so
  it neither wraps the model's forward in a second autocast nor holds a second GradScaler whose
  ``unscale_``/``step`` would act on AutoSAM's finished update; ``trainer.args`` keeps the flags.
  Evaluation then runs in float32.
- **Accumulation**: ``gradient_accumulation_steps=k`` is one AutoSAM step over the k micro-batches
  the Trainer fetches for one optimizer step (the last of an epoch may have fewer):
  ``step(concat(micro-batches), accumulate=k)``, one perturbation and one update, taken when the
  Trainer hands over the k-th micro-batch (the others return a zero loss, so the Trainer's sum of
  the micro-batch losses is the step's loss). Lookahead reads ahead by whole groups
  (:class:`hetsam.integrations._accumulate.Groups`). The micro-batches are weighted by their sample
  count (n_i/n), as ``step(..., accumulate=k)`` does; the Trainer's ``num_items_in_batch`` (token
  counts) is not used, so a token-level loss over unevenly padded micro-batches weighs them by
  samples. Micro-batches must concatenate: pad every batch to one length.

- **Many processes** (``torchrun --nproc-per-node N``; on CPU ``use_cpu=True,
  ddp_backend="gloo"``): AutoSAM is built on ``self.model`` in ``create_optimizer``, before the
  Trainer wraps it in DDP, and takes its rank context from the Trainer's process group
  (``hetsam.execution.distributed.expect_wrapper``). ``training_step`` receives the DDP wrapper and
  hands it to AutoSAM (:func:`hetsam.autosam.assemble.use_wrapper`) before the first step: the
  descent goes through it (all-reduced, as in the raw DDP loop), the ascent through the bare
  module (per rank). The Trainer shards the batches by process, so SAMPa needs
  ``autosam={"sampa_pairs": False}`` (a pair of ranks would need the same batches); other
  ``TrainingArguments`` that change the arithmetic across processes (``average_tokens_across_devices``)
  do not apply, since AutoSAM computes the loss without ``num_items_in_batch``. A checkpoint
  holds each rank's AutoSAM state beside the Trainer's files (``autosam_rank{r}-of-{W}.pt``), and
  resuming loads each rank's own.

Refused with a clear error: across processes, a wrapper other than DDP (FSDP, DeepSpeed:
AutoSAM's descent would not be all-reduced).
"""

from __future__ import annotations

import os

import torch

try:
    import transformers
except ImportError as exc:  # pragma: no cover
    raise ImportError("hetsam.integrations.transformers needs transformers: pip install 'hetsam[integrations]'") from exc

from hetsam.autosam import AutoSAM
from hetsam.autosam.assemble import use_wrapper
from hetsam.autosam.framework import name_holder
from hetsam.errors import HetsamInputError
from hetsam.execution.distributed import expect_wrapper
from hetsam.integrations._accumulate import Groups
from hetsam.optim.sam import share_groups

__all__ = ["AutoSAMTrainer"]


class _Stepped(torch.optim.Optimizer):
    """What the Trainer steps: AutoSAM has updated in ``training_step`` already. It shares
    AutoSAM's groups (schedulers act on them) and its ``state_dict`` (checkpoints)."""

    def __init__(self, autosam: AutoSAM):
        super().__init__([dict(g) for g in autosam.param_groups], dict(autosam.defaults))
        self.autosam = autosam
        share_groups(self, autosam)

    def step(self, closure=None):  # noqa: D102 - the update happened in training_step
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.autosam.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.autosam.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.autosam.load_state_dict(state_dict)
        share_groups(self, self.autosam)


class AutoSAMTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` whose optimizer is an AutoSAM (module docstring).

    Args:
        autosam: keyword arguments of :class:`~hetsam.AutoSAM` (``plan``, ``rho``, ``executor``,
            ``amp``, ``planner_options``, ...); the base optimizer, its groups and options, and
            ``max_grad_norm`` come from the Trainer.
        *args, **kwargs: those of ``transformers.Trainer``.
    """

    def __init__(self, *args, autosam: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.autosam_kwargs = dict(autosam or {})
        bad = sorted({"model", "loss_fn", "base_optimizer", "params", "max_grad_norm"} & set(self.autosam_kwargs))
        if bad:
            raise HetsamInputError(f"autosam={{...}} may not set {', '.join(bad)}: the Trainer gives them")
        args_ = self.args
        amp = "bf16" if args_.bf16 else "fp16" if args_.fp16 else None  # the Trainer's flag as AutoSAM's AMP
        given = self.autosam_kwargs.get("amp")
        if amp is not None and given not in (None, amp):
            raise HetsamInputError(f"TrainingArguments({amp}=True) and autosam={{'amp': {given!r}}} disagree; set one")
        if amp is not None:
            self.autosam_kwargs["amp"] = amp
        self.autosam: AutoSAM | None = None
        self._hetsam_source = self._hetsam_iter = self._hetsam_groups = None
        self._hetsam_step: tuple | None = None  # (the group's batch, its micro-batch count, micro-batches seen)

    def _build_accelerator_args(self, **kwargs):
        """The Trainer's accelerator without mixed precision: AutoSAM autocasts and scales its own
        passes (module docstring)."""
        args = super()._build_accelerator_args(**kwargs)
        args["mixed_precision"] = "no"
        return args

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer choice, as AutoSAM's base optimizer."""
        if self.autosam is None:
            chosen = super().create_optimizer(model)  # class, decay/no-decay groups and options
            model = self.model if model is None else model
            expect_wrapper(model)  # several processes: AutoSAM takes the Trainer's process group
            max_norm = self.args.max_grad_norm if self.args.max_grad_norm and self.args.max_grad_norm > 0 else None
            self.autosam = AutoSAM(model, self._loss, type(chosen), params=[dict(g) for g in chosen.param_groups],
                                   max_grad_norm=max_norm, **self.autosam_kwargs)  # the groups carry every option
            name_holder(self.autosam, "trainer.autosam")  # what AutoSAM's messages call it
            self.optimizer = _Stepped(self.autosam)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The Trainer's schedule; AutoSAM's run learns its planned steps and its warm-up steps
        (``hetsam.strategies.run``). The Trainer calls this, directly or through
        ``create_optimizer_and_scheduler``."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        opt = self.autosam
        if opt is not None and num_training_steps and num_training_steps > 0:
            opt.run.learn(total_steps=int(num_training_steps),
                          warmup_steps=int(self.args.get_warmup_steps(num_training_steps)))
        return scheduler

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The Trainer's files, and under several processes each rank's own AutoSAM state (its
        pending ascent gradient is its own; the Trainer saves rank 0's optimizer only)."""
        super()._save_optimizer_and_scheduler(output_dir)
        path = self._rank_state(output_dir)
        if path is not None:
            os.makedirs(output_dir, exist_ok=True)
            torch.save(self.autosam.state_dict(), path)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = self._rank_state(checkpoint) if checkpoint else None
        if path is not None and os.path.isfile(path):  # this rank's state replaces rank 0's
            self.autosam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def _rank_state(self, folder: str) -> str | None:
        ctx = self.autosam.distributed if self.autosam is not None else None
        return None if ctx is None else os.path.join(folder, f"autosam_rank{ctx.rank}-of-{ctx.world}.pt")

    def _loss(self, model, inputs):
        # a shallow copy: compute_loss may pop the labels (label smoothing) and every pass needs them;
        # (loss, outputs): trainer.autosam.last_outputs holds the update pass's model outputs
        return self.compute_loss(model, dict(inputs), return_outputs=True)

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """One whole AutoSAM step (every pass and the update) at the last micro-batch of an
        optimizer step, on all of them; a zero loss at the others (module docstring)."""
        model.train()
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            use_wrapper(self.autosam, model)  # the descent through the Trainer's DDP wrapper (a no-op once done)
        elif self.autosam.distributed is not None:  # FSDP, DeepSpeed, ...: AutoSAM's descent would not be reduced
            raise HetsamInputError(f"AutoSAMTrainer across {self.args.world_size} processes needs the Trainer's "
                                   f"DistributedDataParallel, but it wrapped the model in {type(model).__name__}; "
                                   "drop FSDP/DeepSpeed, or train in one process")
        batch, count, seen = self._hetsam_step or (None, 1, 0)
        seen += 1
        if seen < count:
            self._hetsam_step = (batch, count, seen)
            return torch.zeros((), device=self.args.device)
        self._hetsam_step = None
        loss = self.autosam.step(self._prepare_inputs(inputs if count == 1 else batch), accumulate=count)
        return torch.as_tensor(loss).detach().float().to(self.args.device)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The Trainer's micro-batches of one optimizer step, read through ``AutoSAM.prefetch`` by
        whole groups of ``gradient_accumulation_steps`` for lookahead."""
        if self._hetsam_source is not epoch_iterator:
            self._hetsam_groups = Groups(epoch_iterator, self.args.gradient_accumulation_steps)
            self._hetsam_source, self._hetsam_iter = epoch_iterator, self.autosam.prefetch(self._hetsam_groups)
        batch = next(self._hetsam_iter, None)
        micro = self._hetsam_groups.pending.popleft() if batch is not None else []
        if micro and len(micro) != num_batches:
            raise RuntimeError(f"AutoSAMTrainer grouped {len(micro)} micro-batches where the Trainer steps on {num_batches}")
        self._hetsam_step = (batch, len(micro), 0) if micro else None
        return super().get_batch_samples(iter(micro), num_batches, device)
