"""``AutoSAM``: one optimizer object that runs a Plan's strategy with an executor.

::

    opt = hetsam.AutoSAM(model, loss_fn, torch.optim.SGD, rho=0.05, plan="async_sam",
                         executor="inline", lr=0.1, momentum=0.9)
    for batch in opt.prefetch(loader):      # hands the next τ batches to step() itself
        loss = opt.step(batch)

``loss_fn(model, batch)`` returns the mean loss as a scalar tensor; ``step`` runs every forward
and backward pass itself (do not call ``backward`` or ``zero_grad`` around it). The rules are
those of DESIGN.md section 3, implemented in :mod:`hetsam.optim`; what each step returns:

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

``plan="auto"`` needs the planner, which is not available yet: :func:`auto_plan` is the single
place where it will plug in.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from hetsam.execution.passes import AmpSpec
from hetsam.strategies.async_sam.rule import AsyncSAMStep
from hetsam.optim.rst import check_alpha
from hetsam.execution.runtime import Runtime
from hetsam.optim.sam import check_base_optimizer, check_rho, share_groups
from hetsam.strategies.sampa.rule import SAMPaStep
from hetsam.strategies.rule import RSTStep, SAMStep, SGDStep, Strategy
from hetsam.autosam.controller import DriftMonitor, PlannerOptions, describe_choice, plan_for_model
from hetsam.errors import HetsamInputError
from hetsam.execution.executor import (
    EXECUTORS, FAILURE_POLICIES, Executor, Placement, make_executor, pool_cpus, role_binding, role_threads, torch_device,
)
from hetsam.planning.plan import STRATEGIES, Plan
from hetsam.execution.distributed import agree_plan, rank_context
from hetsam.strategies.sampa.pairs import SAMPaPairStep

__all__ = ["AutoSAM", "auto_plan", "resolve_plan"]

_FORMAT = 1  # version of AutoSAM.state_dict()'s "hetsam" entry


def auto_plan(model: nn.Module, loss_fn: Callable, sample_batch: Any, options: PlannerOptions | None = None, *,
              refresh: bool = False, log: Callable[[str], None] | None = None):
    """What ``plan="auto"`` stands for: profile ``model`` on this machine (cached on disk) with
    ``sample_batch``, and ask the planner, keeping the descent where the model lives.
    Returns the :class:`hetsam.planning.search.PlanReport`; ``report.plan`` is the Plan."""
    return plan_for_model(model, loss_fn, sample_batch, options or PlannerOptions(), refresh=refresh, log=log)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def resolve_plan(plan: Any, model: nn.Module, loss_fn: Callable = None, base_optimizer: Any = None) -> Plan:
    """A :class:`Plan` from ``"auto"``, a strategy name (defaults, descent on the model's
    device) or a Plan (checked against the model's device)."""
    device = _model_device(model)
    if isinstance(plan, Plan):
        wanted = torch_device(plan.descent_device)
        if wanted.type != device.type or (wanted.index is not None and device.index is not None and wanted.index != device.index):
            raise HetsamInputError(
                f"the plan's descent_device={plan.descent_device!r} but the model is on {device}; "
                "move the model there (model.to(...)) or use a plan for that device"
            )
        return plan
    if plan == "auto":
        return None  # planned at the first step, from its batch (see AutoSAM)
    if isinstance(plan, str) and plan in STRATEGIES:
        name = "cpu" if device.type == "cpu" else f"cuda:{device.index if device.index is not None else 0}"
        return Plan(strategy=plan, descent_device=name)
    raise HetsamInputError(
        f"plan={plan!r} must be 'auto', a strategy name ({', '.join(STRATEGIES)}) or a hetsam.Plan"
    )


def _amp_spec(amp: Any, device_type: str) -> AmpSpec | None:
    if amp is None or amp is False:
        return None
    if amp is True:
        return AmpSpec(device_type, torch.bfloat16 if device_type == "cpu" else torch.float16)
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    dtype = names.get(amp) if isinstance(amp, str) else amp
    if dtype not in (torch.bfloat16, torch.float16):
        raise HetsamInputError(f"amp={amp!r} must be True, False, 'bf16', 'fp16' or torch.bfloat16/torch.float16")
    return AmpSpec(device_type, dtype)


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
            runs it; ``plan`` is None until then. If the measured step time then drifts more
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
        planner_options: for ``plan="auto"``: a dict of :class:`hetsam.autosam.controller.PlannerOptions`
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

    def __init__(self, model: nn.Module, loss_fn: Callable, base_optimizer: Any = torch.optim.SGD, rho: float = 0.05,
                 plan: Any = "auto", executor: Any = "threads", *, adaptive: bool = False, sam_probability: Any = None,
                 grst_alpha: float = 1.0, seed: int | None = None, amp: Any = None, scaler: Any = None,
                 descent_threads: int | None = None, ascent_threads: int | None = None,
                 on_worker_failure: str | None = None, sampa_pairs: bool | None = None,
                 planner_options: Any = None, log: Callable[[str], None] | None = None, **base_kwargs):
        if not isinstance(model, nn.Module):
            raise HetsamInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise HetsamInputError(f"loss_fn={loss_fn!r} must be a callable loss_fn(model, batch) -> scalar tensor")
        rho = check_rho(rho)
        if not isinstance(adaptive, bool):
            raise HetsamInputError(f"adaptive={adaptive!r} must be True (ASAM) or False (SAM)")
        grst_alpha = check_alpha(grst_alpha)
        check_base_optimizer(base_optimizer)
        if not (isinstance(executor, Executor) or executor in EXECUTORS or executor == "threads"):
            raise HetsamInputError(f"executor={executor!r} is unknown; choose 'threads', 'inline' or an Executor")
        if on_worker_failure is not None and on_worker_failure not in FAILURE_POLICIES:
            raise HetsamInputError(f"on_worker_failure={on_worker_failure!r} must be 'raise' or 'degrade'")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise HetsamInputError("the model has no parameters that require grad; nothing to optimize")
        self.plan = resolve_plan(plan, model, loss_fn, base_optimizer)
        if planner_options is not None and plan != "auto":
            raise HetsamInputError("planner_options applies to plan='auto' only; drop it or pass plan='auto'")
        self._planner_options = PlannerOptions.from_value(planner_options) if plan == "auto" else None

        super().__init__(params, dict(rho=rho, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        share_groups(self, self.base_optimizer)

        device = _model_device(model)
        amp_spec = _amp_spec(amp, device.type)
        self._owns_scaler = False
        if scaler is None and amp_spec is not None and amp_spec.dtype == torch.float16:
            scaler = torch.amp.GradScaler(device.type)
            self._owns_scaler = True
        self.scaler = scaler or None
        self.model = model
        self.loss_fn = loss_fn
        self._on_worker_failure = on_worker_failure
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._settings = dict(executor=executor, amp_spec=amp_spec, ascent_threads=ascent_threads,
                              sam_probability=sam_probability, grst_alpha=grst_alpha, seed=seed, rho=rho,
                              adaptive=adaptive, descent_threads=descent_threads, sampa_pairs=sampa_pairs)
        self._executor: Executor | None = None
        self._strategy: Strategy | None = None
        self._drift: DriftMonitor | None = None
        self._replans = 0
        self.plan_report = None  # plan="auto": the planner's report
        self._prefetched: tuple[Any, list] | None = None
        self._closed = False
        if self.plan is not None:
            self._configure(self.plan)

    def _configure(self, plan: Plan) -> None:
        """Build the runtime, executor and strategy that run ``plan``."""
        cfg, device = self._settings, _model_device(self.model)
        self.plan = plan
        self._descent_threads = role_threads(plan.descent_device, cfg["descent_threads"])
        self._descent_cpus = pool_cpus(plan.descent_device) if device.type == "cpu" else None
        self._dist = rank_context(self.model, plan, sampa_pairs=cfg["sampa_pairs"])  # DDP: hetsam.execution.distributed
        self._rt = Runtime(self.model, self.loss_fn, self.base_optimizer, rho=cfg["rho"], adaptive=cfg["adaptive"],
                           amp=cfg["amp_spec"], local_model=self._dist.module if self._dist is not None else None,
                           scaler=self.scaler)
        self._strategy = self._build_strategy(cfg["executor"], cfg["amp_spec"], cfg["ascent_threads"],
                                              cfg["sam_probability"], cfg["grst_alpha"], cfg["seed"])

    def _plan_automatically(self, batch: Any, *, refresh: bool = False) -> None:
        """plan="auto": profile (cached), plan, log one line, and (re)build the strategy."""
        opts = self._planner_options
        module = self._dist.module if getattr(self, "_dist", None) is not None else self.model
        report = auto_plan(module, self.loss_fn, batch, opts, refresh=refresh, log=self._log)
        chosen = dataclasses.replace(report.plan, predicted=dict(report.plan.predicted))
        chosen = agree_plan(self.model, chosen)  # DDP: every rank runs rank 0's plan
        self.plan_report = report
        self._log(describe_choice(report))
        if self._strategy is not None:
            same = dataclasses.replace(chosen, predicted={}) == dataclasses.replace(self.plan, predicted={})
            if same:
                self.plan = chosen
            else:
                self._log(f"hetsam: switching from {self.plan.describe()} to {chosen.describe()}")
                self._retire_strategy()
                self._configure(chosen)
        else:
            self._configure(chosen)
        predicted = chosen.predicted.get("iteration_seconds")
        # DDP: no re-planning on drift; ranks would decide it at different steps (hetsam.execution.distributed)
        ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        self._drift = DriftMonitor(predicted, opts.drift_tolerance, opts.drift_window, opts.drift_warmup) \
            if predicted and not ddp else None

    def _retire_strategy(self) -> None:
        """Let the running strategy's pending jobs finish, then release its executor."""
        for future in list(getattr(self._strategy, "pending", {}).values()):
            self._executor.wait(future)
        if self._executor is not None:
            self._executor.close()
        self._executor = None
        self._strategy = None

    def _build_strategy(self, executor, amp_spec, ascent_threads, sam_probability, grst_alpha, seed) -> Strategy:
        plan, rt = self.plan, self._rt
        if plan.strategy == "sgd":
            return SGDStep(rt)
        if plan.strategy == "sam":
            return SAMStep(rt)
        if plan.strategy == "rst":
            p = plan.probability if sam_probability is None else sam_probability
            if self._dist is not None:
                seed = self._dist.agree_seed(seed)  # one coin for all ranks
            strategy = RSTStep(rt, p=p, alpha=grst_alpha, seed=seed)
            if isinstance(p, (int, float)) and not isinstance(p, bool):
                self.plan = dataclasses.replace(plan, sam_probability=float(p))  # what runs
            return strategy
        if plan.strategy == "sampa" and self._dist is not None and self._dist.pairs:
            return SAMPaPairStep(rt, self._dist, lam=plan.sampa_lambda)  # no executor: the partner rank is the other device
        ex = make_executor(executor)
        if self._on_worker_failure is not None:
            ex.on_worker_failure = self._on_worker_failure
        ascent = plan.effective_ascent_device
        ex.bind(rt.local_model, self.loss_fn, rt.params, device=torch_device(ascent),
                threads=role_threads(ascent, ascent_threads), amp_dtype=amp_spec.dtype if amp_spec else None,
                placement=Placement(plan.descent_device, ascent, self._descent_threads))
        if self._dist is not None:  # ranks agree on ascent failures; per-rank g_y' is averaged
            ex = self._dist.wrap(ex, rt.params, average_results=plan.strategy == "sampa")
        self._executor = ex
        if plan.strategy == "async_sam":
            return AsyncSAMStep(rt, ex, staleness=plan.staleness, ascent_batch_size=plan.ascent_batch_size,
                                policy=plan.ascent_batches)
        return SAMPaStep(rt, ex, lam=plan.sampa_lambda)

    # ---- training ---------------------------------------------------------------------------
    def step(self, batch: Any, *, upcoming: Sequence[Any] | None = None, accumulate: int = 1) -> float:
        """One training step on ``batch``; returns its loss (see the module docstring).

        ``upcoming`` are the next batches (the ``lookahead`` policy of AsyncSAM needs τ of
        them); :meth:`prefetch` passes them for you. ``accumulate`` splits the step's passes
        into that many micro-batches.
        """
        if self._closed:
            raise RuntimeError("AutoSAM.step() after close()")
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise HetsamInputError(f"accumulate={accumulate!r} must be a positive integer (micro-batches per step)")
        if upcoming is None and self._prefetched is not None and self._prefetched[0] is batch:
            upcoming = self._prefetched[1]
        if self._strategy is None:
            self._sample_batch = batch  # profiled now, and again if the step time drifts
            self._plan_automatically(batch)
            if upcoming is None and self._prefetched is not None and self._prefetched[0] is batch:
                upcoming = self._prefetched[1]
        self._rt.release_grads()  # before any job runs, so no stale gradients stay alive
        start = time.perf_counter()
        try:
            with role_binding(self._descent_threads, self._descent_cpus), \
                    (self._dist.stepping() if self._dist is not None else contextlib.nullcontext()):
                loss = self._strategy.step(batch, upcoming, accumulate)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: leave no worker behind
                self.close()
            raise
        if getattr(self._strategy, "fell_back", False) and self.plan.ascent_batches != "independent":
            self.plan = dataclasses.replace(self.plan, ascent_batches="independent")  # what ran
        loss = float(loss)
        if self._drift is not None and self._drift.observe(time.perf_counter() - start):
            self._on_drift(batch)
        return loss

    def _on_drift(self, batch: Any) -> None:
        drift, opts = self._drift, self._planner_options
        self._log(f"hetsam: measured {drift.last_median * 1e3:.1f} ms/step, {drift.ratio - 1:+.0%} from the predicted "
                  f"{drift.predicted_seconds * 1e3:.1f} ms")
        if self._replans >= opts.max_replans:
            self._log(f"hetsam: not re-planning: {opts.max_replans} re-plan(s) already done")
            self._drift = None
            return
        self._replans += 1
        before = dataclasses.replace(self.plan, predicted={})
        self._plan_automatically(self._sample_batch, refresh=True)
        if dataclasses.replace(self.plan, predicted={}) == before:
            # a fresh profile chose the same plan: the gap is not in the profile (e.g. per-step
            # overhead outside forward+backward), so watching further would only re-measure it
            self._log("hetsam: the fresh profile chose the same plan; keeping it and no longer watching for drift")
            self._drift = None

    def prefetch(self, loader: Iterable[Any]) -> Iterator[Any]:
        """Iterate ``loader``, reading τ batches ahead so that ``step(batch)`` gets ``upcoming``.

        ``for batch in opt.prefetch(loader): opt.step(batch)`` is the same as passing the next
        τ batches by hand (fewer at the end of the data).
        """
        # before plan="auto" has chosen, read as far ahead as its largest allowed staleness
        ahead = self._strategy.lookahead if self._strategy is not None else self._planner_options.max_staleness
        it = iter(loader)
        window = collections.deque(itertools.islice(it, ahead + 1))
        end = object()
        try:
            while window:
                batch = window.popleft()
                nxt = next(it, end)
                if nxt is not end:
                    window.append(nxt)
                self._prefetched = (batch, list(window)[:ahead])
                yield batch
        finally:
            self._prefetched = None

    # ---- reporting --------------------------------------------------------------------------
    @property
    def distributed(self):
        """The :class:`hetsam.execution.distributed.RankContext` of a DDP model (rank, data shard), else None."""
        return self._dist

    @property
    def executor(self) -> Executor | None:
        return self._executor

    def stats(self) -> dict:
        """What ran: the plan, step counts, skipped perturbations, and the executor's waits."""
        if self._strategy is None:
            return {"plan": None, "steps": 0}
        out = {"plan": self.plan.describe(), "steps": self._strategy.t,
               "skipped_perturbations": self._rt.perturbation.skipped, **self._strategy.stats()}
        if self._executor is not None:
            out["executor"] = self._executor.describe()
        if self._dist is not None:
            out["distributed"] = self._dist.describe()
        return out

    def extra_tensors(self) -> list[torch.Tensor]:
        """The parameter-sized tensors hetsam holds beyond the model, its gradients and the base
        optimizer's state (backup of θ, replica, pending ascent gradients, g_y), for memory
        accounting."""
        if self._strategy is None:
            return []
        out = self._rt.held_tensors() + self._strategy.held_tensors()
        if self._executor is not None:
            out += self._executor.held_tensors()
        return out

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self._strategy is None:
            raise HetsamInputError("plan='auto' has not chosen a plan yet: take one step before state_dict()")
        hetsam_state = {
            "format": _FORMAT,
            "plan": self.plan.to_dict(),
            "strategy": self._strategy.state_dict(),
            "skipped_perturbations": self._rt.perturbation.skipped,
        }
        if self._owns_scaler:
            hetsam_state["scaler"] = self.scaler.state_dict()
        return {"base": self.base_optimizer.state_dict(), "hetsam": hetsam_state}

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"base", "hetsam"}:
            raise HetsamInputError("not an AutoSAM state dict: expected the keys 'base' and 'hetsam'")
        saved = state_dict["hetsam"]
        if saved.get("format") != _FORMAT:
            raise HetsamInputError(f"AutoSAM state format {saved.get('format')!r} is not supported (expected {_FORMAT})")
        strategy = saved["plan"]["strategy"]
        if self._strategy is None:  # plan="auto" before its first step: resume the saved plan
            self._configure(Plan.from_dict(saved["plan"]))
        if strategy != self.plan.strategy:
            raise HetsamInputError(
                f"the checkpoint was taken with strategy {strategy!r}; this AutoSAM runs {self.plan.strategy!r}"
            )
        self.base_optimizer.load_state_dict(state_dict["base"])
        share_groups(self, self.base_optimizer)
        self._strategy.load_state_dict(saved["strategy"])
        self._rt.perturbation.skipped = int(saved["skipped_perturbations"])
        if "scaler" in saved and self._owns_scaler:
            self.scaler.load_state_dict(saved["scaler"])
        if getattr(self._strategy, "fell_back", False):
            self.plan = dataclasses.replace(self.plan, ascent_batches="independent")

    # ---- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the executor (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            self._executor.close()

    def __enter__(self) -> "AutoSAM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "base_optimizer"):
            raise HetsamInputError("AutoSAM optimizes the model's parameters; it does not take extra parameter groups")
        super().add_param_group(param_group)
