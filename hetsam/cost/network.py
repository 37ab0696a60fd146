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
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from hetsam.hardware.names import format_cpulist, parse_device
from hetsam.errors import HetsamInputError

__all__ = [
    "NetworkLink",
    "Cluster",
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


def _count(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HetsamInputError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def _positive(value, name: str, unit: str, *, allow_zero: bool = False, default=None):
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise HetsamInputError(f"{name}={value!r} must be a finite number {bound} ({unit})")
    return float(value)


class Cluster:
    """``nodes`` × ``devices_per_node`` data-parallel ranks on the machine a cost model describes.

    Args:
        cm: the :class:`~hetsam.cost.model.CostModel` of one node.
        nodes: N, the number of nodes (>= 1).
        devices_per_node: G, ranks (descent devices) per node (>= 1).
        sockets_per_node: S, CPU sockets per node (default: the sockets the profile lists).
        intra_node_bandwidth, inter_node_bandwidth: bytes/s per direction; the inter-node one
            is the node's aggregate over its adapters (see the module docstring).
        intra_node_latency, inter_node_latency: seconds per ring step (>= 0).
        bucket_cap_mb, first_bucket_mb: DDP's bucket sizes in MiB (defaults 25 and 1).
        backward_fraction: β, the backward's share of a forward+backward (default 2/3).
    """

    def __init__(self, cm, nodes: int = 1, devices_per_node: int = 1, *, sockets_per_node: int | None = None,
                 intra_node_bandwidth: float | None = None, inter_node_bandwidth: float | None = None,
                 intra_node_latency: float | None = None, inter_node_latency: float | None = None,
                 bucket_cap_mb: float = DDP_BUCKET_CAP_MB, first_bucket_mb: float = DDP_FIRST_BUCKET_MB,
                 backward_fraction: float = BACKWARD_FRACTION):
        self.cm = cm
        self.nodes = _count(nodes, "nodes")
        self.devices_per_node = _count(devices_per_node, "devices_per_node")
        self.sockets_per_node = None if sockets_per_node is None else _count(sockets_per_node, "sockets_per_node")
        self._intra_bw = _positive(intra_node_bandwidth, "intra_node_bandwidth", "bytes/s")
        self._inter_bw = _positive(inter_node_bandwidth, "inter_node_bandwidth", "bytes/s")
        self._intra_lat = _positive(intra_node_latency, "intra_node_latency", "seconds", allow_zero=True)
        self._inter_lat = _positive(inter_node_latency, "inter_node_latency", "seconds", allow_zero=True)
        self.bucket_cap_bytes = _positive(bucket_cap_mb, "bucket_cap_mb", "MiB", default=DDP_BUCKET_CAP_MB) * MIB
        self.first_bucket_bytes = _positive(first_bucket_mb, "first_bucket_mb", "MiB", default=DDP_FIRST_BUCKET_MB) * MIB
        beta = _positive(backward_fraction, "backward_fraction", "share of forward+backward", default=BACKWARD_FRACTION)
        if beta > 1:
            raise HetsamInputError(f"backward_fraction={backward_fraction!r} must be in (0, 1]")
        self.backward_fraction = beta
        self._links: dict[tuple[str, str], NetworkLink] = {}

    # ---- layout ---------------------------------------------------------------------------
    @property
    def ranks(self) -> int:
        """n = N·G."""
        return self.nodes * self.devices_per_node

    def _sockets(self) -> list[str]:
        return [d.id for d in self.cm.profile.devices if d.kind == "cpu" and parse_device(d.id).positions is None]

    def rank_cores(self) -> tuple[str, int] | None:
        """(socket, k): the socket the representative rank's CPU pool is on and its k cores."""
        sockets = self._sockets()
        if not sockets:
            return None
        s = self.sockets_per_node or len(sockets)
        per_socket = -(-self.devices_per_node // s)  # ceil(G / S)
        return sockets[0], (self.cm.cores(sockets[0]) or 1) // per_socket

    def rank_pool(self) -> str | None:
        """The representative rank's CPU pool as a device name: ``cpu:0[0-13]`` (or the socket)."""
        share = self.rank_cores()
        if share is None or share[1] < 1:
            return None
        socket, k = share
        return socket if k == (self.cm.cores(socket) or 1) else f"{socket}[{format_cpulist(range(k))}]"

    def spare_gpus(self) -> bool:
        """Whether each rank can have a GPU of its own for the ascent (the profile lists >= 2G GPUs)."""
        gpus = [d for d in self.cm.profile.devices if d.kind == "gpu"]
        return len(gpus) >= 2 * self.devices_per_node

    def ascent_devices(self, descent) -> list[str]:
        """Devices besides ``descent`` one rank may run its ascent on (with a link to it): any
        with one rank per node; else the rank's CPU pool and, if there are spares, GPUs."""
        cm = self.cm
        ids = list(cm.device_ids)
        if self.ranks > 1 and self.devices_per_node > 1:
            pool = self.rank_pool()
            ids = [d for d in ids if cm.kind(d) == "gpu" and self.spare_gpus()] + ([cm.resolve(pool)] if pool else [])
        return [d for d in ids if not cm.shares_cores(descent, d) and cm.has_link(descent, d)]

    def ownership_notes(self, roles: dict[str, str]) -> list[str]:
        """Notes for devices a rank would not own alone (``roles``: role -> device id)."""
        if self.ranks == 1 or self.devices_per_node == 1:
            return []
        notes = []
        share = self.rank_cores()
        descent = roles.get("descent")
        for role, dev in roles.items():
            name = parse_device(dev)
            if name.kind == "cpu" and share is not None:
                cores = self.cm.cores(dev) or 1
                if cores > share[1]:
                    notes.append(f"{role} device {dev} has {cores} cores but each of the {self.devices_per_node} ranks "
                                 f"of a node owns {share[1]}; the prediction assumes it is this rank's alone")
            elif name.kind == "gpu" and role != "descent" and dev != descent and not self.spare_gpus():
                notes.append(f"{role} device {dev} is another rank's descent GPU ({self.devices_per_node} ranks per node, "
                             f"the profile lists fewer than {2 * self.devices_per_node} GPUs); the prediction assumes it is free")
        return notes

    # ---- links ----------------------------------------------------------------------------
    def intra_link(self, device) -> NetworkLink:
        """The link between two ranks of one node whose descent devices are like ``device``."""
        return self._link("intra", device, self._intra_bw, self._intra_lat, self._default_intra)

    def inter_link(self, device) -> NetworkLink:
        """The node's aggregate network to the other nodes (per direction)."""
        return self._link("inter", device, self._inter_bw, self._inter_lat, self._default_inter)

    def _link(self, where: str, device, bandwidth, latency, default) -> NetworkLink:
        """The default link for ``device``, with the given bandwidth and latency overriding it."""
        dev = self.cm.resolve(device)
        key = (where, dev)
        if key not in self._links:
            link = None if bandwidth is not None and latency is not None else default(dev)
            if bandwidth is None and link is None:
                option = f"{where}_node_bandwidth"
                raise HetsamInputError(f"the profile and the spec table give no {where}-node bandwidth for {dev}; pass "
                                       f"{option} (--{option.replace('_', '-')} GBps on the command line)")
            if bandwidth is not None or latency is not None:
                given = " and ".join(w for w, v in (("bandwidth", bandwidth), ("latency", latency)) if v is not None)
                link = NetworkLink(
                    link.name if bandwidth is None else f"{where}-node link",
                    bandwidth if bandwidth is not None else link.bytes_per_second,
                    latency if latency is not None else (link.latency_seconds if link is not None else 0.0),
                    f"{given} given" + (f"; otherwise {link.source}" if link is not None else ""))
            self._links[key] = link
        return self._links[key]

    def ring_link(self, device, ranks: int | None = None) -> NetworkLink:
        """The bottleneck link of a ring over ``ranks`` (default n) spread over the N nodes."""
        n = self.ranks if ranks is None else ranks
        if n <= 1:
            return NetworkLink("none", math.inf, 0.0, "one rank: no all-reduce")
        if self.nodes == 1:
            return self.intra_link(device)
        inter = self.inter_link(device)
        if n <= self.nodes:  # one rank per node: no intra-node hop
            return inter
        intra = self.intra_link(device)
        slow = intra if intra.bytes_per_second < inter.bytes_per_second else inter
        return NetworkLink(f"bottleneck of {intra.name} and {inter.name}", slow.bytes_per_second,
                           max(intra.latency_seconds, inter.latency_seconds),
                           f"min bandwidth ({slow.name}), max latency of the two")

    def allreduce_seconds(self, device, nbytes: float, ranks: int | None = None) -> float:
        """``T(nbytes, n)`` on :meth:`ring_link`."""
        n = self.ranks if ranks is None else ranks
        if n <= 1:
            return 0.0
        link = self.ring_link(device, n)
        return ring_allreduce_seconds(nbytes, n, link.bytes_per_second, link.latency_seconds)

    # ---- DDP ------------------------------------------------------------------------------
    def buckets(self, nbytes: int) -> tuple[int, ...]:
        return ddp_buckets(nbytes, self.bucket_cap_bytes, self.first_bucket_bytes)

    def bucket_schedule(self, device, nbytes: int, ranks: int | None = None) -> tuple[list[float], list[float]]:
        """(cumulative fractions ``S_k/P`` of the gradient produced when bucket k is ready,
        all-reduce seconds ``a_k`` of each bucket)."""
        sizes = self.buckets(nbytes)
        total = float(sum(sizes)) or 1.0
        fractions, acc = [], 0
        for s in sizes:
            acc += s
            fractions.append(acc / total)
        fractions[-1] = 1.0
        return fractions, [self.allreduce_seconds(device, s, ranks) for s in sizes]

    def ready_times(self, compute: float, fractions: list[float]) -> list[float]:
        """``r_k = (1−β)·t + β·t·S_k/P`` for a forward+backward of ``compute`` seconds."""
        fwd, bwd = compute * (1.0 - self.backward_fraction), compute * self.backward_fraction
        return [fwd + f * bwd for f in fractions]

    def step_seconds(self, device, compute: float, update: float, nbytes: int, *,
                     partner_compute: float | None = None, ranks: int | None = None) -> float:
        """Closed-form step ``max(t, e_K) + u`` (module docstring). ``partner_compute``: the
        other rank of a SAMPa pair, whose buckets must be ready too (its ``t`` joins the max)."""
        n = self.ranks if ranks is None else ranks
        if n <= 1:
            return compute + update
        fractions, seconds = self.bucket_schedule(device, nbytes, n)
        ready = self.ready_times(compute, fractions)
        last = compute
        if partner_compute is not None:
            ready = [max(a, b) for a, b in zip(ready, self.ready_times(partner_compute, fractions))]
            last = max(compute, partner_compute)
        return max(last, overlapped_allreduce_end(ready, seconds)) + update

    # ---- reports --------------------------------------------------------------------------
    def describe(self, device, nbytes: int, ranks: int | None = None) -> str:
        n = self.ranks if ranks is None else ranks
        if n <= 1:
            return "one rank: no all-reduce"
        link = self.ring_link(device, n)
        sizes = self.buckets(nbytes)
        return (f"{self.nodes} node(s) x {self.devices_per_node} rank(s) = {self.ranks} ranks; ring all-reduce over {n} ranks "
                f"on {link.name} ({link.bytes_per_second / 1e9:g} GB/s, {link.latency_seconds * 1e6:g} µs per step; "
                f"{link.source}); {nbytes / 1e6:.3g} MB of gradients in {len(sizes)} DDP bucket(s), "
                f"{self.allreduce_seconds(device, nbytes, n) * 1e3:.3g} ms if reduced at once")

    def to_dict(self, device, nbytes: int, ranks: int | None = None) -> dict:
        n = self.ranks if ranks is None else ranks
        d = {"nodes": self.nodes, "devices_per_node": self.devices_per_node, "ranks": self.ranks,
             "allreduce_ranks": n, "backward_fraction": self.backward_fraction,
             "bucket_cap_bytes": self.bucket_cap_bytes, "first_bucket_bytes": self.first_bucket_bytes}
        share = self.rank_cores()
        if share is not None:
            d["rank_cpu_pool"] = {"socket": share[0], "cores": share[1]}
        if n > 1:
            fractions, seconds = self.bucket_schedule(device, nbytes, n)
            d.update({"ring_link": self.ring_link(device, n).to_dict(), "bucket_bytes": list(self.buckets(nbytes)),
                      "bucket_allreduce_seconds": seconds,
                      "allreduce_seconds": self.allreduce_seconds(device, nbytes, n)})
        return d

    # ---- defaults -------------------------------------------------------------------------
    def _spec(self, dev: str):
        key = self.cm.device(dev).spec
        if not key:
            return None
        from hetsam.cost.specscale import get_spec

        try:
            return get_spec(key)
        except HetsamInputError:
            return None

    def _node(self, dev: str) -> dict:
        table = network_table()
        spec = self._spec(dev) if self.cm.kind(dev) == "gpu" else None
        return table["nodes"].get(spec.key, table["default_node"]) if spec is not None else table["default_node"]

    def _default_intra(self, dev: str) -> NetworkLink | None:
        G = self.devices_per_node
        if self.cm.kind(dev) == "gpu":
            spec = self._spec(dev)
            if spec is not None:
                node = self._node(dev)
                if spec.peer_link and G <= int(node.get("peer_link_gpus", 1)):
                    pl = spec.peer_link
                    return NetworkLink(pl["name"], float(pl["bytes_per_second"]), float(pl["latency_seconds"]),
                                       f"spec table: peer link of {spec.key}")
                if spec.host_link:
                    hl = spec.host_link
                    return NetworkLink(f"{hl['name']} through the host", float(hl["bytes_per_second"]),
                                       2 * float(hl["latency_seconds"]), f"spec table: host link of {spec.key}, latency paid twice")
            for link in self.cm.profile.links:  # measured GPU-GPU, then GPU-host links
                kinds = {parse_device(link.src).kind, parse_device(link.dst).kind}
                if kinds == {"gpu"} and link.src != link.dst:
                    return NetworkLink(f"{link.src}->{link.dst}", link.bytes_per_second, link.latency_seconds,
                                       "profile: GPU-GPU link")
            for link in self.cm.profile.links:
                if {parse_device(link.src).kind, parse_device(link.dst).kind} == {"gpu", "cpu"}:
                    return NetworkLink(f"{link.src}->{link.dst} through the host", link.bytes_per_second,
                                       2 * link.latency_seconds, "profile: GPU-host link, latency paid twice")
            return None
        socket = parse_device(dev).socket_id
        for link in self.cm.profile.links:
            if parse_device(link.src).socket_id == socket and parse_device(link.dst).socket_id == socket:
                return NetworkLink(f"shared memory of {socket}", link.bytes_per_second, link.latency_seconds,
                                   "profile: socket copy link")
        return None

    def _default_inter(self, dev: str) -> NetworkLink:
        table = network_table()
        node = self._node(dev)
        net = table["networks"][node["inter_node"]]
        if "adapters_per_gpu" in node:
            adapters = int(node["adapters_per_gpu"]) * self.devices_per_node
        else:
            adapters = int(node.get("adapters_per_node", 1))
        spec = self._spec(dev) if self.cm.kind(dev) == "gpu" else None
        where = f"{spec.key} node" if spec is not None and spec.key in table["nodes"] else "default node"
        return NetworkLink(f"{adapters}x {net['name']}", adapters * float(net["bytes_per_second"]),
                           float(net["latency_seconds"]), f"network table: {where} ({node['source']})")
