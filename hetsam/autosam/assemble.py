"""The parts that run one plan inside ``AutoSAM``: runtime, rule and executor, assembled.

:func:`resolve_plan` turns what the user passed as ``plan`` into a :class:`~hetsam.Plan` (or
None for ``"auto"``); :class:`Assembly` builds, for one plan, the descent-side
:class:`~hetsam.execution.runtime.Runtime`, the strategy's rule (through the registry: its spec's
``build_rule``), the executor the rule asks for, and under DDP the rank context; ``retire()``
lets pending jobs finish and releases the executor (at ``close()``, or before a re-plan).

The runtime is a :class:`CheckedRuntime`: a step with a non-finite loss, update gradient or
learning rate never reaches the base optimizer (with a GradScaler, which skips such steps itself,
it is the scaler's call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hetsam import strategies
from hetsam.errors import HetsamInputError
from hetsam.execution.binding import pool_cpus, role_threads, torch_device
from hetsam.execution.distributed import check_replica_passes, rank_context
from hetsam.execution.distributed.executor import DistributedExecutor
from hetsam.execution.executor import Placement
from hetsam.execution.factory import make_executor
from hetsam.execution.finite import not_finite
from hetsam.execution.passes import AmpSpec
from hetsam.execution.runtime import Runtime
from hetsam.hardware.kinds import torch_device_name, torch_kind
from hetsam.planning.plan import Plan
from hetsam.strategies.rule import RuleContext
from hetsam.strategies.run import RunContext

__all__ = ["Settings", "Assembly", "CheckedRuntime", "assembly_for", "ranks_for", "use_wrapper", "resolve_plan", "amp_spec", "model_device"]


@dataclass(frozen=True)
class Settings:
    """AutoSAM's keyword settings that shape the rule and its executor."""

    executor: Any = "threads"
    amp: AmpSpec | None = None
    descent_threads: int | None = None
    ascent_threads: int | None = None
    overrides: Any = field(default_factory=dict)  # run-time values of the plan's options (RuleContext.overrides)
    seed: int | None = None
    on_worker_failure: str | None = None
    sampa_pairs: bool | None = None
    max_grad_norm: float | None = None
    ascent_timeout: float | None = None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters; one of a kind hetsam does not know (``mps``,
    ``meta``, ...) is refused in one line naming the kinds it knows."""
    for p in model.parameters():
        torch_device_name(p.device)
        return p.device
    return torch.device("cpu")


def resolve_plan(plan: Any, model: nn.Module, given: Any = None) -> Plan | None:
    """A :class:`Plan` from a strategy name (its defaults, descent on the model's device), a
    Plan (checked against the model's device), or None for ``"auto"`` (chosen at the first step);
    ``given``: AutoSAM's strategy options (``hetsam.autosam.arguments.StrategyOptions``), applied."""
    device = model_device(model)
    name = torch_device_name(device)
    if isinstance(plan, Plan):
        plan.validate()
        wanted = _device(plan.descent_device, "descent_device")
        if wanted.type != device.type or (wanted.index is not None and device.index is not None and wanted.index != device.index):
            raise HetsamInputError(
                f"the plan's descent_device={plan.descent_device!r} but the model is on {device}; "
                "move the model there (model.to(...)) or use a plan for that device"
            )
        return given.apply(plan) if given is not None else plan
    if isinstance(plan, str) and plan == "auto":
        return None
    if isinstance(plan, str) and plan in strategies.names():
        made = Plan(strategy=plan, descent_device=name)
        return given.apply(made) if given is not None else made
    raise HetsamInputError(f"plan={plan!r} must be 'auto', a strategy name ({', '.join(strategies.names())}) or a hetsam.Plan")


def _device(name: str, role: str) -> torch.device:
    try:
        return torch_device(name)
    except HetsamInputError as exc:
        raise HetsamInputError(f"the plan's {role}: {exc}") from None


def amp_spec(amp: Any, device_type: str) -> AmpSpec | None:
    if amp is None or amp is False:
        return None
    if amp is True:
        return AmpSpec(device_type, getattr(torch, torch_kind(torch.device(device_type)).amp_dtype))
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    dtype = names.get(amp) if isinstance(amp, str) else amp
    if dtype not in (torch.bfloat16, torch.float16):
        raise HetsamInputError(f"amp={amp!r} must be True, False, 'bf16', 'fp16' or torch.bfloat16/torch.float16")
    return AmpSpec(device_type, dtype)


class CheckedRuntime(Runtime):
    """A :class:`Runtime` whose ``apply`` applies nothing (no base step, no hook; the gradients are
    released) in a step where something that makes its update is not finite: a loss of a pass on
    the training model (the update pass's, and SAM's ascent pass, whose loss the step returns), a
    loss or gradient a rule hands to :meth:`require` (SAMPa's g_y'), the update gradient, or a
    group's learning rate. ``skipped`` says what until ``take_skipped``. One extra norm over the
    gradients and one host sync per step. Under DDP only gradients count: they are all-reduced, so
    every rank decides alike (a rank's own loss is not). With a GradScaler, which skips such steps
    itself, it is the scaler's call."""

    def __init__(self, *args, ranks: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.ranks = ranks  # one of several DDP ranks: the losses are this rank's own
        self._losses: list[torch.Tensor] = []  # this step's losses on the training model
        self._refused: str | None = None  # what require() found not finite
        self.skipped: str | None = None

    @property
    def _ddp(self) -> bool:
        return self.ranks or self.local_model is not self.model

    def gradient(self, batch, *, update: bool = False, **kwargs):
        loss = super().gradient(batch, update=update, **kwargs)
        if not self._ddp and (not update or self.descent is None or isinstance(self.closure_result, torch.Tensor)):
            self._losses.append(loss)  # a framework's closure that returned no loss is not checked
        return loss

    def release_grads(self) -> None:
        super().release_grads()
        self._losses, self._refused = [], None  # AutoSAM.step starts here: nothing of a step that raised

    def require(self, what: str, *, loss: Any = None, finite: bool = True) -> None:
        """This step's update also needs ``what`` (computed off this runtime, e.g. by an executor) to
        be finite: its ``loss`` (not under DDP) and ``finite``, the verdict on its gradient."""
        bad = not finite or (loss is not None and not self._ddp and not math.isfinite(float(loss)))
        if bad and self._refused is None:
            self._refused = what

    def apply(self) -> None:
        losses, self._losses = self._losses, []
        refused, self._refused = self._refused, None
        if self.loss_scale() is None:
            reason = refused or not_finite(losses, [p.grad for p in self.params if p.grad is not None],
                                            self.base.param_groups)
            if reason is not None:
                self.skipped = reason
                self.release_grads()
                return
        super().apply()

    def take_skipped(self) -> str | None:
        """What was not finite in the step whose base update was skipped since the last call, or None."""
        skipped, self.skipped = self.skipped, None
        return skipped


def assembly_for(opt, plan: Plan) -> Assembly:
    """The runtime, rule and executor of ``plan`` for AutoSAM ``opt`` (built, not yet running)."""
    return Assembly(plan, opt.model, opt.loss_fn, opt.base_optimizer, opt.scaler, opt._settings, opt.run, opt.distributed)


def ranks_for(opt, plan: Any):
    """The rank context of AutoSAM ``opt`` at its construction (``plan``: what the user passed;
    ``opt.plan`` is resolved, or None while the planner chooses), or None without DDP.

    Its data shard is final here: a strategy known now runs across SAMPa rank pairs (unless
    ``sampa_pairs=False``); a plan the planner chooses later never does (a SAMPa it chooses
    averages g_y' over the ranks instead), so ``sampa_pairs=True`` needs a SAMPa plan. When the
    planner chooses the devices, this process is pinned to its own share of the node's cores
    first (:func:`hetsam.execution.distributed.node.pin_to_share`), and every rank runs rank 0's
    choice; a given plan whose CPU pools meet another rank's of the node is warned about."""
    from hetsam._warnings import warn_user
    from hetsam.execution.distributed.node import overlap_warning, pin_to_share

    s, known, controller = opt._settings, opt.plan, opt._controller
    name = known.strategy if known is not None else controller.strategy
    pinned = (lambda: _pinned(known, opt.model)) if known is not None else ()
    ctx = rank_context(opt.model, sampa_pairs=s.sampa_pairs, pinned=pinned,
                       rank_pairs=name is not None and strategies.get(name).rank_pairs)
    if ctx is None:
        return None
    if name is None and s.sampa_pairs:  # every rank refuses alike
        raise HetsamInputError("sampa_pairs=True with plan='auto' under DDP: the data shard must be known at construction, "
                               "before the planner chooses; pass plan='sampa' (or a SAMPa Plan) for rank pairs")
    if controller is not None:
        ctx.cpus = pin_to_share(ctx.layout)
        controller.bind_ranks(ctx)
    else:
        line = overlap_warning(ctx.layout)
        if line is not None:
            warn_user(line)
    return ctx


def use_wrapper(opt, ddp) -> None:
    """Run AutoSAM ``opt``, built on a bare module, with a framework's DDP wrapper of it (the
    Trainer wraps after building the optimizer): the descent goes through ``ddp`` (all-reduced);
    the ascent and the executor's replica keep the bare module (per rank). Idempotent."""
    ctx = opt.distributed
    if ctx is None:
        raise HetsamInputError("AutoSAM has no rank context for this DistributedDataParallel model: build it after the "
                               "process group is initialised, on a module the framework marked (expect_wrapper)")
    if opt.model is ddp:
        return
    ctx.attach(ddp)  # checks that ddp wraps AutoSAM's model
    opt.model = ddp
    if opt._parts is not None:
        opt._parts.model = opt._parts.runtime.model = ddp


def _pinned(plan: Plan, model: nn.Module) -> tuple[int, ...]:
    """The OS CPUs ``plan`` pins this rank's roles to (its descent and ascent CPU pools)."""
    roles = ([plan.descent_device] if torch_kind(model_device(model)).pools else []) + \
        ([plan.effective_ascent_device] if plan.spec.uses_executor else [])
    return tuple(sorted({c for role in roles for c in (_pool(role) or ())}))


def _pool(device: str):
    try:
        return pool_cpus(device) if torch_kind(torch_device(device)).pools else None
    except HetsamInputError:  # a pool this machine lacks: refused when the plan is assembled
        return None


class Assembly:
    """Runtime + rule + executor (+ rank context under DDP) for one plan (module docstring)."""

    def __init__(self, plan: Plan, model: nn.Module, loss_fn: Callable, base: torch.optim.Optimizer, scaler: Any,
                 settings: Settings, run: RunContext | None = None, dist=None):
        run = run if run is not None else RunContext()
        spec = plan.spec
        self.plan, self.model, self.loss_fn, self.settings = plan, model, loss_fn, settings
        self.descent_threads = role_threads(plan.descent_device, settings.descent_threads)
        self.descent_cpus = pool_cpus(plan.descent_device) if torch_kind(model_device(model)).pools else None
        self.dist = dist  # the rank context, built once at construction (ranks_for)
        check_replica_passes(dist, plan)
        self.runtime = CheckedRuntime(model, loss_fn, base, amp=settings.amp, scaler=scaler, max_grad_norm=settings.max_grad_norm,
                                      local_model=dist.module if dist is not None else None, ranks=dist is not None)
        if self.dist is not None:
            run.world_size = self.dist.world
        self._ctx = RuleContext(plan, self.runtime, make_executor=self._make_executor, dist=self.dist, run=run,
                                overrides=settings.overrides, seed=settings.seed)
        self.rule = spec.build_rule(self._ctx)

    @property
    def executor(self):
        return self._ctx._executor

    def held_tensors(self) -> list:
        """Parameter-sized tensors held beyond the model (backup of θ, replica, pending jobs)."""
        out = self.runtime.held_tensors() + self.rule.held_tensors()
        return out + (self.executor.held_tensors() if self.executor is not None else [])

    def _make_executor(self):
        plan, s, rt = self.plan, self.settings, self.runtime
        options = {} if s.on_worker_failure is None else {"on_worker_failure": s.on_worker_failure}
        ex = make_executor(s.executor, **options)
        ascent = plan.effective_ascent_device
        ex.bind(rt.local_model, self.loss_fn, rt.params, device=_device(ascent, "ascent_device"),
                threads=role_threads(ascent, s.ascent_threads), amp_dtype=s.amp.dtype if s.amp else None,
                placement=Placement(plan.descent_device, ascent, self.descent_threads))
        inner = ex
        while inner is not None:  # the executor with a worker: how long a wait may take
            if hasattr(inner, "timeout"):
                inner.timeout, inner.reference = s.ascent_timeout, (lambda: rt.pass_seconds)
            inner = getattr(inner, "inner", None)
        if self.dist is not None:  # ranks agree on ascent failures; gradients that enter the update are averaged
            ex = DistributedExecutor(ex, self.dist, rt.params, average_results=plan.spec.jobs_enter_update)
        return ex

    def check_descent_closure(self, closure, accumulate: int) -> None:
        """A closure that computes the update pass needs a strategy whose update pass is one pass
        on the step's own batch at the current parameters, and nothing AutoSAM scales or splits."""
        spec = self.plan.spec
        if closure is None:
            raise HetsamInputError("descent_closure=True needs a closure that runs the forward and backward pass")
        if not spec.closure_descent:
            raise HetsamInputError(
                f"strategy {spec.name!r} takes its update gradient elsewhere than on the step's own batch, so a "
                "framework's closure cannot compute it; use manual optimization (step(batch=...)) for it")
        if accumulate != 1 or self.runtime.loss_scale() is not None:
            raise HetsamInputError("descent_closure=True cannot be combined with accumulate > 1 or AutoSAM's own "
                                   "GradScaler (the closure's backward is the framework's)")

    def retire(self) -> None:
        """Let the rule's pending jobs finish, then release the executor."""
        ex = self.executor
        if ex is None:
            return
        for future in self.rule.pending():
            ex.wait(future)
        ex.close()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
