"""AutoSAM in a Hugging Face Accelerate loop (README, "Accelerate").

A plain ``accelerator.prepare(model, AutoSAM(...), loader)`` already trains correctly in one
process without mixed precision or accumulation: accelerate's ``AcceleratedOptimizer.step(closure)``
hands its one positional argument on, so ``opt.step(batch)`` is ``AutoSAM.step(batch)``, once per
step (it returns None there: read the loss from the AutoSAM you built, e.g. ``last_outputs``). It
cannot carry accelerate's two other features (AutoSAM's first step refuses them there,
``hetsam.autosam.framework.check_wrappers``), so :func:`prepare` does, in place of
``accelerator.prepare``::

    model = accelerator.prepare(model)          # first: in N processes AutoSAM trains the DDP-wrapped model
    autosam = AutoSAM(model, loss_fn, torch.optim.SGD, plan="async_sam", lr=0.1)
    opt, loader, sched = hetsam.integrations.accelerate.prepare(accelerator, autosam, loader, sched)
    for batch in opt.prefetch(loader):          # reads ahead by optimizer steps (lookahead)
        with accelerator.accumulate(model):
            loss = opt.step(batch)              # None until the step's last micro-batch
        sched.step()

- ``Accelerator(mixed_precision="bf16"|"fp16")`` becomes AutoSAM's ``amp=`` (autocast in every
  pass; for float16 one GradScaler across the step's passes, unscaled before the ascent norm).
  accelerate's own autocast wrapper of ``model.forward`` is taken off again
  (``unwrap_model(keep_fp32_wrapper=False)``) and its GradScaler never sees the optimizer, so
  nothing autocasts or scales twice. Do not call ``accelerator.backward`` or
  ``accelerator.clip_grad_norm_`` (AutoSAM runs the passes; clip with ``max_grad_norm``).
- ``gradient_accumulation_steps=k``: :class:`AcceleratedAutoSAM` collects the micro-batches that
  ``step`` gets inside ``accelerator.accumulate`` and takes one ``step(concat, accumulate=k)`` at
  the last (``hetsam.integrations._accumulate``). Which micro-batch is the last comes from its own
  ``prefetch`` (groups of k, the last of a pass shorter), which also sets accelerate's
  ``sync_gradients`` so that prepared schedulers and ``zero_grad`` act once per step; without it,
  from accelerate's ``sync_gradients``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import torch

try:
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.scheduler import AcceleratedScheduler
except ImportError as exc:  # pragma: no cover
    raise ImportError("hetsam.integrations.accelerate needs accelerate: pip install 'hetsam[integrations]'") from exc

from hetsam.autosam import AutoSAM
from hetsam.autosam.framework import adopt_amp
from hetsam.errors import HetsamInputError
from hetsam.integrations._accumulate import Groups, concat

__all__ = ["prepare", "AcceleratedAutoSAM"]


def prepare(accelerator: Any, *objects: Any) -> Any:
    """``accelerator.prepare(*objects)`` with the one AutoSAM among them as an
    :class:`AcceleratedAutoSAM` (module docstring); returns what ``prepare`` returns."""
    found = [o for o in objects if isinstance(o, AutoSAM)]
    if len(found) != 1:
        raise HetsamInputError(f"prepare() needs exactly one hetsam.AutoSAM among its objects (got {len(found)})")
    autosam, precision = found[0], str(accelerator.mixed_precision)
    autosam.adapter = "accelerate"  # hetsam.autosam.framework.check_wrappers: mapped here
    if precision not in ("no", "bf16", "fp16"):
        raise HetsamInputError(f"Accelerator(mixed_precision={precision!r}) is not supported with AutoSAM; use 'bf16' "
                               "or 'fp16' (AutoSAM's own AMP) or 'no'")
    if accelerator.num_processes > 1 and not isinstance(autosam.model, torch.nn.parallel.DistributedDataParallel):
        raise HetsamInputError(f"in {accelerator.num_processes} processes AutoSAM must train the model accelerate wraps: "
                               "model = accelerator.prepare(model) first, then AutoSAM(model, ...)")
    if precision != "no":
        adopt_amp(autosam, precision, f"Accelerator(mixed_precision={precision!r})")
        accelerator.unwrap_model(autosam.model, keep_fp32_wrapper=False)  # prepared before: no second autocast
    out = accelerator.prepare(*objects)
    out = list(out) if len(objects) > 1 else [out]
    wrapper = AcceleratedAutoSAM(autosam, accelerator)
    accelerator._optimizers = [wrapper if getattr(o, "optimizer", None) is autosam else o for o in accelerator._optimizers]
    for i, (given, prepared) in enumerate(zip(objects, out)):
        if given is autosam:
            out[i] = wrapper
        elif isinstance(prepared, AcceleratedScheduler):
            prepared.optimizers = [wrapper if getattr(o, "optimizer", None) is autosam else o for o in prepared.optimizers]
        elif isinstance(prepared, torch.nn.Module) and precision != "no":
            accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)  # no second autocast around AutoSAM's
    return tuple(out) if len(out) > 1 else out[0]


class AcceleratedAutoSAM(AcceleratedOptimizer):
    """accelerate's optimizer wrapper for AutoSAM: one AutoSAM step per optimizer step, over the
    micro-batches of gradient accumulation (module docstring). Other attributes (``stats``,
    ``close``, ``last_outputs``, ...) are the AutoSAM's."""

    def __init__(self, autosam: AutoSAM, accelerator: Any):
        super().__init__(autosam, device_placement=False, scaler=None)
        self.autosam = autosam
        self._micro: list = []
        self._sizes: collections.deque = collections.deque()  # micro-batches per step, from prefetch

    def step(self, batch: Any = None, closure: Any = None, **kwargs: Any) -> Any:
        """Collect ``batch``; at the step's last micro-batch, one AutoSAM step on all of them."""
        if batch is None:
            raise HetsamInputError("AutoSAM runs every pass itself: call opt.step(batch), without accelerator.backward")
        self._micro.append(batch)
        if self._sizes:  # prefetch knows the groups: it decides, and tells accelerate
            due = len(self._micro) >= self._sizes[0]
            self.gradient_state._set_sync_gradients(due)
            if due:
                self._sizes.popleft()
        else:
            due = self.gradient_state.sync_gradients
        if not due:
            return None
        micro, self._micro = self._micro, []
        if len(micro) == 1:
            return self.optimizer.step(micro[0], closure=closure, **kwargs)
        if "accumulate" in kwargs:
            raise HetsamInputError("step(accumulate=...) and Accelerator(gradient_accumulation_steps=...) both split the "
                                   "step; use one")
        return self.optimizer.step(concat(micro), closure=closure, accumulate=len(micro), **kwargs)

    def prefetch(self, loader: Iterable[Any]) -> Iterator[Any]:
        """``AutoSAM.prefetch`` by optimizer steps: groups of ``gradient_accumulation_steps``
        micro-batches read ahead as one batch each, yielded one micro-batch at a time."""
        k = self.gradient_state.num_steps
        if k == 1:
            yield from self.autosam.prefetch(loader)
            return
        groups = Groups(loader, k)
        for _ in self.autosam.prefetch(groups):
            group = groups.pending.popleft()
            self._sizes.append(len(group))
            yield from group

    def __getattr__(self, name: str) -> Any:
        if name in ("optimizer", "autosam"):
            raise AttributeError(name)
        return getattr(self.optimizer, name)
