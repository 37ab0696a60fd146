"""Command-line options for a data-parallel job over many nodes, shared by ``plan`` and ``simulate``.

Bandwidths are given in GB/s (10^9 bytes/s) and latencies in microseconds on the command line;
``hetsam.cost.cluster.Cluster`` takes bytes/s and seconds.
"""

from __future__ import annotations

import math

__all__ = ["add_cluster_arguments", "cluster_kwargs", "format_cluster"]

_GB = 1e9
_US = 1e-6


def add_cluster_arguments(p) -> None:
    g = p.add_argument_group("many nodes (data-parallel descent with DDP's bucketed ring all-reduce; see hetsam.cost.network)")
    g.add_argument("--nodes", type=int, default=1, help="N, the number of nodes (default 1)")
    g.add_argument("--devices-per-node", type=int, default=1,
                   help="G, ranks (descent devices) per node; each rank's ascent gets its share of the node's CPU cores (default 1)")
    g.add_argument("--sockets-per-node", type=int, default=None,
                   help="CPU sockets per node, shared by its G ranks (default: the profile's)")
    g.add_argument("--intra-node-bandwidth", type=float, default=None, metavar="GBps",
                   help="link between two ranks of a node, GB/s per direction (default: NVLink/PCIe from the spec table)")
    g.add_argument("--inter-node-bandwidth", type=float, default=None, metavar="GBps",
                   help="a node's aggregate network bandwidth, GB/s per direction (default: from cluster_networks.json)")
    g.add_argument("--intra-node-latency-us", type=float, default=None, metavar="US", help="latency of one intra-node ring step, µs")
    g.add_argument("--inter-node-latency-us", type=float, default=None, metavar="US", help="latency of one inter-node ring step, µs")
    g.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP bucket size, MiB (default 25)")


def _check(value, flag: str, unit: str, *, allow_zero: bool = False) -> None:
    from hetsam.errors import HetsamInputError

    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise HetsamInputError(f"{flag} {value:g} must be {'>= 0' if allow_zero else '> 0'} ({unit})")


def cluster_kwargs(args) -> dict:
    """``nodes``, ``devices_per_node`` and the network options for ``simulate``/``plan``, validated."""
    from hetsam.errors import HetsamInputError

    for flag, value in (("--nodes", args.nodes), ("--devices-per-node", args.devices_per_node),
                        ("--sockets-per-node", args.sockets_per_node)):
        if value is not None and value < 1:
            raise HetsamInputError(f"{flag} {value} must be a positive integer")
    _check(args.intra_node_bandwidth, "--intra-node-bandwidth", "GB/s")
    _check(args.inter_node_bandwidth, "--inter-node-bandwidth", "GB/s")
    _check(args.intra_node_latency_us, "--intra-node-latency-us", "µs", allow_zero=True)
    _check(args.inter_node_latency_us, "--inter-node-latency-us", "µs", allow_zero=True)
    _check(args.bucket_cap_mb, "--bucket-cap-mb", "MiB")
    out = {"nodes": args.nodes, "devices_per_node": args.devices_per_node, "bucket_cap_mb": args.bucket_cap_mb}
    scaled = (("sockets_per_node", args.sockets_per_node, 1),
              ("intra_node_bandwidth", args.intra_node_bandwidth, _GB), ("inter_node_bandwidth", args.inter_node_bandwidth, _GB),
              ("intra_node_latency", args.intra_node_latency_us, _US), ("inter_node_latency", args.inter_node_latency_us, _US))
    for key, value, unit in scaled:
        if value is not None:
            out[key] = value * unit if unit != 1 else value
    return out


def format_cluster(cluster: dict | None) -> list[str]:
    """Lines describing a ``Cluster.to_dict()`` (with ``describe``), or none for one rank."""
    if not cluster:
        return []
    lines = [f"data parallel  {cluster['describe']}"]
    pool = cluster.get("rank_cpu_pool")
    if pool and cluster["devices_per_node"] > 1:
        lines.append(f"               each rank's CPU share: {pool['cores']} cores of {pool['socket']}")
    return lines
