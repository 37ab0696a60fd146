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
  --devices-per-node G`` to plan for the whole job. The rank context, and so the data shard
  (``data_rank``/``data_world``), exists at construction and never changes: a SAMPa the planner
  chooses later runs with one pair of gradients per rank (``sampa_pairs=False``), and
  ``sampa_pairs=True`` with ``plan="auto"`` is refused (use ``plan="sampa"``).

Cores per rank (:mod:`hetsam.execution.distributed.node`)
-----------------------------------------------------------
Launchers give every rank of a node the same CPU affinity. At construction the ranks all-gather
(host, affinity, pinned cores) once; the local rank and local world size are ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` when the launcher sets both, else the rank's index among the ranks of its
host. When the planner chooses the devices (``plan="auto"``, or a strategy name with a profile),
each rank's process is pinned to its own share of the node before it profiles: its whole affinity
if no other rank of the node shares any of it, else the local_rank-th of local_world equal,
contiguous shares (and at most that many intra-op threads). A plan's CPU pool names positions
among the usable cores, so the one plan every rank runs names each rank's own cores. A plan the
user gives is not remapped (its pools may already be per rank, e.g. ``cpu:0[{local_rank}]``): if
its pools meet another rank's on the same node, every rank warns in one line.

Frameworks (Lightning, the Hugging Face Trainer)
------------------------------------------------
They build the optimizer on the bare module and wrap it in their own DDP. The integrations mark
that module (:func:`expect_wrapper`); an AutoSAM built on it, or on a submodule, while a process
group of more than one rank exists takes its rank context from that group at construction. The
descent then goes through the framework's wrapper: Lightning's closure (automatic optimization),
or the Trainer's DDP model handed over by :meth:`RankContext.attach` before the first step. The
ascent uses the bare module, as in the raw loop.
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

from hetsam.execution.distributed.context import (  # noqa: E402
    DEGRADED,
    FAILED,
    OK,
    DistributedStats,
    RankContext,
    agree_plan,
    check_replica_passes,
    exit_process,
    expect_wrapper,
    framework_wrapped,
    rank_context,
    unwrap,
)
from hetsam.execution.distributed.flat import common_dtype, flatten, unflatten  # noqa: E402

__all__ = ["RankContext", "DistributedStats", "rank_context", "agree_plan", "unwrap", "flatten", "unflatten",
           "common_dtype", "exit_process", "expect_wrapper", "framework_wrapped", "check_replica_passes", "OK",
           "DEGRADED", "FAILED"]
