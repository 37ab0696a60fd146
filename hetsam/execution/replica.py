"""A replica of the training model and the one gradient pass it runs.

Every gradient an executor computes, and every gradient the profiler times, goes through
:meth:`Replica.load` (θ, buffers and train/eval flags copied in) and :meth:`Replica.run`
(:func:`~hetsam.execution.passes.compute_gradient` under the role's thread count), so what is
profiled is what runs, and a worker thread's arithmetic equals the inline executor's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from hetsam.errors import HetsamInputError
from hetsam.execution.batches import batch_to
from hetsam.execution.binding import intra_op_threads
from hetsam.execution.jobs import GradJob, GradResult
from hetsam.execution.passes import AmpSpec, compute_gradient, norm_layers

__all__ = ["Replica"]


class Replica:
    """A deep copy of the training model that evaluates :class:`GradJob` s.

    ``params`` are the replica's parameters aligned with the trainable parameters of the job
    (the base optimizer's groups); replica parameters outside that list do not require grad.
    A job whose ``positions`` differ (parameter groups added during the run) re-aligns them,
    on the thread that runs the job, before its copy-in.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, params: Sequence[Tensor], *,
                 device: torch.device, threads: int | None, amp_dtype: torch.dtype | None,
                 out_device: torch.device | None = None):
        position = {p: i for i, p in enumerate(model.parameters())}
        missing = [i for i, p in enumerate(params) if p not in position]
        if missing:
            raise HetsamInputError(
                f"{len(missing)} optimized parameter(s) are not parameters of the model; "
                "AutoSAM optimizes the model's own parameters"
            )
        module = copy.deepcopy(model).to(device)
        self.all_params = list(module.parameters())
        for p in self.all_params:
            p.grad = None
        self.module = module
        self.loss_fn = loss_fn
        self.positions: tuple[int, ...] = ()
        self._align(tuple(position[p] for p in params))
        self.buffers = list(module.buffers())
        self.modules = list(module.modules())
        self.layers = norm_layers(module)
        self.device = device
        # where results go: the training (descent) device; the profiler keeps them where they are
        self.out_device = out_device if out_device is not None else (params[0].device if params else device)
        self.threads = threads
        self.amp = AmpSpec(device.type, amp_dtype) if amp_dtype is not None else None

    def _align(self, positions: tuple[int, ...]) -> None:
        """Optimize exactly the parameters at ``positions``; the others do not require grad."""
        wanted = set(positions)
        for i, p in enumerate(self.all_params):
            p.requires_grad_(i in wanted)
        self.params = [self.all_params[i] for i in positions]
        self.positions = positions

    @torch.no_grad()
    def load(self, job: GradJob) -> None:
        """Copy the job's parameter values, buffers and train/eval flags into the replica."""
        if job.positions and job.positions != self.positions:
            self._align(tuple(job.positions))
        if job.params:
            torch._foreach_copy_(self.params, list(job.params))
        if job.buffers:
            # buffers are small (BatchNorm statistics); in-place kernel updates do not bump
            # tensor versions, so there is no cheap way to know which changed: copy them all
            torch._foreach_copy_(self.buffers, list(job.buffers))
        if job.training:
            for m, flag in zip(self.modules, job.training):
                m.training = flag

    def run(self, job: GradJob) -> GradResult:
        """g(θ; B) at the loaded θ, under the role's thread count; the ascent pass never
        updates running statistics."""
        start = time.perf_counter()
        with intra_op_threads(self.threads):
            batch = batch_to(job.batch, self.device)
            loss, _ = compute_gradient(
                self.module, self.loss_fn, batch, self.params, accumulate=job.accumulate, amp=self.amp,
                loss_scale=job.loss_scale, unscale=True, update_stats=False, layers=self.layers,
            )
            out = self.out_device
            grads = [None if p.grad is None else (p.grad if p.grad.device == out else p.grad.to(out)) for p in self.params]
            for p in self.params:
                p.grad = None  # the result owns these tensors now
            value = float(loss)
        return GradResult(job.key, job.kind, grads, value, time.perf_counter() - start)

    def held_tensors(self) -> list[Tensor]:
        return list(self.module.parameters()) + self.buffers
