"""``AutoSAM``: one optimizer object that runs a Plan's strategy with an executor.

::

    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan="async_sam",
                         executor="inline", lr=0.1, momentum=0.9)
    for batch in opt.prefetch(loader):      # hands the next τ batches to step() itself
        loss = opt.step(batch)

``loss_fn(model, batch)`` returns the mean loss as a scalar tensor; ``step`` runs every forward
and backward pass itself (do not call ``backward`` or ``zero_grad`` around it). The rules are
those of the README ("The update rules"), one folder each in :mod:`hetsam.strategies`; what each step returns:

===============  ==================================================
``sgd``          L(θ_t; B_t)
``sam``, ``rst`` L(θ_t; B_t) (the ascent pass, or the only pass)
``async_sam``    L(θ_t + e_t; B_t) (the descent pass)
``sampa``        L(y_{t+1}; B_t) (the g_y' pass)
===============  ==================================================

Cross-cutting behaviour:

* **LR schedulers** attach to AutoSAM itself: it shares the base optimizer's ``param_groups``.
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
  counted in ``stats()["skipped_perturbations"]``); it never puts NaN into the parameters.
* **Checkpoints**: ``state_dict()`` holds the base optimizer's state, the strategy's step
  counter and pending ascent gradients (AsyncSAM), g_y and the previous batch (SAMPa), RST's
  generator, and the GradScaler it created; ``load_state_dict`` resumes exactly.
* ``close()`` (or ``with AutoSAM(...) as opt:``) releases the executor.
* SAMPa computes both of its gradients on whole batches; the plan's ``ascent_batch_size`` is
  used by AsyncSAM only.
* ``step`` sets ``p.grad = None`` before its passes; after a step ``p.grad`` holds the last
  update gradient, as with a plain optimizer.

AutoSAM is a façade: :mod:`hetsam.autosam.assemble` builds the runtime, rule and executor that
run a plan; :mod:`hetsam.autosam.controller` chooses the plan for ``plan="auto"`` and watches it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from hetsam import _checks, defaults
from hetsam.autosam import checkpoint
from hetsam.autosam.assemble import Assembly, Settings, amp_spec, model_device, resolve_plan
from hetsam.autosam.controller import PlanController
from hetsam.autosam.prefetch import Prefetcher
from hetsam.errors import HetsamInputError
from hetsam.execution.binding import role_binding
from hetsam.execution.distributed import agree_plan, unwrap
from hetsam.execution.executor import FAILURE_POLICIES, Executor
from hetsam.execution.factory import EXECUTORS
from hetsam.optim.rst import check_alpha
from hetsam.optim.sam import check_base_optimizer, check_rho, share_groups
from hetsam.planning.options import PlannerOptions
from hetsam.planning.plan import Plan

__all__ = ["AutoSAM"]


class AutoSAM(torch.optim.Optimizer):
    """Sharpness-aware training with the strategy of a Plan (see the module docstring).

    Args:
        model: the model to train (its parameters that require grad are optimized).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        base_optimizer: an optimizer class, e.g. ``torch.optim.SGD``; ``**base_kwargs`` go to it.
        rho: the perturbation radius ρ ≥ 0.
        plan: a :class:`hetsam.Plan`, a strategy name (``"sgd"``, ``"sam"``, ``"async_sam"``,
            ``"sampa"``, ``"rst"``) with the Plan defaults, or ``"auto"``: at the first ``step``
            hetsam profiles the model on this machine with that batch (cached on disk, keyed by
            model structure, batch shape and machine), plans, logs the plan in one line, and
            runs it; ``plan`` is None until then (``stats()`` reports every choice and re-plan). If the measured step time then drifts more
            than 15% from the prediction (median of 20 steps), it profiles again and re-plans,
            switching strategy at a step boundary (the new strategy starts without pending
            ascent gradients), at most ``max_replans`` times; if the fresh profile yields the
            same plan it stops watching.
        executor: ``"threads"`` (the default: the ascent on a worker thread bound to the plan's
            ascent device, or time-sliced on the calling thread when both roles share a device;
            see :mod:`hetsam.execution.threads`), ``"inline"`` (the sequential reference, same
            numbers), or an :class:`hetsam.execution.executor.Executor`.

    Keyword-only:
        adaptive: ASAM scaling of the perturbation (T = |θ|).
        sam_probability: RST's p: a number, a callable ``t -> p`` or a schedule; None takes the
            plan's ``sam_probability`` (default 0.5).
        grst_alpha: G-RST's α in [0, 1] (1 is RST).
        seed: seed of RST's generator.
        amp: autocast: False/None, True, ``"bf16"``/``"fp16"`` or a dtype.
        scaler: a ``torch.amp.GradScaler``; None creates one for float16; False: none.
        descent_threads, ascent_threads: intra-op thread counts of the two roles (default: the
            pool size of the plan's device for a CPU pool, else the current count). When the
            descent device is a CPU pool (``cpu:0[0]``), each ``step`` also pins the calling
            thread to the pool's cores; its thread count and affinity are restored on return.
        on_worker_failure: what happens when the ascent worker fails (an exception in a job,
            e.g. out of memory on the ascent device): ``"raise"`` (the default) re-raises at
            the next ``step`` as :class:`hetsam.WorkerFailure`, with the original exception as
            ``__cause__``; ``"degrade"`` warns once and carries on with every ascent gradient
            computed synchronously on the descent device (like ``executor="inline"`` there):
            the gradient of the failed job is recomputed from its snapshot, so no step loses
            its perturbation and the update rule is unchanged, only the overlap is gone.
            None keeps the setting of an :class:`Executor` instance (else ``"raise"``).

        sampa_pairs: with a ``DistributedDataParallel`` model (one process per rank, see
            :mod:`hetsam.execution.distributed`), ``"sampa"`` runs across rank pairs by default (None):
            ranks 2i and 2i+1 compute g_x and g_y' and one all-reduce combines them
            (:mod:`hetsam.strategies.sampa.pairs`; both ranks of a pair read the same data, shard it by
            ``opt.distributed.data_rank``/``data_world``). False: every rank computes both,
            g_y' on its executor, averaged over the ranks.
        planner_options: for ``plan="auto"``: a dict of :class:`hetsam.planning.options.PlannerOptions`
            (budget, max_staleness, min_ascent_fraction, reserve_cores, profile_budget_seconds,
            drift_tolerance, drift_window, max_replans (default 1), ...).
        log: where ``plan="auto"`` writes its one-line messages (default: ``print`` to stderr).

    With a ``DistributedDataParallel`` model the descent goes through DDP (all-reduced) and the
    ascent stays per rank on the unwrapped module; ranks agree on ascent failures in the step
    they happen. ``opt.distributed`` describes the rank; :mod:`hetsam.execution.distributed` has the
    semantics.

    A ``KeyboardInterrupt`` (or ``SystemExit``) during ``step`` closes the optimizer before it
    propagates, so no worker thread outlives it.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, base_optimizer: Any = torch.optim.SGD, rho: float = defaults.RHO,
                 plan: Any = "auto", executor: Any = "threads", *, adaptive: bool = False, sam_probability: Any = None,
                 grst_alpha: float = 1.0, seed: int | None = None, amp: Any = None, scaler: Any = None,
                 descent_threads: int | None = None, ascent_threads: int | None = None,
                 on_worker_failure: str | None = None, sampa_pairs: bool | None = None,
                 planner_options: Any = None, log: Callable[[str], None] | None = None, **base_kwargs):
        if not isinstance(model, nn.Module):
            raise HetsamInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise HetsamInputError(f"loss_fn={_short(loss_fn)} must be a callable loss_fn(model, batch) -> scalar tensor")
        check_base_optimizer(base_optimizer)
        if not (isinstance(executor, Executor) or (isinstance(executor, str) and executor in EXECUTORS)):
            raise HetsamInputError(f"executor={executor!r} is unknown; choose 'threads', 'inline' or an Executor")
        _checks.optional(_checks.choice, on_worker_failure, "on_worker_failure", FAILURE_POLICIES)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise HetsamInputError("the model has no parameters that require grad; nothing to optimize")
        self.plan = resolve_plan(plan, model, sam_probability)
        if planner_options is not None and self.plan is not None:
            raise HetsamInputError("planner_options applies to plan='auto' only; drop it or pass plan='auto'")
        device = model_device(model)
        amp = amp_spec(amp, device.type)
        self._settings = Settings(rho=check_rho(rho), adaptive=_checks.choice(adaptive, "adaptive", (True, False)),
                                  executor=executor, amp=amp, descent_threads=descent_threads,
                                  ascent_threads=ascent_threads, sam_probability=sam_probability,
                                  grst_alpha=check_alpha(grst_alpha), seed=seed, on_worker_failure=on_worker_failure,
                                  sampa_pairs=sampa_pairs)
        super().__init__(params, dict(rho=self._settings.rho, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        share_groups(self, self.base_optimizer)
        self._owns_scaler = scaler is None and amp is not None and amp.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type) if self._owns_scaler else (scaler or None)
        self.model = model
        self.loss_fn = loss_fn
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._controller = None
        if self.plan is None:
            ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
            self._controller = PlanController(PlannerOptions.from_value(planner_options), self._log,
                                              agree=lambda p: agree_plan(model, p), watch=not ddp)
        self._parts: Assembly | None = None
        self._steps_before = 0  # steps taken under earlier plans (re-plans)
        self._prefetcher = Prefetcher()
        self._closed = False
        if self.plan is not None:
            self._parts = Assembly(self.plan, model, loss_fn, self.base_optimizer, self.scaler, self._settings)

    @property
    def plan_report(self):
        """``plan="auto"``: the planner's report for the plan that runs (None otherwise)."""
        return self._controller.report if self._controller is not None else None

    # ---- training ---------------------------------------------------------------------------
    def step(self, batch: Any, *, upcoming: Sequence[Any] | None = None, accumulate: int = 1) -> float:
        """One training step on ``batch``; returns its loss (see the module docstring).

        ``upcoming`` are the next batches (the ``lookahead`` policy of AsyncSAM needs τ of
        them); :meth:`prefetch` passes them for you. ``accumulate`` splits the step's passes
        into that many micro-batches.
        """
        if self._closed:
            raise RuntimeError("AutoSAM.step() after close()")
        _checks.integer(accumulate, "accumulate", low=1, high=1 << 20, hint="micro-batches per step")
        if self._parts is None:
            self._sample_batch = batch  # profiled now, and again if the step time drifts
            self._use(self._controller.choose(self._profiled_module(), self.loss_fn, batch))
        if upcoming is None:
            upcoming = self._prefetcher.upcoming_for(batch)
        parts = self._parts
        parts.runtime.release_grads()  # before any job runs, so no stale gradients stay alive
        start = time.perf_counter()
        try:
            with role_binding(parts.descent_threads, parts.descent_cpus), \
                    (parts.dist.stepping() if parts.dist is not None else contextlib.nullcontext()):
                loss = parts.rule.step(batch, upcoming, accumulate)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: leave no worker behind
                self.close()
            raise
        loss = float(loss)
        if self._controller is not None and self._controller.observe(time.perf_counter() - start):
            self._replan()
        return loss

    def _profiled_module(self) -> nn.Module:
        return unwrap(self.model)  # under DDP the profile times one rank's own module

    def _use(self, plan: Plan) -> None:
        """Run ``plan`` from the next step on (a re-plan retires the running parts first)."""
        if self._parts is not None:
            if plan == self.plan:
                self._controller.same_plan()
                return
            self._log(f"hetsam: switching from {self.plan.describe()} to {plan.describe()}")
            self._steps_before += self._parts.rule.t
            self._parts.retire()
        self.plan = plan
        self._parts = Assembly(plan, self.model, self.loss_fn, self.base_optimizer, self.scaler, self._settings)

    def _replan(self) -> None:
        self._use(self._controller.choose(self._profiled_module(), self.loss_fn, self._sample_batch, refresh=True))

    def prefetch(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Iterate ``loader``, reading τ batches ahead so that ``step(batch)`` gets ``upcoming``.

        ``for batch in opt.prefetch(loader): opt.step(batch)`` is the same as passing the next
        τ batches by hand (fewer at the end of the data).
        """
        # before plan="auto" has chosen, read as far ahead as its largest allowed staleness
        ahead = self._parts.rule.lookahead if self._parts is not None else self._controller.options.max_staleness
        return self._prefetcher.iterate(loader, ahead)

    # ---- reporting --------------------------------------------------------------------------
    @property
    def distributed(self):
        """The :class:`hetsam.execution.distributed.RankContext` of a DDP model (rank, data shard), else None."""
        return self._parts.dist if self._parts is not None else None

    @property
    def executor(self) -> Executor | None:
        return self._parts.executor if self._parts is not None else None

    def stats(self) -> dict:
        """What ran: the plan, step counts (continued across re-plans), skipped perturbations, what
        the rule reports (the policy that ran, RST's realised share), the executor's waits, and
        for ``plan="auto"`` every plan chosen."""
        out: dict[str, Any] = {"plan": None, "steps": self._steps_before}
        if self._parts is not None:
            parts = self._parts
            out = {"plan": self.plan.describe(), "steps": self._steps_before + parts.rule.t,
                   "skipped_perturbations": parts.runtime.perturbation.skipped, **parts.rule.stats()}
            if parts.executor is not None:
                out["executor"] = parts.executor.describe()
            if parts.dist is not None:
                out["distributed"] = parts.dist.describe()
        if self._controller is not None:
            out["auto"] = self._controller.stats()
        return out

    def extra_tensors(self) -> list[torch.Tensor]:
        """The parameter-sized tensors hetsam holds beyond the model, its gradients and the base
        optimizer's state (backup of θ, replica, pending ascent gradients, g_y), for memory
        accounting."""
        if self._parts is None:
            return []
        parts = self._parts
        out = parts.runtime.held_tensors() + parts.rule.held_tensors()
        if parts.executor is not None:
            out += parts.executor.held_tensors()
        return out

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The base optimizer's state and hetsam's (:mod:`hetsam.autosam.checkpoint`)."""
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

    def __enter__(self) -> "AutoSAM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "base_optimizer"):
            raise HetsamInputError("AutoSAM optimizes the model's parameters; it does not take extra parameter groups")
        super().add_param_group(param_group)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
