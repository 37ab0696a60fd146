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
- **automatic with accumulation or mixed precision** (``accumulate_grad_batches=k > 1``, or AMP):
  Lightning runs ``training_step`` and ``backward`` once per micro-batch as it arrives, before the
  micro-batches of the step are all known, so its closure cannot be the descent over all of them.
  The module collects the k micro-batches (``on_train_batch_start``) and at the k-th takes one
  AutoSAM step on them, ``step(concat, accumulate=k)``: one perturbation, every pass AutoSAM's own
  with ``loss_fn`` (autocast and GradScaler included), one update. Lightning's closures still run
  (``training_step`` gives the logged loss), but the module's ``backward`` and
  ``optimizer_zero_grad`` do nothing then and the normalization layers' running statistics are put
  back after each ``training_step``, so only AutoSAM's update pass changes them; the k-th closure
  runs as AutoSAM's pre-update hook, so ``on_before_optimizer_step`` and ``gradient_clip_val`` see
  the update gradient (unscaled first under float16, as Lightning's own plugin does). The cost:
  one extra forward pass per micro-batch (the logged loss). ``global_step`` and step-interval
  schedulers count optimizer steps, as Lightning does.
- **Precision**: ``precision="bf16-mixed"``/``"16-mixed"`` become AutoSAM's ``amp="bf16"``/
  ``"fp16"`` as ``configure_optimizers`` returns it (before a checkpoint loads into it), and at
  ``on_train_start`` the trainer's precision plugin is replaced by one (:class:`_OwnPasses`) whose
  training step has no autocast and no GradScaler (AutoSAM autocasts every pass and keeps one
  GradScaler across a step's passes), while validation, test and predict keep Lightning's
  autocast. On CPU Lightning itself turns ``"16-mixed"`` into ``"bf16-mixed"`` (it has no float16
  autocast there); ``"…-true"`` precisions (weights cast) are refused.
- ``training_step`` may return ``(loss, outputs)``, as ``loss_fn`` may: Lightning gets
  ``{"loss": loss, "outputs": outputs}``, and when Lightning's closure is the descent pass,
  ``self.autosam.last_outputs`` holds its ``outputs``.

Lookahead: return ``self.lookahead(loader)`` from ``train_dataloader`` (or pass it to
``trainer.fit``); the k-th batch it yields is the k-th step's, however Lightning moves it.
Checkpoints go through Lightning (AutoSAM's ``state_dict`` holds its pending state). ``self.autosam``
is the AutoSAM itself (``self.optimizers()`` is Lightning's wrapper of it).

Warm-up: Lightning has no warm-up setting of its own (it lives in the scheduler the module
returns), so MSAM relies on its learning-rate rule there: no climb in a step whose lr is higher than
the step before's. Pass ``warmup_steps=`` to AutoSAM to add a fixed count.

Many processes: ``Trainer(strategy="ddp", devices=N)`` (one process per device; on CPU with gloo) in
automatic optimization. ``configure_optimizers`` builds AutoSAM on the bare module while Lightning
wraps it in its own DDP; AutoSAM takes its rank context from Lightning's process group at
construction (``hetsam.execution.distributed.expect_wrapper``: this module is marked as one
Lightning wraps). Lightning's closure runs through Lightning's DDP wrapper, so the descent gradient
is all-reduced as in the raw DDP loop; AutoSAM's ascent passes run on the bare module, per rank,
never all-reduced (``hetsam.execution.distributed``). Refused in one line: manual optimization
(AutoSAM's own descent pass would bypass Lightning's DDP wrapper), SAMPa (its update gradient is not
the closure's), and other multi-process strategies (FSDP, DeepSpeed). ``strategy="ddp_spawn"`` works
too; AutoSAM then lives in the spawned processes (read its ``stats()`` in a hook such as
``on_train_end``). Lightning puts a ``DistributedSampler`` into a ``DataLoader`` it is given, but
cannot see through ``self.lookahead(loader)``: shard that loader yourself
(``DistributedSampler(dataset, num_replicas=self.trainer.world_size,
rank=self.trainer.global_rank)``). A checkpoint holds every rank's AutoSAM state
(:meth:`AutoSAMModule.on_save_checkpoint`); each rank resumes its own. Under ``strategy="ddp"`` the
collected steps (accumulation, mixed precision) are refused in one line: AutoSAM's own descent pass
there would bypass Lightning's DDP wrapper; use them in one process, or AutoSAM's
``amp=``/``accumulate=`` with DistributedDataParallel directly.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
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
from hetsam.autosam.framework import adopt_amp, name_holder
from hetsam.errors import HetsamInputError
from hetsam.execution.distributed import expect_wrapper
from hetsam.integrations._accumulate import Groups, concat

_AMP = {"bf16-mixed": "bf16", "16-mixed": "fp16"}  # Lightning's mixed precisions as AutoSAM's amp=

__all__ = ["AutoSAMModule"]


class AutoSAMModule(pl.LightningModule):
    """A ``LightningModule`` whose optimizer is an :class:`~hetsam.AutoSAM` (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        expect_wrapper(self)  # under strategy="ddp", AutoSAM built on it takes Lightning's process group

    def __setstate__(self, state: dict) -> None:  # ddp_spawn: the processes get the module pickled
        super().__setstate__(state)
        expect_wrapper(self)

    _hetsam_collect = False  # automatic optimization through AutoSAM's own passes (module docstring)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("training_step")
        if step is not None and not getattr(step, "_hetsam", False):  # (loss, outputs) as Lightning takes it
            @functools.wraps(step)
            def training_step(self, *args, **kw):
                out = step(self, *args, **kw)
                if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor):
                    self._hetsam_outputs = out[1]  # the descent closure's: AutoSAM's last_outputs
                    return {"loss": out[0], "outputs": out[1]}
                return out

            training_step._hetsam = True
            cls.training_step = training_step
        configure = cls.__dict__.get("configure_optimizers")
        if configure is not None and not getattr(configure, "_hetsam", False):  # precision before a checkpoint loads
            @functools.wraps(configure)
            def configure_optimizers(self, *args, **kw):
                out = configure(self, *args, **kw)
                trainer = self._trainer
                precision = str(getattr(trainer, "precision", "32-true")) if trainer is not None else "32-true"
                if precision in _AMP:
                    for opt in _autosams(out):
                        adopt_amp(opt, _AMP[precision], f"Trainer(precision={precision!r})")
                return out

            configure_optimizers._hetsam = True
            cls.configure_optimizers = configure_optimizers

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
        opt = self.autosam  # one AutoSAM, checked before the first step
        name_holder(opt, "self.autosam")  # what AutoSAM's messages call it
        precision = str(getattr(trainer, "precision", "32-true"))
        if precision in _AMP:  # AutoSAM's own AMP; the plugin keeps autocast out of the training step
            adopt_amp(opt, _AMP[precision], f"Trainer(precision={precision!r})")
            if not isinstance(trainer.strategy.precision_plugin, _OwnPasses):
                trainer.strategy.precision_plugin = _OwnPasses(trainer.strategy.precision_plugin)
        elif precision not in ("32-true", "32"):
            raise HetsamInputError(f"Trainer(precision={precision!r}) is not supported with AutoSAM; use precision="
                                   "'bf16-mixed' or '16-mixed' (AutoSAM's own AMP) or '32-true'")
        if trainer.accumulate_grad_batches != 1 and not self.automatic_optimization:
            raise HetsamInputError("accumulate_grad_batches > 1 does nothing in manual optimization; pass "
                                   "self.optimizers().step(batch=batch, accumulate=k) instead")
        self._hetsam_collect = self.automatic_optimization and (
            trainer.accumulate_grad_batches > 1 or opt._settings.amp is not None)
        if self._hetsam_collect and trainer.world_size > 1:
            raise HetsamInputError(f"precision={precision!r} and accumulate_grad_batches={trainer.accumulate_grad_batches} under "
                                   "strategy='ddp': AutoSAM's own descent pass would bypass Lightning's DDP wrapper; use "
                                   "'32-true' and 1 there, or AutoSAM(amp=...)/step(accumulate=k) with DistributedDataParallel")
        if self._hetsam_collect and opt.scaler is not None and opt._settings.max_grad_norm is not None:
            raise HetsamInputError("with float16 in automatic optimization clip with Trainer(gradient_clip_val=...), "
                                   "not AutoSAM's max_grad_norm (the gradient is unscaled once, before Lightning's hooks)")
        self._hetsam_micro: list = []
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
        if self._hetsam_collect:
            self._hetsam_micro.append(batch)
            self._hetsam_stats = _norm_stats(self)

    def backward(self, loss: Any, *args: Any, **kwargs: Any) -> None:
        """Collecting (module docstring): AutoSAM computes every gradient itself, and the
        ``training_step`` forward that gave ``loss`` leaves the running statistics as they were."""
        if not self._hetsam_collect:
            return super().backward(loss, *args, **kwargs)
        _put_back(self._hetsam_stats)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if not self._hetsam_collect:  # collecting: AutoSAM releases the gradients at each step itself
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Automatic optimization: AutoSAM takes the ascent from the batch and runs Lightning's
        closure as the descent pass at the perturbed parameters; collecting, one AutoSAM step on the
        micro-batches with Lightning's closure as its pre-update hook (module docstring)."""
        if not self.automatic_optimization:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self._hetsam_collect:
            self._hetsam_outputs = None
            optimizer.step(closure=optimizer_closure, batch=self._hetsam_batch, descent_closure=True)
            self.autosam.last_outputs = self._hetsam_outputs  # from the pass whose gradient was applied
            return None
        micro, self._hetsam_micro = self._hetsam_micro, []

        def before_update():  # training_step for the logged loss, then on_before_optimizer_step and clipping
            self._hetsam_stats = _norm_stats(self)
            try:
                return optimizer_closure()
            finally:
                _put_back(self._hetsam_stats)
                scaler = self.autosam.scaler  # float16: hooks and clipping see the unscaled gradient, as in Lightning
                if scaler is not None and scaler.is_enabled():
                    scaler.unscale_(self.autosam.base_optimizer)

        optimizer.step(closure=before_update, batch=concat(micro), accumulate=len(micro))


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
        self._k = 1  # loader batches per optimizer step in the current pass

    def __iter__(self):
        it = iter(self.loader)
        self._skipped, self._skip = self._skip, 0
        for _ in itertools.islice(it, self._skipped):
            pass
        k = self._k = self.module.trainer.accumulate_grad_batches if self.module.automatic_optimization else 1
        if k == 1:
            return iter(self.module.autosam.lookahead(_Rest(it)))
        groups = Groups(_Rest(it), k)  # read ahead by optimizer steps, hand Lightning the micro-batches
        return groups.micro_batches(self.module.autosam.lookahead(groups))

    def state_dict(self) -> dict:
        # loader batches: a step took k of them (mid-pass every group is whole)
        return {"steps_in_pass": self._skipped + self._k * self.module.autosam._prefetcher.taken_this_pass}

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


def _autosams(value: Any) -> list:
    """The AutoSAMs in what ``configure_optimizers`` returned (an optimizer, dicts, lists, tuples)."""
    if isinstance(value, AutoSAM):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [opt for v in value for opt in _autosams(v)]
    return []


class _OwnPasses(pl.plugins.precision.Precision):
    """Lightning's mixed-precision plugin while AutoSAM trains: no autocast and no GradScaler in the
    training step (AutoSAM's passes have their own); validation, test and predict keep ``mixed``'s."""

    def __init__(self, mixed: Any):
        super().__init__()
        self.mixed, self.precision = mixed, mixed.precision

    def forward_context(self):
        return self.mixed.forward_context()

    def train_step_context(self):
        return contextlib.nullcontext()


def _norm_stats(module: Any) -> list:
    """The normalization layers' running statistics (BatchNorm, InstanceNorm), copied."""
    norms = (m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase))
    return [(b, b.detach().clone()) for m in norms for b in m.buffers(recurse=False)]


def _put_back(saved: list) -> None:
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)
