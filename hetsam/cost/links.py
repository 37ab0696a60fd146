"""Where a data-parallel job's links come from when the user gives none (``hetsam.cost.network``).

First match wins: for a GPU with a spec-table key, its ``peer_link`` when it joins all ``G`` GPUs
of a node (``peer_link_gpus`` in ``hetsam/data/cluster_networks.json``), else its ``host_link``
(PCIe, latency paid twice); the profile's own GPU–GPU, GPU–CPU or socket links; across nodes,
the network of the system the GPU ships in (``cluster_networks.json``), else one 100 GbE adapter.
Pure Python.
"""

from __future__ import annotations

from hetsam.cost.network import NetworkLink, network_table
from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import parse_device

__all__ = ["default_intra", "default_inter"]


def _spec(cm, dev: str):
    key = cm.device(dev).spec
    if not key:
        return None
    from hetsam.hardware.specs import get_spec

    try:
        return get_spec(key)
    except HetsamInputError:
        return None

def _node(cm, dev: str) -> dict:
    table = network_table()
    spec = _spec(cm, dev) if cm.accelerator(dev) else None
    return table["nodes"].get(spec.key, table["default_node"]) if spec is not None else table["default_node"]

def default_intra(cm, dev: str, devices_per_node: int) -> NetworkLink | None:
    """The link between two ranks of one node whose descent devices are like ``dev``, or None."""
    G = devices_per_node
    if cm.accelerator(dev):
        spec = _spec(cm, dev)
        if spec is not None:
            node = _node(cm, dev)
            if spec.peer_link and G <= int(node.get("peer_link_gpus", 1)):
                pl = spec.peer_link
                return NetworkLink(pl["name"], float(pl["bytes_per_second"]), float(pl["latency_seconds"]),
                                   f"spec table: peer link of {spec.key}")
            if spec.host_link:
                hl = spec.host_link
                return NetworkLink(f"{hl['name']} through the host", float(hl["bytes_per_second"]),
                                   2 * float(hl["latency_seconds"]), f"spec table: host link of {spec.key}, latency paid twice")
        for link in cm.profile.links:  # measured GPU-GPU, then GPU-host links
            if kind_of(link.src).accelerator and kind_of(link.dst).accelerator and link.src != link.dst:
                return NetworkLink(f"{link.src}->{link.dst}", link.bytes_per_second, link.latency_seconds,
                                   "profile: GPU-GPU link")
        for link in cm.profile.links:
            if kind_of(link.src).accelerator != kind_of(link.dst).accelerator:
                return NetworkLink(f"{link.src}->{link.dst} through the host", link.bytes_per_second,
                                   2 * link.latency_seconds, "profile: GPU-host link, latency paid twice")
        return None
    socket = parse_device(dev).socket_id
    for link in cm.profile.links:
        if parse_device(link.src).socket_id == socket and parse_device(link.dst).socket_id == socket:
            return NetworkLink(f"shared memory of {socket}", link.bytes_per_second, link.latency_seconds,
                               "profile: socket copy link")
    return None

def default_inter(cm, dev: str, devices_per_node: int) -> NetworkLink:
    """A node's aggregate network to the other nodes (per direction)."""
    table = network_table()
    node = _node(cm, dev)
    net = table["networks"][node["inter_node"]]
    if "adapters_per_gpu" in node:
        adapters = int(node["adapters_per_gpu"]) * devices_per_node
    else:
        adapters = int(node.get("adapters_per_node", 1))
    spec = _spec(cm, dev) if cm.accelerator(dev) else None
    where = f"{spec.key} node" if spec is not None and spec.key in table["nodes"] else "default node"
    return NetworkLink(f"{adapters}x {net['name']}", adapters * float(net["bytes_per_second"]),
                       float(net["latency_seconds"]), f"network table: {where} ({node['source']})")
