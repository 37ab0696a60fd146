"""AutoSAM under ``torch.distributed``: one process per rank, a DDP-wrapped model.

``AutoSAM(DistributedDataParallel(model), loss_fn, ...)`` runs any strategy data-parallel, on
PyTorch's own engine (torchrun, ``init_process_group``, DDP). This module holds what the ranks
need beyond the single-process rules: the :class:`RankContext` AutoSAM builds for a DDP model,
the executor wrapper that keeps the ranks in lock-step when a worker fails, and the layout of
SAMPa rank pairs (the pair rule itself is :mod:`hetsam.strategies.sampa.pairs`).

Notation: W ranks, rank r holds the shard B^r_t (b samples) of the global batch B_t (W·b
samples); ḡ denotes the mean over ranks, which is what DDP's all-reduce computes.

What runs where (per rank r)
----------------------------
* **Descent**: through the DDP wrapper, so its gradient is all-reduced by DDP as usual (bucketed,
  overlapped with the backward): every rank applies ḡ = mean_r g(θ_t + e_r; B^r_t), and the
  parameters stay identical on every rank.
* **Ascent** (AsyncSAM, SAM, RST): per rank, never all-reduced. AsyncSAM's jobs run on rank r's
  own ascent device (the plan's ``ascent_device``, e.g. a CPU pool or spare GPU of that rank) on
  a replica built from the *unwrapped* module (``model.module``); SAM's and RST's ascent pass
  runs on the training model through the unwrapped module. DDP's reducer only reduces a
  backward whose forward went through the DDP wrapper (its autograd hooks return at once
  otherwise, and a replica's parameters have no hooks at all), so none of these passes
  triggers an all-reduce; ``tests/test_distributed.py`` counts DDP's all-reduces (a comm hook)
  to check it. ``no_sync()`` is not used: a forward through the wrapper may still broadcast
  buffers (a collective), and DDP reduces gradients accumulated under ``no_sync`` with the
  next synchronised backward; the unwrapped module has neither effect.
* **Agreement**: every step that waits for an ascent job (AsyncSAM at t ≥ τ, SAMPa) first
  all-reduces one small integer per rank (0: fine, 1: degraded, 2: failed), before the
  descent, so that every rank takes the same decision in the same step (see Faults).

Semantics, compared with single-process training on the global batch B_t
-----------------------------------------------------------------------
* **AsyncSAM(τ, b')**: rank r perturbs with e_r = ρ ĝ_r/‖ĝ_r‖, ĝ_r = g(θ_{t−τ}; B'^r_t) (the first
  b' samples of *its* shard; ``independent``: of its shard of B_{t−τ}), and the update is
  base(θ_t, mean_r g(θ_t + e_r; B^r_t)). Single-process AsyncSAM on B_t uses one ĝ = g(θ_{t−τ};
  first b' samples of B_t) and descends at one point θ_t + e. What differs: (1) W perturbations
  e_r, each from b' samples of one shard (W·b' ascent samples in all, against b'), each of norm
  ρ; (2) the descent gradient is the mean of gradients taken at W different points θ_t + e_r,
  not the gradient at one point. This is SAM's "m-sharpness" with m = b (Foret et al., ICLR
  2021, section 4), the way SAM is usually run under DDP; it equals single-process AsyncSAM
  on B_t only for W = 1 (or if every e_r were equal, which would cost one more all-reduce of ĝ).
* **SAM / RST**: the same with τ = 0 and b' = b: e_r from g(θ_t; B^r_t). RST's coin is drawn
  from rank 0's seed on every rank (:meth:`RankContext.agree_seed`), so all ranks take a SAM
  step in the same steps. G-RST with α < 1 mixes g(θ_t; B_t) into the update, so its first
  pass goes through DDP (all-reduced): its perturbation is then the global one.
* **SAMPa, one gradient pair per rank** (``sampa_pairs=False``): g_x goes through DDP, and the
  executor's g_y' is averaged over the ranks by one more all-reduce (:meth:`RankContext.average`)
  before it is mixed in and kept as g_y. Every rank then holds the same g_y, x̃ and y, so this
  *is* single-process SAMPa on B_t (mean over shards = mean over the global batch for a
  mean-reduced loss and equal shards), up to rounding and BatchNorm (below).
* **SAMPa across rank pairs** (the default for ``"sampa"`` under DDP, as the official code and
  hetsam's simulator at scale run it): see :mod:`hetsam.strategies.sampa.pairs`. Ranks 2i and 2i+1 form
  pair i, are fed the *same* batches, and compute g_x and g_y' respectively; one all-reduce
  combines them and averages over the W/2 pairs. Shard the data by pair: :attr:`RankContext.
  data_rank` and :attr:`RankContext.data_world` (``DistributedSampler(num_replicas=data_world,
  rank=data_rank)``); the first step checks that the two ranks of each pair got the same batch.
* **BatchNorm**: batch statistics are per rank (per shard), as with plain DDP; use
  ``SyncBatchNorm`` for global ones, but not with ``async_sam`` or ``sampa``, whose replica
  passes must not run collectives (refused at construction). Running statistics are updated by
  the descent pass on each rank (SAMPa: the g_x pass), and DDP's ``broadcast_buffers``
  replaces them with rank 0's at every DDP forward; SAMPa pairs copy rank 0's running
  statistics to every rank in their all-reduce. Ascent passes never update them.
* **Checkpoints**: the pending ascent gradients (AsyncSAM) are per rank, so to resume exactly
  save and load each rank's ``state_dict()``; parameters and base-optimizer state are equal
  on every rank.
* ``plan="auto"`` profiles and plans on every rank, then every rank runs rank 0's plan
  (:func:`agree_plan`); it does not re-plan on drift (ranks would decide that in different
  steps). It plans for one process: pass a plan from ``hetsam plan --nodes N
  --devices-per-node G`` to plan for the whole job.
* ``accumulate=k`` runs k DDP forward/backward pairs, so DDP all-reduces each micro-batch
  (correct, but k all-reduces rather than one).

Faults (``on_worker_failure``)
-------------------------------
A failed ascent job (an exception on the worker, a dead worker) must not leave the other ranks
waiting in DDP's all-reduce for a rank that has raised. The executor wrapper
(:class:`DistributedExecutor`) holds back a failure at ``submit`` and, at each ``wait`` inside
a step, all-reduces its status before returning, so every rank learns it in the same step,
before the descent:

* ``"raise"``: every rank raises :class:`hetsam.WorkerFailure` in that step (the failing rank
  with the original error as ``__cause__``, the others naming the failed rank), so the job ends
  cleanly instead of hanging in the next all-reduce.
* ``"degrade"``: the failing rank computes its ascent on its descent device from then on (see
  :mod:`hetsam.execution.threads`); the decision every rank takes is to carry on. The other ranks
  keep their workers (their numbers do not depend on it) and warn once; the step time of all
  ranks is now that of the degraded rank, since every step waits for the slowest rank.

Failures outside the ascent (an exception in the descent on one rank) are not covered: DDP
itself has no way out of a collective that one rank never joins, short of its timeout.

The cost of the agreement is one all-reduce of W int32 (on gloo, or a gloo group beside an
NCCL one so it never synchronises a GPU stream), counted in ``stats()["distributed"]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from concurrent.futures import Future
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hetsam.execution.batches import _leaves
from hetsam._warnings import warn_user
from hetsam.errors import HetsamInputError, WorkerFailure
from hetsam.execution.executor import Executor
from hetsam.planning.plan import Plan

__all__ = [
    "RankContext",
    "DistributedExecutor",
    "DistributedStats",
    "rank_context",
    "agree_plan",
    "unwrap",
    "flatten",
    "unflatten",
    "exit_process",
    "OK",
    "DEGRADED",
    "FAILED",
]

OK, DEGRADED, FAILED = 0, 1, 2  # a rank's ascent status in one step
_POLICY_WORDS = {DEGRADED: "degraded", FAILED: "failed"}


def unwrap(model: nn.Module) -> nn.Module:
    """The module a :class:`~torch.nn.parallel.DistributedDataParallel` wraps (else ``model``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def flatten(tensors: Sequence[Tensor | None], sizes: Sequence[int], dtype: torch.dtype, device,
            out: Tensor | None = None, offset: int = 0) -> Tensor:
    """Copy ``tensors`` into one flat buffer (``out`` from ``offset``, or a new one); None
    entries stay zero. ``sizes`` are the element counts of the slots."""
    if out is None:
        out = torch.zeros(offset + sum(sizes), dtype=dtype, device=device)
    for t, n in zip(tensors, sizes):
        if t is not None:
            out[offset:offset + n].copy_(t.reshape(-1))
        offset += n
    return out


def unflatten(flat: Tensor, like: Sequence[Tensor], offset: int = 0) -> list[Tensor]:
    """Views of ``flat`` from ``offset`` shaped like ``like`` (same dtype as ``flat``)."""
    out = []
    for t in like:
        n = t.numel()
        out.append(flat[offset:offset + n].view(t.shape))
        offset += n
    return out


@dataclasses.dataclass
class DistributedStats:
    """What the ranks exchanged beyond DDP's own all-reduces."""

    agreements: int = 0
    agreement_seconds: float = 0.0
    reductions: int = 0
    reduction_seconds: float = 0.0
    degraded_ranks: tuple[int, ...] = ()
    failed_ranks: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class RankContext:
    """One rank's view of a data-parallel AutoSAM run (see the module docstring).

    Built by :func:`rank_context` from the DDP-wrapped model; AutoSAM keeps it as
    ``opt.distributed``. ``pairs``: SAMPa runs across rank pairs.
    """

    def __init__(self, model: DistributedDataParallel, *, pairs: bool = False):
        if not dist.is_available() or not dist.is_initialized():
            raise HetsamInputError("a DistributedDataParallel model needs torch.distributed.init_process_group() first")
        self.ddp = model
        self.module = model.module
        self.group = model.process_group
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        self.pairs = bool(pairs)
        if self.pairs and self.world % 2:
            raise HetsamInputError(
                f"SAMPa across rank pairs needs an even number of ranks, got {self.world}; "
                "launch an even number, or pass sampa_pairs=False (each rank computes both gradients)"
            )
        self.stats = DistributedStats()
        self.device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        self.control_group = self._control_group()
        self._stepping = False
        # for measuring the agreement's cost only: without it a failure on one rank leaves the
        # others waiting in DDP's next all-reduce
        self.fault_agreement = True

    def _control_group(self):
        """A gloo group for the small control messages (no GPU stream sync under NCCL)."""
        backend = str(dist.get_backend(self.group)).lower()
        if "gloo" in backend:
            return self.group
        return dist.new_group(ranks=dist.get_process_group_ranks(self.group), backend="gloo")

    # ---- layout -------------------------------------------------------------------------------
    @property
    def data_rank(self) -> int:
        """Which shard of the data this rank reads: the pair's index with SAMPa pairs, else the rank."""
        return self.rank // 2 if self.pairs else self.rank

    @property
    def data_world(self) -> int:
        """Into how many shards the data is split: W/2 with SAMPa pairs, else W."""
        return self.world // 2 if self.pairs else self.world

    @property
    def pair_role(self) -> str:
        """``"x"`` (even rank: computes g_x) or ``"y"`` (odd rank: computes g_y')."""
        return "x" if self.rank % 2 == 0 else "y"

    # ---- steps --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        """Marks the body as a training step: only there do executor waits agree across ranks
        (a ``state_dict()`` taken on one rank alone must not enter a collective)."""
        old, self._stepping = self._stepping, True
        try:
            yield
        finally:
            self._stepping = old

    @property
    def in_step(self) -> bool:
        return self._stepping

    # ---- collectives ----------------------------------------------------------------------------
    def agree(self, status: int) -> list[int]:
        """Every rank's status this step (one all-reduce of W int32)."""
        codes = torch.zeros(self.world, dtype=torch.int32)
        codes[self.rank] = status
        start = time.perf_counter()
        dist.all_reduce(codes, op=dist.ReduceOp.SUM, group=self.control_group)
        self.stats.agreements += 1
        self.stats.agreement_seconds += time.perf_counter() - start
        return codes.tolist()

    def agree_seed(self, seed: int | None) -> int:
        """Rank 0's seed on every rank (rank 0 draws one from the OS when ``seed`` is None)."""
        value = torch.zeros(1, dtype=torch.int64)
        if self.rank == 0:
            value[0] = int.from_bytes(os.urandom(7), "little") if seed is None else int(seed)
        dist.broadcast(value, src=dist.get_global_rank(self.control_group, 0), group=self.control_group)
        return int(value.item())

    def all_reduce_sum_(self, flat: Tensor) -> Tensor:
        """Sum ``flat`` over the ranks in place (the data group: NCCL for GPU tensors)."""
        start = time.perf_counter()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        self.stats.reductions += 1
        self.stats.reduction_seconds += time.perf_counter() - start
        return flat

    def average(self, grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
        """mean over ranks of ``grads`` (aligned with the parameters ``like``; a rank's None counts
        as zero) by one all-reduce; returns views of one flat buffer."""
        if len(grads) != len(like):
            raise ValueError(f"{len(grads)} gradients for {len(like)} parameters: they must be aligned")
        dtype = common_dtype(like)
        flat = flatten(grads, [p.numel() for p in like], dtype, self.device)
        flat.div_(self.world)  # divide first, as DDP does, so the sum cannot overflow
        self.all_reduce_sum_(flat)
        return [v if v.dtype == p.dtype else v.to(p.dtype) for v, p in zip(unflatten(flat, like), like)]

    def check_pair_batches(self, batch: Any) -> None:
        """Refuse (on every rank) a first step whose two ranks of a pair got different batches."""
        leaves = [t for t in _leaves(batch) if t.numel()]
        mine = torch.tensor([float(sum(t.double().sum() for t in leaves)),
                             float(sum(t.double().square().sum() for t in leaves))], dtype=torch.float64)
        prints = torch.zeros(self.world, 2, dtype=torch.float64)
        prints[self.rank] = mine
        dist.all_reduce(prints, op=dist.ReduceOp.SUM, group=self.control_group)
        bad = [i for i in range(self.world // 2) if not torch.equal(prints[2 * i], prints[2 * i + 1])]
        if bad:
            raise HetsamInputError(
                f"SAMPa rank pairs: ranks {2 * bad[0]} and {2 * bad[0] + 1} got different batches; both ranks of a "
                "pair must read the same data: shard by pair with DistributedSampler(num_replicas=opt.distributed."
                "data_world, rank=opt.distributed.data_rank), or pass sampa_pairs=False"
            )

    # ---- faults -------------------------------------------------------------------------------
    def settle(self, status: int, error: BaseException | None) -> None:
        """Agree on this step's ascent statuses and act on them the same way on every rank."""
        codes = self.agree(status)
        failed = tuple(r for r, c in enumerate(codes) if c == FAILED)
        degraded = tuple(r for r, c in enumerate(codes) if c == DEGRADED)
        new = [r for r in degraded if r not in self.stats.degraded_ranks]
        if new:
            self.stats.degraded_ranks = tuple(sorted(set(self.stats.degraded_ranks) | set(new)))
            others = [r for r in new if r != self.rank]
            if others:
                warn_user(
                    f"hetsam: the ascent worker of rank(s) {others} failed and degraded to the descent device "
                    f"(on_worker_failure='degrade'); rank {self.rank} carries on with its own worker, in lock-step"
                )
        if not failed:
            return
        self.stats.failed_ranks = failed
        if error is not None:
            if isinstance(error, WorkerFailure):
                raise error
            raise WorkerFailure(f"rank {self.rank}'s ascent job failed: {type(error).__name__}: {error}") from error
        raise WorkerFailure(
            f"the ascent of rank(s) {list(failed)} failed in this step; rank {self.rank} stops in the same step "
            "(on_worker_failure='raise'), so no rank is left waiting in an all-reduce"
        )

    def wrap(self, executor: Executor, params: Sequence[Tensor], *, average_results: bool = False) -> "DistributedExecutor":
        """``executor`` (already bound) wrapped for this rank; ``params``: the trainable parameters."""
        return DistributedExecutor(executor, self, params, average_results=average_results)

    def describe(self) -> dict:
        return {"rank": self.rank, "world": self.world, "sampa_pairs": self.pairs,
                "data_rank": self.data_rank, "data_world": self.data_world, **self.stats.as_dict()}


def common_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """A floating dtype that holds every tensor of ``tensors`` exactly (at least float32)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class DistributedExecutor(Executor):
    """Wraps one rank's executor so that ascent failures are agreed on across the ranks.

    ``submit`` never raises a job failure: it returns a failed future, and the ``wait`` on it
    settles it with the other ranks (:meth:`RankContext.settle`). Inside a step every ``wait``
    all-reduces the rank's status once; outside a step (``state_dict``) it is the inner
    executor's ``wait``. With ``average_results`` (SAMPa with one pair of gradients per rank)
    the job's gradients (aligned with ``params``) are averaged over the ranks. ``inner`` is the
    wrapped executor; it may be bound before or through the wrapper.
    """

    name = "distributed"

    def __init__(self, inner: Executor, ctx: RankContext, params: Sequence[Tensor] = (), *,
                 average_results: bool = False):
        super().__init__(on_worker_failure=inner.on_worker_failure)
        self.inner = inner
        self.ctx = ctx
        self.average_results = average_results
        self.stats = inner.stats
        self._held_back: dict[Future, BaseException] = {}
        self._like: list[Tensor] = list(params)

    def bind(self, model, loss_fn, params, *, device, threads, amp_dtype, placement=None) -> None:
        self._like = list(params)
        self.inner.bind(model, loss_fn, params, device=device, threads=threads, amp_dtype=amp_dtype,
                        placement=placement)

    @property
    def mode(self) -> str | None:
        return getattr(self.inner, "mode", None)

    def submit(self, job) -> Future:
        try:
            return self.inner.submit(job)
        except Exception as exc:  # noqa: BLE001 - settled with the other ranks at wait()
            future: Future = Future()
            future.set_exception(exc)
            self._held_back[future] = exc
            return future

    def wait(self, future: Future):
        error = self._held_back.pop(future, None)
        if not self.ctx.in_step:
            if error is not None:
                raise error
            return self.inner.wait(future)
        result = None
        if error is None:
            try:
                result = self.inner.wait(future)
            except Exception as exc:  # noqa: BLE001 - every rank must hear of it first
                error = exc
        status = FAILED if error is not None else DEGRADED if self.mode == "degraded" else OK
        if self.ctx.fault_agreement:
            self.ctx.settle(status, error)
        elif error is not None:
            raise error
        if self.average_results:
            result = dataclasses.replace(result, grads=self.ctx.average(result.grads, self._like))
        return result

    def close(self) -> None:
        self.inner.close()
        self._held_back.clear()
        super().close()

    def held_tensors(self) -> list[Tensor]:
        return self.inner.held_tensors()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


def agree_plan(model: nn.Module, plan: Plan) -> Plan:
    """Rank 0's ``plan`` on every rank of a DDP ``model`` (any other model: ``plan`` itself).

    ``plan="auto"`` profiles and plans on every rank, and the ranks could choose differently;
    they must all run one plan (the same collectives in the same order), so they take rank 0's.
    The plan travels as its JSON text (no pickle) in two broadcasts.
    """
    if not isinstance(model, DistributedDataParallel):
        return plan
    group = model.process_group
    gloo = "gloo" in str(dist.get_backend(group)).lower()
    device = torch.device("cpu") if gloo else next(p.device for p in model.parameters())
    src = dist.get_global_rank(group, 0)
    text = plan.to_json(indent=None).encode("utf-8") if dist.get_rank(group) == 0 else b""
    size = torch.tensor([len(text)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src, group=group)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if text:
        buf.copy_(torch.frombuffer(bytearray(text), dtype=torch.uint8))
    dist.broadcast(buf, src=src, group=group)
    return Plan.from_json(bytes(buf.cpu().tolist()).decode("utf-8"))


def rank_context(model: nn.Module, plan: Plan, *, sampa_pairs: bool | None = None) -> RankContext | None:
    """The :class:`RankContext` of a DDP-wrapped ``model`` (None for any other model).

    ``sampa_pairs``: None runs ``"sampa"`` across rank pairs (the simulator's and planner's
    model of SAMPa at scale); False gives every rank both gradients (g_y' on its executor).
    """
    if not isinstance(model, DistributedDataParallel):
        if sampa_pairs:
            raise HetsamInputError("sampa_pairs=True needs a DistributedDataParallel model (one process per rank)")
        return None
    if sampa_pairs not in (None, True, False):
        raise HetsamInputError(f"sampa_pairs={sampa_pairs!r} must be None, True or False")
    if plan.strategy in ("async_sam", "sampa") and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        raise HetsamInputError(
            f"strategy {plan.strategy!r} runs its ascent on a replica outside the DDP step, where SyncBatchNorm "
            "would start collectives of its own; use BatchNorm (per-rank statistics, as the per-rank ascent) "
            "or strategy 'sam'/'rst'"
        )
    pairs = plan.strategy == "sampa" and sampa_pairs is not False
    return RankContext(model, pairs=pairs)


def exit_process(code: int = 0) -> None:
    """End a rank's process: barrier, tear down the process group, then leave without
    interpreter finalization.

    torch 2.13's gloo threads sometimes abort finalization ("terminate called without an active
    exception", about 10% of 2-rank runs here, even after ``destroy_process_group``; see
    pytorch/pytorch#179291). Call this once everything is written.
    """
    import sys

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # nobody tears the group down while another rank still uses it
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
