"""Data parallelism over many nodes: ring all-reduce, DDP's gradient buckets, what a rank owns. No torch.

**Layout.** A job runs ``n = N·G`` ranks: ``N`` nodes (``nodes``) with ``G`` ranks each
(``devices_per_node``). Every rank trains a replica of the model on its own share of the data on
its *descent device*; after each backward the gradients are averaged by an all-reduce, as
``torch.nn.parallel.DistributedDataParallel`` does. The profile describes one node (its GPUs
are identical, so listing one is enough). A rank's ascent runs on that rank's own spare
hardware:

- a GPU that no rank trains on, only when the profile lists at least ``2G`` GPUs
  (:meth:`Cluster.spare_gpus`);
- or a pool of CPU cores: the node's ``S`` sockets (``sockets_per_node``, default: the
  profile's) are shared by its ``G`` ranks, ``ceil(G/S)`` ranks per socket, so a rank owns
  ``floor(C / ceil(G/S))`` cores of a ``C``-core socket (:meth:`Cluster.rank_cores`; two
  56-core sockets and 8 GPUs: 14 cores per rank).

**Ring all-reduce** (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters
of workstations", JPDC 2009; the algorithm of NCCL's rings). ``S`` bytes over ``n`` ranks take::

    T(S, n) = 2(n−1)/n · S / B  +  2(n−1) · α        (0 when n = 1)

with ``B`` the bandwidth and ``α`` the latency of one ring step (:func:`ring_allreduce_seconds`).

**Which B and α: the bottleneck assumption.** A ring step moves one chunk over every hop at
once, so it lasts as long as its slowest hop (:meth:`Cluster.ring_link`):

- ``N = 1``: every hop is inside the node: the intra-node link (NVLink, or PCIe through the
  host when the GPUs share no peer link).
- ``N > 1``: the ring crosses node boundaries. NCCL runs one ring per network adapter, and a
  node's rings together reach its *aggregate* network bandwidth (``inter``: adapters × adapter
  bandwidth, per direction; what nccl-tests calls the bus bandwidth across nodes). So
  ``B = min(intra, inter)`` and ``α = max`` of the two latencies (``B = inter`` when
  ``G = 1``). A hierarchical (reduce in the node, then across nodes) schedule is not modelled.
- The latency term grows as ``2(n−1)·α``: at 512 ranks and α = 5 µs one all-reduce costs 5 ms
  of latency alone. NCCL switches to trees (O(log n) latency) for small messages at that
  scale, so the ring model prices small models on many ranks pessimistically.

Where the numbers come from, first match wins: explicit overrides (``intra_node_bandwidth``,
``inter_node_bandwidth`` in bytes/s, latencies in seconds); for a GPU with a spec-table key,
its ``peer_link`` when it joins all ``G`` GPUs of a node (``peer_link_gpus`` in
``hetsam/data/cluster_networks.json``), else its ``host_link`` (PCIe, latency paid twice);
the profile's own GPU–GPU, GPU–CPU or socket links; the network of the system the GPU ships in
(``cluster_networks.json``: DGX H100 has one 400 Gb/s NDR adapter per GPU, DGX A100 one
200 Gb/s HDR per GPU; any other node one 100 GbE adapter). :meth:`Cluster.describe` says which.

**DDP buckets** (Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel
Training", VLDB 2020). Gradients are grouped, in the order the backward produces them, into
buckets of ``bucket_cap_mb`` = 25 MiB; the first bucket is 1 MiB (DDP's
``_DEFAULT_FIRST_BUCKET_BYTES``). A bucket's all-reduce starts as soon as the backward has
produced it *and* the previous all-reduce is done (they run one after the other on the
network); the update waits for the last one. Assumptions: the backward takes
``β = 2/3`` of the forward+backward time ``t`` (``backward_fraction``) and produces the
``P`` gradient bytes uniformly over it. With ``S_k`` the bytes in buckets 1..k, bucket k is
ready ``r_k = (1−β)·t + β·t·S_k/P`` after the step's compute starts, its all-reduce takes
``a_k = T(s_k, n)``, and (:func:`overlapped_allreduce_end`, :meth:`Cluster.step_seconds`)::

    e_0 = 0,   e_k = max(r_k, e_{k−1}) + a_k,   step = max(t, e_K) + u

with ``u`` the optimizer update. One bucket is not overlapped at all: ``t + T(P, n) + u``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hetsam.errors import HetsamInputError

__all__ = [
    "NetworkLink",
    "ring_allreduce_seconds",
    "ddp_buckets",
    "overlapped_allreduce_end",
    "network_table",
    "MIB",
    "DDP_BUCKET_CAP_MB",
    "DDP_FIRST_BUCKET_MB",
    "BACKWARD_FRACTION",
]

MIB = 1024 * 1024
DDP_BUCKET_CAP_MB = 25.0  # torch DDP's bucket_cap_mb default (MiB)
DDP_FIRST_BUCKET_MB = 1.0  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES = 1 MiB
BACKWARD_FRACTION = 2.0 / 3.0  # share of forward+backward spent in the backward (assumed)

_TABLE = Path(__file__).resolve().parents[1] / "data" / "cluster_networks.json"


def ring_allreduce_seconds(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """``2(n−1)/n · nbytes / bandwidth + 2(n−1) · latency``; 0 for one rank."""
    if ranks <= 1:
        return 0.0
    return 2.0 * (ranks - 1) / ranks * nbytes / bandwidth + 2.0 * (ranks - 1) * latency


def ddp_buckets(nbytes: int, bucket_cap_bytes: float, first_bucket_bytes: float) -> tuple[int, ...]:
    """Bucket sizes in backward order: ``first`` bytes, then ``cap`` bytes each, the rest last."""
    sizes: list[int] = []
    left = int(nbytes)
    cap = max(1, int(first_bucket_bytes))
    while left > 0:
        s = min(cap, left)
        sizes.append(s)
        left -= s
        cap = max(1, int(bucket_cap_bytes))
    return tuple(sizes) or (0,)


def overlapped_allreduce_end(ready: list[float], seconds: list[float]) -> float:
    """``e_K`` of the recursion ``e_k = max(r_k, e_{k−1}) + a_k`` (``e_0 = 0``)."""
    end = 0.0
    for r, a in zip(ready, seconds):
        end = max(r, end) + a
    return end


@lru_cache(maxsize=2)
def _load_table(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HetsamInputError(f"cannot read the network table {path}: {exc}") from None


def network_table(path=None) -> dict:
    """The parsed ``cluster_networks.json`` (networks, per-GPU node defaults, the default node)."""
    return _load_table(str(path or _TABLE))


@dataclass(frozen=True)
class NetworkLink:
    """Bandwidth (bytes/s, per direction) and latency of one ring step, and where they came from."""

    name: str
    bytes_per_second: float
    latency_seconds: float
    source: str

    def to_dict(self) -> dict:
        return {"name": self.name, "bytes_per_second": self.bytes_per_second,
                "latency_seconds": self.latency_seconds, "source": self.source}
