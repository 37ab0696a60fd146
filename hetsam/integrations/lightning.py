"""AutoSAM in PyTorch Lightning (README, "Lightning").

Subclass :class:`AutoSAMModule` instead of ``LightningModule`` and return an ``AutoSAM`` (with any
scheduler) from ``configure_optimizers``. Both of Lightning's optimization modes work:

- **manual** (``self.automatic_optimization = False``): ``training_step`` calls
  ``self.optimizers().step(batch=batch)``. Lightning's ``LightningOptimizer`` counts the step
  (``global_step``, ``max_steps``) and passes AutoSAM a closure that runs
  ``on_before_optimizer_step``; AutoSAM calls it right before the base update, with the update
  gradient in ``p.grad``. Lightning refuses ``gradient_clip_val`` in manual optimization: use
  AutoSAM's ``max_grad_norm``.
- **automatic** (the default): ``training_step`` returns the loss as usual. The module keeps the
  step's batch (``on_train_batch_start``) and its ``optimizer_step`` hands AutoSAM both: AutoSAM
  computes the ascent from the batch, moves the parameters to θ + e, and runs Lightning's closure
  (``training_step``, ``backward``, ``on_before_optimizer_step``, ``gradient_clip_val``) as the
  descent pass there (``descent_closure=True``), then restores θ and updates. Strategies whose
  update gradient is taken elsewhere than on the step's batch (SAMPa) are refused there.

Lookahead: return ``self.lookahead(loader)`` from ``train_dataloader`` (or pass it to
``trainer.fit``); the k-th batch it yields is the k-th step's, however Lightning moves it.
Checkpoints go through Lightning (AutoSAM's ``state_dict`` holds its pending state). ``self.autosam``
is the AutoSAM itself (``self.optimizers()`` is Lightning's wrapper of it).

Warm-up: Lightning has no warm-up setting of its own (it lives in the scheduler the module
returns), so MSAM relies on its learning-rate rule there: no climb in a step whose lr is higher than
the step before's. Pass ``warmup_steps=`` to AutoSAM to add a fixed count.

Many processes: ``Trainer(strategy="ddp", devices=N)`` (one process per device; on CPU with
gloo) in automatic optimization. ``configure_optimizers`` builds AutoSAM on the bare module
while Lightning wraps it in its own DDP; AutoSAM takes its rank context from Lightning's
process group at construction (``hetsam.execution.distributed.expect_wrapper``: this module is
marked as one Lightning wraps). Lightning's closure runs through Lightning's DDP wrapper, so the
descent gradient is all-reduced as in the raw DDP loop; AutoSAM's ascent passes run on the bare
module, per rank, never all-reduced (``hetsam.execution.distributed``). Refused in one line:
manual optimization (AutoSAM's own descent pass would bypass Lightning's DDP wrapper), SAMPa (its
update gradient is not the closure's), and other multi-process strategies (FSDP, DeepSpeed).
``strategy="ddp_spawn"`` works too; AutoSAM then lives in the spawned processes (read its
``stats()`` in a hook such as ``on_train_end``). Lightning puts a ``DistributedSampler`` into a ``DataLoader`` it is given, but cannot
see through ``self.lookahead(loader)``: shard that loader yourself (``DistributedSampler(dataset,
num_replicas=self.trainer.world_size, rank=self.trainer.global_rank)``). A checkpoint holds
every rank's AutoSAM state (:meth:`AutoSAMModule.on_save_checkpoint`); each rank resumes its own.

Lightning's mixed precision is refused (use AutoSAM's ``amp=``); ``accumulate_grad_batches > 1``
is refused in automatic optimization.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch.distributed as dist

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the older package name
    try:
        import pytorch_lightning as pl
    except ImportError as exc:
        raise ImportError("hetsam.integrations.lightning needs PyTorch Lightning: pip install 'hetsam[integrations]'") \
            from exc

from hetsam.autosam import AutoSAM
from hetsam.errors import HetsamInputError
from hetsam.execution.distributed import expect_wrapper

__all__ = ["AutoSAMModule"]


class AutoSAMModule(pl.LightningModule):
    """A ``LightningModule`` whose optimizer is an :class:`~hetsam.AutoSAM` (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        expect_wrapper(self)  # under strategy="ddp", AutoSAM built on it takes Lightning's process group

    def __setstate__(self, state: dict) -> None:  # ddp_spawn: the processes get the module pickled
        super().__setstate__(state)
        expect_wrapper(self)

    @property
    def autosam(self) -> AutoSAM:
        """The AutoSAM that ``configure_optimizers`` returned."""
        found = [o for o in self.trainer.optimizers if isinstance(o, AutoSAM)]
        if len(found) != 1:
            raise HetsamInputError("configure_optimizers must return exactly one hetsam.AutoSAM "
                                   f"(got {[type(o).__name__ for o in self.trainer.optimizers]})")
        return found[0]

    def lookahead(self, loader: Iterable[Any]) -> _Lookahead:
        """``loader`` read ahead for AsyncSAM's ``lookahead`` policy (``AutoSAM.lookahead``), bound
        to this module's AutoSAM when Lightning iterates it."""
        return _Lookahead(self, loader)

    def on_train_start(self) -> None:
        trainer = self.trainer
        if trainer.world_size > 1:
            _check_processes(self, trainer)
        precision = str(getattr(trainer, "precision", "32"))
        if "mixed" in precision or precision in ("16", "bf16"):
            raise HetsamInputError(f"Trainer(precision={precision!r}) scales the loss outside AutoSAM; use precision=32 and "
                                   "AutoSAM(amp=...) instead")
        if self.automatic_optimization and trainer.accumulate_grad_batches != 1:
            raise HetsamInputError("accumulate_grad_batches > 1 is not supported with AutoSAM in automatic optimization; "
                                   "use AutoSAM's accumulate= in manual optimization, or a larger batch")
        opt = self.autosam  # one AutoSAM, checked before the first step
        steps = trainer.estimated_stepping_batches  # the run's planned steps (hetsam.strategies.run)
        if isinstance(steps, (int, float)) and math.isfinite(steps) and steps >= 1:
            opt.run.learn(total_steps=int(steps))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Under ``strategy="ddp"``: every rank's AutoSAM state into the one file rank 0 writes (the
        pending ascent gradients are per rank; Lightning keeps rank 0's optimizer state only). Lightning
        calls this on every rank (``trainer.save_checkpoint`` must run on all of them)."""
        opt = _autosam_or_none(self)
        if opt is not None and opt.distributed is not None:
            ctx = opt.distributed
            states: list = [None] * ctx.world
            dist.all_gather_object(states, opt.state_dict(), group=ctx.control_group)
            checkpoint["hetsam_rank_states"] = {"optimizer": self.trainer.optimizers.index(opt), "states": states}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Each rank resumes its own AutoSAM state (saved by :meth:`on_save_checkpoint`). Lightning
        calls this before it builds the optimizers and loads their states, so the rank's state
        replaces rank 0's in the checkpoint."""
        saved = checkpoint.get("hetsam_rank_states")
        if saved is None or not dist.is_available() or not dist.is_initialized():
            return
        states, world = saved["states"], dist.get_world_size()
        if len(states) != world:
            raise HetsamInputError(f"this checkpoint holds the AutoSAM state of {len(states)} ranks, but the run has "
                                   f"{world}; resume with as many processes as saved it")
        checkpoint["optimizer_states"][saved["optimizer"]] = states[dist.get_rank()]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._hetsam_batch = batch  # automatic optimization: the ascent needs the step's batch

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Automatic optimization: AutoSAM takes the ascent from the batch and runs Lightning's
        closure as the descent pass at the perturbed parameters."""
        if not self.automatic_optimization:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        optimizer.step(closure=optimizer_closure, batch=self._hetsam_batch, descent_closure=True)


def _autosam_or_none(module: AutoSAMModule) -> AutoSAM | None:
    found = [o for o in module.trainer.optimizers if isinstance(o, AutoSAM)]
    return found[0] if len(found) == 1 else None


def _check_processes(module: AutoSAMModule, trainer: Any) -> None:
    """Refuse, in one line, what AutoSAM cannot run across Lightning's processes (module docstring)."""
    n = trainer.world_size
    strategy = trainer.strategy
    if type(strategy).__name__ != "DDPStrategy" or getattr(strategy, "_start_method", "popen") not in ("popen", "spawn"):
        name = f"{type(strategy).__name__}" + (f"(start_method={strategy._start_method!r})" if hasattr(strategy, "_start_method") else "")
        raise HetsamInputError(f"AutoSAM runs across {n} Lightning processes only with strategy='ddp' (got {name}); "
                               "use strategy='ddp', or AutoSAM with DistributedDataParallel directly")
    if not module.automatic_optimization:
        raise HetsamInputError("manual optimization under strategy='ddp': AutoSAM's own descent pass would bypass Lightning's "
                               "DDP wrapper (no all-reduce); use automatic optimization (return the loss from training_step)")
    opt = module.autosam
    if opt.distributed is None:
        raise HetsamInputError("this AutoSAM has no rank context: build it in configure_optimizers on this AutoSAMModule "
                               "(or one of its submodules), not before the Trainer started its processes")
    if opt.plan is not None and not opt.plan.spec.closure_descent:
        raise HetsamInputError(f"strategy {opt.plan.strategy!r} takes its update gradient elsewhere than on the step's own "
                               "batch, so Lightning's closure cannot compute it under strategy='ddp'; use AutoSAM with "
                               "DistributedDataParallel directly (examples/ddp.py)")


class _Lookahead:
    """A loader for Lightning that reads ahead through the module's AutoSAM when iterated.

    It is resumable the way Lightning asks (``state_dict``/``load_state_dict``): it records how
    many of the current pass's batches were stepped on, and a resumed run skips them, so a run
    resumed from a mid-epoch checkpoint sees the batches the uninterrupted run saw (with a loader
    whose order is fixed or seeded).
    """

    def __init__(self, module: AutoSAMModule, loader: Iterable[Any]):
        self.module = module
        self.loader = loader
        self._skip = 0
        self._skipped = 0

    def __iter__(self):
        it = iter(self.loader)
        self._skipped, self._skip = self._skip, 0
        for _ in itertools.islice(it, self._skipped):
            pass
        return iter(self.module.autosam.lookahead(_Rest(it)))

    def state_dict(self) -> dict:
        return {"steps_in_pass": self._skipped + self.module.autosam._prefetcher.taken_this_pass}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("steps_in_pass", 0))

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name in ("module", "loader"):
            raise AttributeError(name)
        return getattr(self.loader, name)


class _Rest:
    """The rest of an iterator, as a one-pass iterable."""

    def __init__(self, it: Iterator[Any]):
        self._it = it

    def __iter__(self) -> Iterator[Any]:
        return self._it
