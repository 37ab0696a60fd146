"""A data-parallel job: ``nodes`` × ``devices_per_node`` ranks, what each rank owns, its links,
and the time of a DDP step (``hetsam.cost.network`` has the ring and bucket model). No torch."""

from __future__ import annotations

import math

from hetsam import _checks
from hetsam.cost.links import default_inter, default_intra
from hetsam.cost.network import (
    BACKWARD_FRACTION,
    DDP_BUCKET_CAP_MB,
    DDP_FIRST_BUCKET_MB,
    MIB,
    NetworkLink,
    ddp_buckets,
    overlapped_allreduce_end,
    ring_allreduce_seconds,
)
from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import format_cpulist, parse_device

__all__ = ["Cluster", "MAX_RANKS", "MAX_BUCKETS"]

MAX_RANKS = 1 << 20  # no job plans more ranks than this
MAX_BUCKETS = 10_000  # DDP buckets of one gradient: more would be millions of tasks a simulation
_MIN_BUCKET_MB = 1.0 / 1024  # 1 KiB: smaller DDP buckets would make millions of all-reduces per step


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
        self.nodes = _checks.integer(nodes, "nodes", low=1, high=MAX_RANKS)
        self.devices_per_node = _checks.integer(devices_per_node, "devices_per_node", low=1, high=1024)
        if self.nodes * self.devices_per_node > MAX_RANKS:
            raise HetsamInputError(f"{self.nodes} nodes x {self.devices_per_node} ranks is over {MAX_RANKS:,} ranks; plan fewer")
        self.sockets_per_node = _checks.optional(_checks.integer, sockets_per_node, "sockets_per_node", low=1, high=64)
        bandwidth = dict(low=1e6, high=1e14, hint="bytes per second (1 MB/s to 100 TB/s)")
        latency = dict(low=0.0, high=1.0, hint="seconds per ring step (at most 1 s)")
        self._intra_bw = _checks.optional(_checks.number, intra_node_bandwidth, "intra_node_bandwidth", **bandwidth)
        self._inter_bw = _checks.optional(_checks.number, inter_node_bandwidth, "inter_node_bandwidth", **bandwidth)
        self._intra_lat = _checks.optional(_checks.number, intra_node_latency, "intra_node_latency", **latency)
        self._inter_lat = _checks.optional(_checks.number, inter_node_latency, "inter_node_latency", **latency)
        mib = dict(low=_MIN_BUCKET_MB, high=1e6, hint="MiB (1 KiB to 1 TiB)")
        self.bucket_cap_bytes = _checks.number(bucket_cap_mb, "bucket_cap_mb", **mib) * MIB
        self.first_bucket_bytes = _checks.number(first_bucket_mb, "first_bucket_mb", **mib) * MIB
        beta = _checks.number(backward_fraction, "backward_fraction", low=0.0, high=1.0, low_open=True)
        self.backward_fraction = beta
        self._links: dict[tuple[str, str], NetworkLink] = {}

    # ---- layout ---------------------------------------------------------------------------
    @property
    def ranks(self) -> int:
        """n = N·G."""
        return self.nodes * self.devices_per_node

    def _sockets(self) -> list[str]:
        return [d.id for d in self.cm.profile.devices if kind_of(d.id).pools and parse_device(d.id).positions is None]

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
        gpus = [d for d in self.cm.profile.devices if kind_of(d.id).accelerator]
        return len(gpus) >= 2 * self.devices_per_node

    def ascent_devices(self, descent) -> list[str]:
        """Devices besides ``descent`` one rank may run its ascent on (with a link to it): any
        with one rank per node; else the rank's CPU pool and, if there are spares, GPUs."""
        cm = self.cm
        ids = list(cm.device_ids)
        if self.ranks > 1 and self.devices_per_node > 1:
            pool = self.rank_pool()
            ids = [d for d in ids if cm.accelerator(d) and self.spare_gpus()] + ([cm.resolve(pool)] if pool else [])
        return [d for d in ids if not cm.shares_cores(descent, d) and cm.has_link(descent, d)]

    def ownership_notes(self, roles: dict[str, str]) -> list[str]:
        """Notes for devices a rank would not own alone (``roles``: role -> device id)."""
        if self.ranks == 1 or self.devices_per_node == 1:
            return []
        notes = []
        share = self.rank_cores()
        descent = roles.get("descent")
        for role, dev in roles.items():
            kind = kind_of(dev)
            if kind.pools and share is not None:
                cores = self.cm.cores(dev) or 1
                if cores > share[1]:
                    notes.append(f"{role} device {dev} has {cores} cores but each of the {self.devices_per_node} ranks "
                                 f"of a node owns {share[1]}; the prediction assumes it is this rank's alone")
            elif kind.accelerator and role != "descent" and dev != descent and not self.spare_gpus():
                notes.append(f"{role} device {dev} is another rank's descent GPU ({self.devices_per_node} ranks per node, "
                             f"the profile lists fewer than {2 * self.devices_per_node} GPUs); the prediction assumes it is free")
        return notes

    # ---- links ----------------------------------------------------------------------------
    def intra_link(self, device) -> NetworkLink:
        """The link between two ranks of one node whose descent devices are like ``device``."""
        return self._link("intra", device, self._intra_bw, self._intra_lat, lambda d: default_intra(self.cm, d, self.devices_per_node))

    def inter_link(self, device) -> NetworkLink:
        """The node's aggregate network to the other nodes (per direction)."""
        return self._link("inter", device, self._inter_bw, self._inter_lat, lambda d: default_inter(self.cm, d, self.devices_per_node))

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
        """DDP's bucket sizes for ``nbytes`` of gradients (at most :data:`MAX_BUCKETS` buckets)."""
        if nbytes / self.bucket_cap_bytes > MAX_BUCKETS:
            raise HetsamInputError(f"bucket_cap_mb={self.bucket_cap_bytes / MIB:g} makes over {MAX_BUCKETS:,} DDP buckets of "
                                   f"a {nbytes / 1e6:.3g} MB gradient; give a larger bucket size (DDP's default is 25)")
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
