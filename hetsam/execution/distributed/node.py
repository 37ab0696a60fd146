"""Which share of a node each rank computes on (package docstring, "Cores per rank").

The ranks of one node start with the same CPU affinity (torchrun, Lightning and accelerate do
not split it), so a plan that pins a CPU pool would pin every rank of the node to the same
cores. :func:`node_layout` finds each rank's place on its node (``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` when the launcher sets both, else one all-gather of host names) together
with every rank's affinity and pinned cores; :func:`cpu_share` is the rank's own share of the
node's cores; :func:`overlap_warning` names ranks of a node whose pinned cores meet.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import torch
import torch.distributed as dist

from hetsam.errors import HetsamInputError

__all__ = ["NodeLayout", "node_layout", "cpu_share", "pin_to_share", "overlap_warning", "affinity"]


def affinity() -> tuple[int, ...]:
    """This process's usable CPUs (sorted), or () where the OS has no affinity API."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return ()


@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """Every rank's host, affinity and pinned cores (index: rank in the group), and this rank's place."""

    rank: int
    hosts: tuple[str, ...]
    affinities: tuple[tuple[int, ...], ...]
    pinned: tuple[tuple[int, ...], ...]
    local_rank: int
    local_world: int

    def peers(self) -> list[int]:
        """The ranks on this rank's node (this one included), in rank order."""
        return [r for r, h in enumerate(self.hosts) if h == self.hosts[self.rank]]


def node_layout(group, rank: int, pinned: tuple[int, ...] = ()) -> NodeLayout:
    """One all-gather (on ``group``, a gloo group) of (host, affinity, pinned cores) per rank.

    The local rank and local world size are the launcher's (``LOCAL_RANK``/``LOCAL_WORLD_SIZE``)
    when both are set, else this rank's index among the ranks of its host and their number."""
    mine = (socket.gethostname(), affinity(), tuple(sorted(pinned)))
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    hosts = tuple(e[0] for e in everyone)
    same = [r for r, h in enumerate(hosts) if h == hosts[rank]]
    local, world = same.index(rank), len(same)
    env_rank, env_world = os.environ.get("LOCAL_RANK"), os.environ.get("LOCAL_WORLD_SIZE")
    if env_rank is not None and env_world is not None and env_rank.isdigit() and env_world.isdigit():
        local, world = int(env_rank), int(env_world)
    return NodeLayout(rank, hosts, tuple(e[1] for e in everyone), tuple(e[2] for e in everyone), local, world)


def cpu_share(layout: NodeLayout) -> tuple[int, ...]:
    """This rank's cores: its whole affinity when no other rank of the node shares any of it, else
    the local_rank-th of local_world equal contiguous shares of it (cores left over stay idle)."""
    mine = set(layout.affinities[layout.rank])
    if not mine:
        return ()
    others = [r for r in layout.peers() if r != layout.rank]
    if all(not mine & set(layout.affinities[r]) for r in others):
        return tuple(sorted(mine))
    cores = sorted(mine)
    n = len(cores) // layout.local_world
    if n == 0:
        raise HetsamInputError(
            f"plan='auto' under DDP gives each of the {layout.local_world} ranks on this node its own cores, but this "
            f"process may use {len(cores)}; launch at most {len(cores)} ranks per node, or give every rank a plan")
    return tuple(cores[layout.local_rank * n:(layout.local_rank + 1) * n])


def pin_to_share(layout: NodeLayout) -> tuple[int, ...]:
    """Restrict this process to its :func:`cpu_share` (and at most that many intra-op threads),
    so that every CPU pool a plan names (positions among the usable cores) lies in it."""
    share = cpu_share(layout)
    if share and set(share) != set(affinity()):
        os.sched_setaffinity(0, share)
    if share and torch.get_num_threads() > len(share):
        torch.set_num_threads(len(share))
    return share


def overlap_warning(layout: NodeLayout) -> str | None:
    """One line naming the first two ranks of this rank's node whose pinned cores meet, or None."""
    peers = [r for r in layout.peers() if layout.pinned[r]]
    for i, a in enumerate(peers):
        for b in peers[i + 1:]:
            common = sorted(set(layout.pinned[a]) & set(layout.pinned[b]))
            if common:
                return (f"hetsam: ranks {a} and {b} on host {layout.hosts[a]!r} both pin their CPU pools to core(s) "
                        f"{common}: they will share those cores; name each rank's own pools (e.g. 'cpu:0[{{local_rank}}]'"
                        ", as examples/ddp.py does) or use plan='auto', which gives every rank its own share")
    return None
