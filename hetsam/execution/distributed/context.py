"""One rank's view of a data-parallel AutoSAM run; see the package docstring for the semantics."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hetsam._warnings import warn_user
from hetsam.errors import HetsamInputError, WorkerFailure
from hetsam.execution.batches import leaves
from hetsam.execution.distributed.flat import common_dtype, flatten, unflatten
from hetsam.execution.distributed.node import node_layout

__all__ = ["RankContext", "DistributedStats", "rank_context", "agree_plan", "unwrap", "exit_process",
           "expect_wrapper", "framework_wrapped", "check_replica_passes", "localize",
           "OK", "DEGRADED", "FAILED"]

OK, DEGRADED, FAILED = 0, 1, 2  # a rank's ascent status in one step


def unwrap(model: nn.Module) -> nn.Module:
    """The module a :class:`~torch.nn.parallel.DistributedDataParallel` wraps (else ``model``)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


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

    Built by :func:`rank_context` at AutoSAM's construction; AutoSAM keeps it as
    ``opt.distributed``. ``model``: the DDP-wrapped model (raw loop), or the bare module a
    framework wraps in its own DDP (``group``: its process group, default the world), in which
    case :meth:`attach` gives it the wrapper once the framework has built it (the Trainer).
    ``pairs``: SAMPa runs across rank pairs. ``pinned``: the cores this rank's plan pins (for
    :func:`~hetsam.execution.distributed.node.overlap_warning`).
    """

    def __init__(self, model: nn.Module, *, pairs: bool = False, group=None, pinned: tuple[int, ...] = ()):
        if not dist.is_available() or not dist.is_initialized():
            raise HetsamInputError("a DistributedDataParallel model needs torch.distributed.init_process_group() first")
        ddp = model if isinstance(model, DistributedDataParallel) else None
        self.ddp = ddp
        self.module = unwrap(model)
        self.group = ddp.process_group if ddp is not None else group if group is not None else dist.group.WORLD
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
        self.layout = node_layout(self.control_group, self.rank, pinned)  # one all-gather, at construction
        self.cpus: tuple[int, ...] = ()  # the share plan="auto" pinned this process to (node.pin_to_share)
        self._stepping = False
        # for measuring the agreement's cost only: without it a failure on one rank leaves the
        # others waiting in DDP's next all-reduce
        self.fault_agreement = True

    def attach(self, ddp: DistributedDataParallel) -> None:
        """The framework's DDP wrapper of :attr:`module` (its descent goes through it)."""
        if unwrap(ddp) is not self.module:
            raise HetsamInputError("the framework's DistributedDataParallel wraps another module than AutoSAM's model; "
                                   "build AutoSAM on the model the Trainer trains")
        self.ddp = ddp

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
        tensors = [t for t in leaves(batch) if t.numel()]
        mine = torch.tensor([float(sum(t.double().sum() for t in tensors)),
                             float(sum(t.double().square().sum() for t in tensors))], dtype=torch.float64)
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

    def describe(self) -> dict:
        return {"rank": self.rank, "world": self.world, "sampa_pairs": self.pairs,
                "data_rank": self.data_rank, "data_world": self.data_world, "local_rank": self.layout.local_rank,
                "local_world": self.layout.local_world, "cpus": list(self.cpus), **self.stats.as_dict()}


def agree_plan(ranks, plan):
    """Rank 0's ``plan`` on every rank (``ranks``: a :class:`RankContext` or a DDP model; anything
    else: ``plan`` itself).

    ``plan="auto"`` profiles and plans on every rank, and the ranks could choose differently;
    they must all run one plan (the same collectives in the same order), so they take rank 0's.
    The plan travels as its JSON text (no pickle) in two broadcasts on the gloo control group.
    """
    if isinstance(ranks, DistributedDataParallel):
        group = ranks.process_group
        gloo = "gloo" in str(dist.get_backend(group)).lower()
        device = torch.device("cpu") if gloo else next(p.device for p in ranks.parameters())
    elif isinstance(ranks, RankContext):
        group, device = ranks.control_group, torch.device("cpu")
    else:
        return plan
    src = dist.get_global_rank(group, 0)
    text = plan.to_json(indent=None).encode("utf-8") if dist.get_rank(group) == 0 else b""
    size = torch.tensor([len(text)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src, group=group)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if text:
        buf.copy_(torch.frombuffer(bytearray(text), dtype=torch.uint8))
    dist.broadcast(buf, src=src, group=group)
    return type(plan).from_json(bytes(buf.cpu().tolist()).decode("utf-8"))


def localize(plan, ctx: RankContext):
    """Rank 0's agreed ``plan`` on this rank's own GPU: a GPU descent device (the model's, which the
    planner keeps) becomes this rank's model's device, as does an ascent on that same GPU. A plan
    whose ascent runs on another GPU (a spare one) is refused on every rank alike: which spare GPU of
    the node belongs to which rank is not mapped. CPU pools need nothing here: each rank's affinity
    is its own share of the node (:func:`~hetsam.execution.distributed.node.pin_to_share`)."""
    if ctx.device.type == "cpu":
        return plan
    from hetsam.hardware.kinds import torch_device_name

    ascent = plan.ascent_device
    if ascent is not None and ascent != plan.descent_device and not ascent.startswith("cpu"):
        raise HetsamInputError(
            f"plan='auto' under DDP chose a spare GPU ({ascent}) for the ascent, and which spare GPU belongs to which "
            "rank of the node is not mapped; give each rank its own Plan (ascent_device=...), or restrict the planner "
            "with planner_options={'devices': [...]}")
    own = torch_device_name(ctx.device)
    return dataclasses.replace(plan, descent_device=own, ascent_device=own if ascent == plan.descent_device else ascent)


_FRAMEWORK: weakref.WeakSet = weakref.WeakSet()  # modules a framework trains under its own DDP wrapper


def expect_wrapper(module: nn.Module) -> None:
    """Mark ``module`` as trained by a framework that wraps it in its own DDP (Lightning, the
    Trainer): an AutoSAM built on it, or on one of its submodules, while a process group of
    more than one rank exists takes its rank context from that group (:func:`rank_context`)."""
    _FRAMEWORK.add(module)


def framework_wrapped(model: nn.Module) -> bool:
    """Whether ``model`` is, or lies inside, a module marked by :func:`expect_wrapper`."""
    return any(model is m or any(model is s for s in m.modules()) for m in list(_FRAMEWORK))


def rank_context(model: nn.Module, *, sampa_pairs: bool | None = None, rank_pairs: bool = False,
                 pinned: tuple[int, ...] | Callable[[], tuple[int, ...]] = ()) -> RankContext | None:
    """The :class:`RankContext` of a DDP-wrapped ``model``, or of a bare ``model`` a framework
    wraps (:func:`expect_wrapper`) in a process group of more than one rank; None otherwise.

    ``rank_pairs``: the strategy, known at construction, runs across rank pairs at scale.
    ``sampa_pairs``: None runs such a strategy across rank pairs (the simulator's and planner's
    model at scale); False gives every rank both gradients (the second on its executor).
    ``pinned``: the cores this rank's plan pins (checked against the node's other ranks), or a
    function returning them (called only under DDP: it reads sysfs).
    """
    ddp = isinstance(model, DistributedDataParallel)
    framework = not ddp and framework_wrapped(model) and dist.is_available() and dist.is_initialized() \
        and dist.get_world_size() > 1
    if not ddp and not framework:
        if sampa_pairs:
            raise HetsamInputError("sampa_pairs=True needs a DistributedDataParallel model (one process per rank)")
        return None
    if sampa_pairs not in (None, True, False):
        raise HetsamInputError(f"sampa_pairs={sampa_pairs!r} must be None, True or False")
    return RankContext(model, pairs=rank_pairs and sampa_pairs is not False, pinned=pinned() if callable(pinned) else pinned)


def check_replica_passes(ctx: RankContext | None, plan) -> None:
    """Refuse SyncBatchNorm with a strategy whose ascent runs on a replica outside the DDP step."""
    if ctx is not None and plan.spec.uses_executor and any(isinstance(m, nn.SyncBatchNorm) for m in ctx.module.modules()):
        raise HetsamInputError(
            f"strategy {plan.strategy!r} runs its ascent on a replica outside the DDP step, where SyncBatchNorm "
            "would start collectives of its own; use BatchNorm (per-rank statistics, as the per-rank ascent) "
            "or strategy 'sam'/'rst'"
        )


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
