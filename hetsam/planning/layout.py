"""The devices and CPU pools a plan may use on a profiled machine (torch-free)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import format_cpulist, parse_device

if TYPE_CHECKING:
    from hetsam.cost.cluster import Cluster
    from hetsam.cost.model import CostModel

__all__ = ["Layout", "split_sizes"]


class Layout:
    """The devices and CPU pools a plan may use, with ``reserve`` cores of socket 0 held back.

    With G > 1 ranks per node (``cluster``), one rank owns a pool of socket 0
    (``Cluster.rank_cores``; ``reserve`` is taken from it), and another rank's GPU is an
    ascent device only when there are spare GPUs (``Cluster.spare_gpus``).
    """

    def __init__(self, cm: CostModel, reserve: int, descent_kind: str | None = None, cluster: Cluster | None = None):
        self.cm = cm
        self.descent_kind = descent_kind
        multi = cluster is not None and cluster.devices_per_node > 1
        share = cluster.rank_cores() if multi else None
        self.gpu_ascent = not multi or cluster.spare_gpus()
        whole: list[str] = []  # a device or a whole (less reserve) socket
        self.splits: list[tuple[str, str]] = []  # disjoint pools of one socket
        for dev in cm.profile.devices:
            name = parse_device(dev.id)
            if not kind_of(name).pools:  # a device whole; a socket splits into pools
                whole.append(dev.id)
                continue
            if name.is_pool:
                continue
            n = dev.cores or 1
            if share is not None:  # the rank's pool: the first share[1] cores of its socket
                if dev.id != share[0]:
                    continue
                if reserve > share[1]:
                    raise HetsamInputError(f"cannot reserve {reserve} cores per rank: each of the {cluster.devices_per_node} "
                                           f"ranks of a node owns {share[1]} cores of {dev.id}")
                usable = share[1] - reserve
            elif name.index == 0 and reserve > n:
                raise HetsamInputError(f"cannot reserve {reserve} cores: socket {dev.id} has {n}")
            else:
                usable = n - (reserve if name.index == 0 else 0)
            if usable < 1:
                continue
            whole.append(dev.id if usable == n else f"{dev.id}[{format_cpulist(range(usable))}]")
            for k in split_sizes(usable):
                self.splits.append((f"{dev.id}[{format_cpulist(range(k))}]", f"{dev.id}[{format_cpulist(range(k, usable))}]"))
        self.whole = whole
        self.descent_devices = [d for d in whole + [d for d, _ in self.splits] if self._may_descend(d)]

    def _may_descend(self, device: str) -> bool:
        return self.descent_kind is None or parse_device(device).kind == self.descent_kind

    def pairs(self):
        """(descent, ascent) pairs: every whole device with itself (time-sliced) and with the
        others, plus each split of a socket into two disjoint pools (both orders)."""
        for d in filter(self._may_descend, self.whole):
            yield d, d
            for a in self.whole:
                if a != d and not self.cm.shares_cores(d, a) and (self.gpu_ascent or not self.cm.accelerator(a)):
                    yield d, a
        for p1, p2 in self.splits:
            for d, a in ((p1, p2), (p2, p1)):
                if self._may_descend(d):
                    yield d, a


def split_sizes(n: int) -> list[int]:
    """Sizes k of the first pool when a socket of n cores is split in two (at most ~16 splits)."""
    if n < 2:
        return []
    if n <= 16:
        return list(range(1, n))
    return sorted({max(1, round(n * f)) for f in (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 15 / 16)} - {n})


