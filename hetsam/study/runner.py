"""One paired run of a study: a fresh model from a seed, ``epochs`` epochs with AutoSAM, a score.

Pairing: seed s of every strategy builds its model right after ``torch.manual_seed(s)`` and reads
the batches of the same per-epoch permutations (a generator seeded with s, apart from the global
one), so every difference between strategies at one seed is the strategy's. Each epoch is one
pass of ``AutoSAM.prefetch`` over that epoch's batches, as a training loop over a loader does
(a lookahead plan reads ahead within the epoch). An LR scheduler, when given, steps once per step.
The score is taken inside the optimizer's context, after the last epoch (and after every epoch
for a ``curve``), with the model in eval mode; ``seconds`` counts the training steps only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = ["PairedData", "train_run"]


class PairedData:
    """``train_data`` (a Dataset, or a tuple of equal-length tensors) read in seeded batches."""

    def __init__(self, train_data: Any, batch_size: int):
        self.batch_size = batch_size
        self.tensors: tuple | None = None
        if isinstance(train_data, (tuple, list)):
            if not train_data or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in train_data):
                raise HetsamInputError("train_data must be a torch Dataset or a tuple of tensors (one sample per "
                                       "row), e.g. (x, y)")
            lengths = {len(t) for t in train_data}
            if len(lengths) != 1:
                raise HetsamInputError(f"train_data's tensors have different lengths {sorted(lengths)}; give "
                                       "tensors of one row per sample, e.g. (x, y)")
            self.tensors = tuple(train_data)
            self.size = lengths.pop()
        elif isinstance(train_data, torch.utils.data.Dataset) and hasattr(train_data, "__len__"):
            self.dataset = train_data
            self.size = len(train_data)
        else:
            raise HetsamInputError(f"train_data={type(train_data).__name__} must be a torch Dataset with a length "
                                   "or a tuple of equal-length tensors, e.g. (x, y)")
        if self.size < batch_size:
            raise HetsamInputError(f"train_data has {self.size} samples, fewer than batch_size={batch_size}; "
                                   "give a smaller batch_size")
        self.steps_per_epoch = math.ceil(self.size / batch_size)

    def take(self, index: torch.Tensor) -> Any:
        """The batch of the samples at ``index``."""
        if self.tensors is not None:
            return tuple(t[index] for t in self.tensors)
        from torch.utils.data import default_collate

        return default_collate([self.dataset[i] for i in index.tolist()])

    def first_batch(self) -> Any:
        """The first ``batch_size`` samples (the planner's sample batch)."""
        return self.take(torch.arange(self.batch_size))

    @staticmethod
    def order(seed: int) -> torch.Generator:
        """The generator of seed ``seed``'s batch order (one permutation per epoch, drawn in turn)."""
        return torch.Generator().manual_seed(seed)

    def epoch(self, order: torch.Generator) -> Iterator[Any]:
        """The batches of the next epoch of ``order`` (the last one may be smaller)."""
        for index in torch.randperm(self.size, generator=order).split(self.batch_size):
            yield self.take(index)

    def batches(self, seed: int, epochs: int) -> Iterator[Any]:
        """Every batch of ``epochs`` epochs, in seed ``seed``'s order (the last batch of an epoch may
        be smaller)."""
        order = self.order(seed)
        for _ in range(epochs):
            yield from self.epoch(order)

    def describe(self) -> str:
        if self.tensors is not None:
            return f"tensors {' x '.join(str(tuple(t.shape)) for t in self.tensors)}"
        return f"{type(self.dataset).__name__} of {self.size} samples"

    def checksum(self) -> str:
        """A cheap fingerprint of the data: its size and, for tensors, moments of the first and last
        rows (a Dataset may augment at random, so only its size and type count)."""
        if self.tensors is None:
            return f"{type(self.dataset).__name__}[{self.size}]"
        ends = torch.cat([torch.arange(min(self.size, self.batch_size)),
                          torch.arange(max(0, self.size - self.batch_size), self.size)])
        parts = [self.size]
        for t in self.take(ends):
            x = t.detach().to("cpu", torch.float64)
            parts += [tuple(t.shape[1:]), str(t.dtype), round(float(x.sum()), 6), round(float((x * x).sum()), 6)]
        return repr(parts)


def train_run(make_model: Callable, loss_fn: Callable, data: PairedData, evaluate: Callable, plan, *, seed: int,
              epochs: int, base_optimizer, rho: float, base_kwargs: dict, schedule: Callable | None = None,
              curve: bool = False) -> dict:
    """Train one plan at one seed and score it: ``{"score", "seconds", "wall_seconds"}``, and with
    ``curve`` also ``"curve"``: ``[training seconds so far, score]`` after every epoch
    (``seconds``: the training steps; ``wall_seconds``: with the model's construction and the scores).
    ``schedule(optimizer, total_steps)`` returns an LR scheduler, stepped once after each step."""
    from hetsam.autosam import AutoSAM

    started = time.perf_counter()
    torch.manual_seed(seed)
    model = make_model()
    if not isinstance(model, torch.nn.Module):
        raise HetsamInputError(f"make_model() returned {type(model).__name__}; it must return a fresh torch.nn.Module")
    executor = "threads" if plan.spec.uses_executor else "inline"
    total = epochs * data.steps_per_epoch
    opt = AutoSAM(model, loss_fn, base_optimizer, rho=rho, plan=plan, executor=executor, seed=seed,
                  total_steps=total, log=lambda line: None, guard=False, **base_kwargs)
    # guard=False: the evidence is the strategy's own outcome, divergence included (the guard
    # would switch a diverging run to SAM and record SAM's accuracy as the strategy's)
    sched = None if schedule is None else _scheduler(schedule, opt, total)
    order = data.order(seed)
    seconds, points = 0.0, []
    model.train()
    with opt:
        for epoch in range(epochs):
            start = time.perf_counter()
            for batch in opt.prefetch(data.epoch(order)):
                opt.step(batch)
                if sched is not None:
                    sched.step()
            seconds += time.perf_counter() - start
            if curve or epoch == epochs - 1:
                points.append([seconds, _score(evaluate, model, plan, seed, epoch)])
    out = {"score": points[-1][1], "seconds": seconds, "wall_seconds": time.perf_counter() - started}
    if curve:
        out["curve"] = points
    return out


def _scheduler(schedule: Callable, opt, total: int):
    sched = schedule(opt, total)
    if not callable(getattr(sched, "step", None)):
        raise HetsamInputError(f"schedule(optimizer, total_steps) returned {type(sched).__name__}; it must return an "
                               "LR scheduler (e.g. torch.optim.lr_scheduler.LambdaLR(optimizer, ...))")
    return sched


def _score(evaluate: Callable, model, plan, seed: int, epoch: int) -> float:
    model.eval()
    try:
        score = evaluate(model)
    finally:
        model.train()
    if isinstance(score, torch.Tensor) and score.numel() == 1:
        score = score.item()
    return _checks.number(score, f"evaluate(model) after {plan.describe()} at seed {seed}, epoch {epoch + 1}",
                          hint="return a finite float, higher is better (e.g. held-out accuracy)")
