"""``AutoSAM``: one optimizer object that runs a Plan's strategy with an executor.

::

    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan="async_sam",
                         executor="inline", lr=0.1, momentum=0.9)
    for batch in opt.prefetch(loader):      # hands the next τ batches to step() itself
        loss = opt.step(batch)

``loss_fn(model, batch)`` returns the mean loss as a scalar tensor, or ``(loss, outputs)``;
``step`` runs every forward and backward pass itself (do not call ``backward`` or ``zero_grad``
around it). After a step, ``opt.last_outputs`` holds the outputs of the pass whose gradient
was applied (the descent pass; SAMPa: the g_x pass, on the previous batch), so metrics need no
second forward pass. The rules are
those of the README ("The update rules"), one folder each in :mod:`hetsam.strategies`. Each step
returns its loss as a detached tensor on the descent device (as torch optimizers return the
closure's loss; ``float(loss)``, a host sync, is the caller's choice), namely:

===============  ==================================================
``sgd``          L(θ_t; B_t)
``sam``, ``rst`` L(θ_t; B_t) (the ascent pass, or the only pass)
``async_sam``    L(θ_t + e_t; B_t) (the descent pass)
``sampa``        L(y_{t+1}; B_t) (the g_y' pass)
===============  ==================================================

Cross-cutting behaviour:

* **Parameters** like any torch optimizer: ``params=`` tensors or param-group dicts (per-group
  ``lr``, ``weight_decay``, ..., and ``rho``/``adaptive``/``eta``); ``add_param_group`` works
  mid-run (gradual unfreezing), also with the threaded executor and under DDP.
* **LR schedulers** attach to AutoSAM itself: it shares the base optimizer's ``param_groups``.
* **Clipping and hooks**: ``max_grad_norm`` clips the gradient the base optimizer applies (after
  AMP unscaling and DDP's all-reduce; never the ascent gradient); ``step(batch, closure=fn)``
  calls ``fn`` once right before the base update, with the update gradient in ``p.grad``; hooks
  registered with ``register_step_pre_hook``/``register_step_post_hook`` run around the base
  update too. Step hooks fire once per step: AutoSAM's, the base optimizer's and torch's global
  ones (:mod:`hetsam.optim.hooks`).
* **Gradient accumulation**: ``step(batch, accumulate=k)`` splits every pass of the step into
  k micro-batches (n_i/n-weighted, so the gradient is the whole-batch gradient). One
  perturbation serves all micro-batches; an ascent job on b' samples splits into min(k, b').
* **AMP**: ``amp=True`` autocasts the forward passes to bfloat16 on CPU and float16 on CUDA
  (or give the dtype). float16 gets a ``torch.amp.GradScaler`` unless ``scaler=`` is given
  (``scaler=False`` for none). Ascent gradients are unscaled before the perturbation norm;
  the scaler skips steps with inf/NaN as usual.
* **BatchNorm**: exactly one pass per step updates the running statistics, the pass whose
  gradient the update applies (the descent pass; SAMPa: the g_x pass). Ascent passes use batch
  statistics and leave the running statistics alone.
* A zero or non-finite ascent gradient skips the perturbation of that step (warned once,
  counted in ``stats()["skipped_perturbations"]``); it never puts NaN into the parameters. A
  step whose loss, update-pass loss or update gradient (SAMPa: g_y' too) is not finite applies
  nothing: its update is skipped, warned naming the step and counted in
  ``stats()["skipped_updates"]`` (``nonfinite="raise"``: :class:`hetsam.NonFiniteUpdate` too);
  under a guarded strategy it is a divergence (:mod:`hetsam.autosam.guard`).
* **Every plan is logged once** at its first step, with its share of SAM's gain and the evidence
  behind it (``hetsam.autosam.report``); ``plan_report()`` returns the same as a dict.
* **Checkpoints**: ``state_dict()`` has torch's shape (``state`` and ``param_groups``, the base
  optimizer's state over AutoSAM's groups; torch's state-dict hooks run) and ``hetsam``: the strategy's step
  counter and pending ascent gradients (AsyncSAM), g_y and the previous batch (SAMPa), RST's
  generator, MSAM's warm-up counters, the divergence guard's loss window and events, and the
  GradScaler it created; ``load_state_dict`` resumes exactly, and checks the whole checkpoint
  first: one it refuses (:mod:`hetsam.autosam.checkpoint_checks`) changes nothing.
* ``close()`` (or ``with AutoSAM(...) as opt:``) releases the executor.
* A strategy's settings are its plan's ``options`` (b', τ, p, λ, ...): give a ``hetsam.Plan``, or
  a strategy's name with ``options=``; SAMPa computes both of its gradients on whole batches.
* The facts of the run (planned steps, warm-up, steps under earlier plans) are one object,
  ``opt.run`` (:class:`hetsam.strategies.run.RunContext`), which every rule reads.
* ``step`` sets ``p.grad = None`` before its passes; after a step ``p.grad`` holds the last
  update gradient, as with a plain optimizer.

AutoSAM is a façade: :mod:`hetsam.autosam.assemble` builds the runtime, rule and executor that
run a plan; :mod:`hetsam.autosam.controller` chooses the plan for ``plan="auto"`` and watches it.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from hetsam import defaults
from hetsam.autosam import checkpoint, stepping
from hetsam.autosam.arguments import build_base, check_arguments, strategy_options
from hetsam.autosam.assemble import (
    Assembly,
    Settings,
    amp_spec,
    assembly_for,
    model_device,
    ranks_for,
    resolve_plan,
)
from hetsam.autosam.controller import controller_for
from hetsam.autosam.guard import DivergenceGuard
from hetsam.autosam.params import add_group, resolve_params
from hetsam.autosam.prefetch import LookaheadLoader, Prefetcher
from hetsam.autosam.report import base_family, plan_report
from hetsam.autosam.step_costs import with_step_costs
from hetsam.execution.allocator import apply_policy as apply_allocator_policy
from hetsam.execution.binding import role_binding
from hetsam.execution.executor import Executor
from hetsam.optim.sam import check_group, share_groups
from hetsam.planning.plan import Plan
from hetsam.strategies.run import RunContext, run_fact

__all__ = ["AutoSAM", "time_step_costs"]


class AutoSAM(torch.optim.Optimizer):
    """Sharpness-aware training with the strategy of a Plan (module docstring; README, "Using it").

    Args:
        model: the model to train.
        loss_fn: ``loss_fn(model, batch) -> loss`` (a scalar tensor) or ``(loss, outputs)``.
        base_optimizer: an optimizer class, e.g. ``torch.optim.SGD``; ``**base_kwargs`` go to it.
        rho: the perturbation radius ρ ≥ 0 (groups may set their own).
        plan: a :class:`hetsam.Plan`, a registered strategy's name with the Plan defaults, or
            ``"auto"``: at the first ``step`` hetsam profiles the model on this machine with that
            batch (cached on disk), plans, logs the plan in one line and runs it; ``plan`` is None
            until then. It compares the measured step periods with the prediction in windows,
            calibrates the loop's own per-step work when they disagree beyond the noise, and
            re-plans (at most ``max_replans`` times) only when that changes the plan by more than
            the noise (``hetsam.autosam.controller``); ``stats()`` reports it.
        executor: ``"threads"`` (default: the ascent on a worker thread bound to the ascent
            device, or time-sliced when both roles share one), ``"inline"`` (the sequential
            reference, same numbers), or an :class:`hetsam.execution.executor.Executor`.

    Keyword-only:
        params: what to optimize, as any torch optimizer takes it (default: the model's trainable
            parameters); every tensor must be one of the model's.
        max_grad_norm: clip the applied gradient to this global L2 norm (None: no clipping).
        adaptive, eta: ASAM's T = |θ| + η (default η = 0, ``davda54/sam``'s element-wise ASAM;
            ``hetsam.optim.asam_groups`` gives the official ASAM's groups).
        options: the strategy's settings (``hetsam.strategies.get(name).options``: b', τ, p, λ,
            ...) for a plan given by name or as a Plan (they replace the Plan's); one the strategy
            lacks is refused. A value may be a schedule (a callable ``t -> value``) where the option
            takes one (RST's p). Not with ``plan="auto"``, whose planner chooses them.
        seed: the seed of a rule's random draws (RST's generator).
        sam_probability, grst_alpha: deprecated (a FutureWarning): ``options={"sam_probability":
            p, "grst_alpha": α}``. They still apply where the strategy has them (with
            ``plan="auto"``: if the planner chooses RST).
        amp, scaler: autocast (True, ``"bf16"``/``"fp16"`` or a dtype) and a GradScaler (None
            creates one for float16; False: none).
        descent_threads, ascent_threads: intra-op threads of the two roles (default: a pool's
            size, else the current count); a descent on a CPU pool is pinned there during ``step``.
        on_worker_failure: ``"raise"`` (a :class:`hetsam.WorkerFailure` at the next step) or
            ``"degrade"`` (the failed job and every later one run on the descent device; no
            step loses its perturbation). None keeps an Executor instance's setting.
        ascent_timeout: a step that waits longer than this many seconds for its ascent gradient
            treats the worker as failed (``on_worker_failure`` decides what follows). None: 20 ×
            the longer of the last descent pass and the mean ascent job, at least 30 s (300 s
            before either was measured); ``float("inf")``: never.
        total_steps: the run's planned number of steps (``opt.run``; late-phase SAM starts SAM at
            a share of it); settable later as ``opt.total_steps`` (the framework integrations set it).
        sampa_pairs: under DDP, whether ``"sampa"`` runs across rank pairs (None: yes).
        planner_options: for ``plan="auto"``, :class:`hetsam.planning.options.PlannerOptions` keys.
            With ``"profile"`` among them, ``plan`` may also be a strategy name: the planner then
            chooses its numbers (devices, b', τ, p, λ) for that profile at the first step and
            logs them. ``base_optimizer`` is filled in from ``base_optimizer`` (SGD with momentum:
            ``"sgd"``; Adam, AdamW, NAdam, RAdam: ``"adam"``; else None) unless given there.
        strategies: for ``plan="auto"``, the registered strategies the planner may choose from
            (as ``hetsam plan --strategies``; SGD and SAM stay reference rows); None: every planned one.
        warmup_steps: the learning rate's warm-up: MSAM does not climb in steps t < warmup_steps
            (nor in any step whose lr is higher than the step before's); settable later as
            ``opt.warmup_steps`` (the Hugging Face integration sets it).
        guard: the divergence guard of the strategies that change SAM's algorithm
            (:mod:`hetsam.autosam.guard`): True (default), False (off), or a dict of ``window``,
            ``factor``, ``regress``, ``snapshot_bytes``.
        nonfinite: a step with a non-finite loss or update gradient applies nothing; ``"skip"`` (default)
            warns naming the step, counted in ``stats()["skipped_updates"]``; ``"raise"`` raises
            :class:`hetsam.NonFiniteUpdate`.
        log: where AutoSAM writes its one-line messages (default: stderr).

    Under ``DistributedDataParallel`` the descent is all-reduced by DDP and the ascent stays per
    rank (``hetsam.execution.distributed``). A ``KeyboardInterrupt`` during ``step`` closes the
    optimizer before it propagates, so no worker thread outlives it.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, base_optimizer: Any = torch.optim.SGD, rho: float = defaults.RHO,
                 plan: Any = "auto", executor: Any = "threads", *, params: Any = None, max_grad_norm: float | None = None,
                 adaptive: bool = False, eta: float = 0.0, options: Any = None, sam_probability: Any = None,
                 grst_alpha: float | None = None, seed: int | None = None, amp: Any = None, scaler: Any = None, descent_threads: int | None = None,
                 ascent_threads: int | None = None, on_worker_failure: str | None = None,
                 ascent_timeout: float | None = None, total_steps: int | None = None,
                 sampa_pairs: bool | None = None, planner_options: Any = None, strategies: Any = None,
                 warmup_steps: int | None = None, guard: Any = True, nonfinite: str = "skip",
                 log: Callable[[str], None] | None = None, **base_kwargs):
        check_arguments(model, loss_fn, base_optimizer, executor, on_worker_failure, max_grad_norm, ascent_timeout,
                        {**base_kwargs, "rho": rho, "adaptive": adaptive, "eta": eta}, nonfinite=nonfinite, seed=seed,
                        log=log, scaler=scaler, sampa_pairs=sampa_pairs)
        given = strategy_options(options, {"sam_probability": sam_probability, "grst_alpha": grst_alpha})
        self.run = RunContext(total_steps, warmup_steps)  # the run's facts, read by every rule
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._guard = DivergenceGuard.for_model(guard, model, self._log)
        apply_allocator_policy()  # as the profiler did (hetsam.execution.allocator)
        device = model_device(model)
        amp = amp_spec(amp, device.type)
        super().__init__(resolve_params(model, params), dict(rho=float(rho), adaptive=adaptive, eta=float(eta), **base_kwargs))
        for i, group in enumerate(self.param_groups):
            check_group(group, f"param group {i}")
        self.base_optimizer = build_base(base_optimizer, self.param_groups, base_kwargs)  # checks its groups
        share_groups(self, self.base_optimizer)
        # plan="auto", or a strategy name with a profile: the planner chooses at the first step
        self._controller = controller_for(plan, planner_options, model, self._log, strategies=strategies, base_family=base_family(
            self.base_optimizer), step_costs=functools.partial(time_step_costs, base=(base_optimizer, base_kwargs)))
        self.plan = None if self._controller is not None else resolve_plan(plan, model, given)
        self._settings = Settings(executor=executor, amp=amp, descent_threads=descent_threads, ascent_threads=ascent_threads,
                                  overrides=given.overrides(self.plan), seed=seed, on_worker_failure=on_worker_failure,
                                  sampa_pairs=sampa_pairs, max_grad_norm=max_grad_norm, ascent_timeout=ascent_timeout)
        self._given_plan_object, self._plan_logged, self._plan_source = isinstance(plan, Plan), False, "as given"
        self._owns_scaler = scaler is None and amp is not None and amp.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type) if self._owns_scaler else (scaler or None)
        self.model, self.loss_fn = model, loss_fn
        self._ddp_trainable = {id(p) for p in model.parameters() if p.requires_grad}  # what DDP reduces (add_param_group)
        self._last_start = self._last_end = None  # when the previous step() began and returned (periods, gaps)
        self._parts: Assembly | None = None
        # steps under earlier plans (re-plans), updates skipped for a non-finite loss, the first batch's size
        self._steps_before, self._skipped_updates, self._batch_size = 0, 0, None
        self._prefetcher, self.last_outputs = Prefetcher(), None
        self._closed, self._warned_idle, self._default_params, self._nonfinite = False, False, params is None, nonfinite
        self._dist = ranks_for(self, plan)  # under DDP: rank, data shard, the node's cores (before any plan runs)
        if self.plan is not None:
            self._use(self.plan)

    total_steps = run_fact("total_steps", "The run's planned number of steps (``opt.run``), or None.")
    warmup_steps = run_fact("warmup_steps", "The learning rate's warm-up steps (MSAM climbs in none of them), or None.")
    _steps_before = run_fact("steps_before", "Steps taken under earlier plans (re-plans).")

    def plan_report(self) -> dict:
        """The plan that runs and why: ``{"plan", "share" (``Share.to_dict()``), "prediction" (the
        planner's, else None), "chosen_by", "why", ...}`` (:func:`hetsam.autosam.report.plan_report`)."""
        return plan_report(self)

    @property
    def planner_report(self):  # plan="auto": the planner's whole PlanReport (else None)
        return self._controller.report if self._controller is not None else None

    # ---- training ---------------------------------------------------------------------------
    def step(self, batch: Any = None, *, closure: Callable[[], Any] | None = None, upcoming: Sequence[Any] | None = None,
             accumulate: int = 1, descent_closure: bool = False) -> torch.Tensor:
        """One training step on ``batch``; returns its loss (module docstring) as a detached tensor on
        the descent device, as torch optimizers return the closure's: ``float(loss)`` (a host sync) is the caller's.

        ``closure``, if given, is called once right before the base update, with the update
        gradient in ``p.grad`` (Lightning runs ``on_before_optimizer_step`` there). With
        ``descent_closure=True`` it computes the update pass itself instead (forward and backward
        at the perturbed parameters, as Lightning's automatic optimization does). ``upcoming``:
        the next batches, for AsyncSAM's ``lookahead`` (``prefetch``/``lookahead`` pass them);
        ``accumulate``: micro-batches per pass.
        """
        upcoming = stepping.begin(self, batch, closure, upcoming, accumulate, descent_closure)
        parts, rt = self._parts, self._parts.runtime
        rt.release_grads()  # before any job runs, so no stale gradients stay alive
        rt.pre_update, rt.descent = (None, closure) if descent_closure else (closure, None)
        start = time.perf_counter()
        # the period includes the loop's own work; the gap since the last step() returned is that work alone
        period, gap = (None, None) if self._last_end is None else (start - self._last_start, start - self._last_end)
        self._last_start = start
        # the guard's snapshots (arm, end) copy too: on the descent's cores, not over the ascent worker's
        with role_binding(parts.descent_threads, parts.descent_cpus):
            self._guard.arm(self, self._steps_before + parts.rule.t)  # the first snapshot of a guarded plan
            try:
                with parts.dist.stepping() if parts.dist is not None else contextlib.nullcontext():
                    loss = parts.rule.step(batch, upcoming, accumulate)
            except BaseException as exc:
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: leave no worker behind
                    self.close()
                raise
            finally:
                rt.pre_update = rt.descent = None
            self.last_outputs, rt.outputs, loss = rt.outputs, None, stepping.result(self, loss)
            stepping.end(self, loss, descent_closure, period, gap)  # skipped updates, the guard, re-planning
        self._last_end = time.perf_counter()
        return loss

    def _use(self, plan: Plan, parts: Assembly | None = None) -> None:
        """Run ``plan`` from the next step on, with ``parts`` when already built (a re-plan retires
        the running parts first; the caller logs why)."""
        if self._parts is not None:
            self._steps_before += self._parts.rule.t
            self._parts.retire()
        self.plan = plan
        self._parts = parts if parts is not None else assembly_for(self, plan)

    def prefetch(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Iterate ``loader`` reading τ batches ahead, for ``lookahead``: ``for batch in
        opt.prefetch(loader): opt.step(batch)``. The k-th batch it yields is the k-th step's,
        whatever the loop does to it (``hetsam.autosam.prefetch``)."""
        return self._prefetcher.iterate(loader, self._ahead())

    def lookahead(self, loader: Iterable[Any]) -> LookaheadLoader:
        """``loader`` wrapped as an object a framework iterates as its data loader (each epoch
        afresh; ``len()``, ``sampler``, ``set_epoch`` pass through), reading ahead like ``prefetch``."""
        return LookaheadLoader(loader, self._prefetcher, self._ahead)

    def _ahead(self) -> int:
        # before plan="auto" has chosen, read as far ahead as its largest allowed staleness
        return self._parts.rule.lookahead if self._parts is not None else self._controller.options.max_staleness

    # ---- parameter groups and hooks ---------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add parameters of the model mid-run (gradual unfreezing); they join the next step's
        passes, jobs and perturbation (a pending ascent gradient leaves them unperturbed once)."""
        if not hasattr(self, "base_optimizer"):  # during torch.optim.Optimizer.__init__
            return super().add_param_group(param_group)
        add_group(self, param_group)

    def register_step_pre_hook(self, hook: Callable) -> Any:
        """``hook(optimizer, args, kwargs)`` right before the base update (not at the start of
        ``step``, when no gradient exists yet); ``optimizer`` is this AutoSAM."""
        return self.base_optimizer.register_step_pre_hook(lambda _base, args, kwargs: hook(self, args, kwargs))

    def register_step_post_hook(self, hook: Callable) -> Any:
        """``hook(optimizer, args, kwargs)`` right after the base update."""
        return self.base_optimizer.register_step_post_hook(lambda _base, args, kwargs: hook(self, args, kwargs))

    # ---- reporting --------------------------------------------------------------------------
    distributed = property(lambda self: self._dist, doc="The :class:`hetsam.execution.distributed.RankContext` under DDP "
                           "(rank, data shard: set at construction, whatever the plan, and never changed), else None.")

    @property
    def executor(self) -> Executor | None:
        return self._parts.executor if self._parts is not None else None

    def stats(self) -> dict:
        """What ran: the plan, step counts (continued across re-plans), skipped perturbations and
        updates, what the rule reports (the policy that ran, RST's realised share, MSAM's warm-up
        steps), the executor's waits, the last update gradient's norm before clipping, the
        divergence guard (``"guard"``), and for ``plan="auto"`` every plan chosen."""
        return checkpoint.stats(self)

    def extra_tensors(self) -> list[torch.Tensor]:
        """The parameter-sized tensors hetsam holds beyond the model, its gradients and the base
        optimizer's state (backup of θ, replica, pending ascent gradients, g_y), for memory accounting."""
        return [] if self._parts is None else self._parts.held_tensors()

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:  # torch's shape plus "hetsam"; torch's hooks run (hetsam.autosam.checkpoint)
        return checkpoint.state_dict(self)

    def load_state_dict(self, state_dict: dict) -> None:
        checkpoint.load_state_dict(self, state_dict)

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the executor (idempotent). A job still running on a worker thread cannot be
        interrupted inside a kernel: its daemon thread ends when the job does."""
        if self._closed:
            return
        self._closed = True
        if self._parts is not None:
            self._parts.close()

    def __enter__(self) -> AutoSAM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def time_step_costs(profile, model, loss_fn, sample_batch, *, base=None, progress: bool = False, log=None):
    """``profile`` with a step's fixed costs timed in AutoSAM's own steps on its CPU devices
    (:func:`hetsam.autosam.step_costs.with_step_costs`); ``base``: ``(base_optimizer, its keyword
    arguments)`` to time them with (None: SGD with momentum, as the profiler's update)."""
    return with_step_costs(profile, model, loss_fn, sample_batch, optimizer=AutoSAM, base=base, progress=progress, log=log)
