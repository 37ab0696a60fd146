"""Device names: how a plan, a profile and the command line name a device or a CPU pool.

Grammar (all forms are accepted wherever a device is named):

=================  ==========================================================================
``cpu``            every usable core of the machine (alias of ``cpu:0`` on one socket).
``cpu:S``          every usable core of socket ``S`` (``physical_package_id``).
``cpu:S[LIST]``    a *pool*: the cores at positions ``LIST`` of socket ``S``'s usable cores,
                   in ``cpulist`` syntax (``0``, ``0-3``, ``0-3,8``). Positions are 0-based
                   indices into the sorted list of that socket's usable CPUs, not OS CPU ids,
                   so a plan stays valid under a different affinity mask or cgroup.
                   ``cpu:0[0]`` and ``cpu:0[1]`` are two disjoint one-core pools.
``cuda``           the current CUDA device.
``cuda:N``         CUDA device ``N``.
=================  ==========================================================================

The grammar is ``KIND[:N][[LIST]]``; the kind (:mod:`hetsam.hardware.kinds`) decides which forms
it accepts, so a registered kind (``xpu:0``) is named like the built-ins. This module is pure
Python: the planner and the simulator use it without torch.
"""

from __future__ import annotations

import functools
import re

from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import accepted_forms, generation, kind_named
from hetsam.hardware.kinds.base import (
    MAX_CPUS,
    MAX_INDEX,
    DeviceName,
    format_cpulist,
    parse_cpulist,
)

__all__ = ["DeviceName", "parse_device", "parse_cpulist", "format_cpulist", "canonical_name", "MAX_CPUS", "MAX_INDEX"]

_NAME = re.compile(r"^(?P<kind>[a-z][a-z0-9_]{0,31})(?::(?P<index>[0-9]{1,6}))?(?:\[(?P<pool>[0-9,\- ]{1,512})\])?$")


def parse_device(name: str) -> DeviceName:
    """Parse a device name; raise :class:`HetsamInputError` naming the accepted forms."""
    if isinstance(name, DeviceName):
        return name
    if not isinstance(name, str):
        raise HetsamInputError(f"device name must be a string, got {type(name).__name__}")
    if len(name) > 600:
        raise HetsamInputError(f"device name of {len(name)} characters is too long; use {accepted_forms()}")
    return _parse(name, generation())


@functools.lru_cache(maxsize=4096)
def _parse(name: str, _generation: int) -> DeviceName:
    """The parser behind :func:`parse_device`, memoised per state of the kind registry: the
    planner and the simulator name the same few devices tens of thousands of times."""
    m = _NAME.match(name.strip())
    if not m:
        raise HetsamInputError(f"unknown device {name!r}: use {accepted_forms()}")
    try:
        kind = kind_named(m.group("kind"))
    except HetsamInputError:
        raise HetsamInputError(f"unknown device {name!r}: use {accepted_forms()}") from None
    index = int(m.group("index")) if m.group("index") is not None else None
    return kind.parse(name, index, m.group("pool"))


def canonical_name(name, what: str = "device") -> str:
    """The written form of a device name: pools as sorted, merged cpulists (``cpu:0[1,1]`` ->
    ``cpu:0[1]``); the aliases ``cpu`` and ``cuda`` stay as they are."""
    try:
        return _written(parse_device(name))
    except HetsamInputError as exc:
        raise HetsamInputError(f"{what}: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _written(dev: DeviceName) -> str:
    return str(dev)
