"""The device-kind registry: the one place that maps a device name to its kind.

``kind_of("cuda:0")`` is the :class:`DeviceKind` that names, detects, profiles and runs work
on CUDA devices; everything else asks it instead of comparing names. The built-in kinds
(:data:`BUILTIN`, one module each) are imported on first use; :func:`register_kind` adds one at
run time (``docs/architecture.md``, "How to add a device kind"). Pure Python: no kind imports
torch before it runs work.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds.base import DeviceKind, DeviceName

__all__ = ["BUILTIN", "DeviceKind", "DeviceName", "register_kind", "unregister_kind", "kinds", "kind_of",
           "kind_named", "record_kinds", "torch_kind", "torch_device_name", "accepted_forms", "generation"]

# one line per built-in kind: name -> the module whose KIND describes it
BUILTIN = {
    "cpu": "hetsam.hardware.kinds.cpu",
    "cuda": "hetsam.hardware.kinds.cuda",
}

_KINDS: dict[str, DeviceKind] = {}
_GENERATION = [0]  # bumped on every change, so cached parses of names are dropped
_PREFIX = re.compile(r"^\s*([a-z][a-z0-9_]{0,31})")


def _load_builtins() -> None:
    if all(n in _KINDS for n in BUILTIN):
        return
    for name, module in BUILTIN.items():
        if name not in _KINDS:
            kind = importlib.import_module(module).KIND
            if kind.name != name:
                raise RuntimeError(f"{module}.KIND is named {kind.name!r}, registered as {name!r}")
            _KINDS[name] = kind
    _GENERATION[0] += 1


def register_kind(kind: DeviceKind, *, replace: bool = False) -> DeviceKind:
    """Add ``kind`` under ``kind.name``; a name already taken needs ``replace=True``."""
    if not isinstance(kind, DeviceKind):
        raise HetsamInputError(f"register_kind() takes a DeviceKind instance, got {type(kind).__name__}")
    name = kind.name
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise HetsamInputError(f"device kind name {name!r} must be a short lower-case identifier such as 'xpu'")
    if not isinstance(kind.record_kind, str) or not kind.record_kind:
        raise HetsamInputError(f"device kind {name!r} needs a record_kind (the kind its profile entries carry)")
    _load_builtins()
    if name in _KINDS and not replace:
        raise HetsamInputError(f"device kind {name!r} is registered already; pass replace=True to replace it")
    _KINDS[name] = kind
    _GENERATION[0] += 1
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind registered with :func:`register_kind` (the built-ins stay)."""
    if name in BUILTIN:
        raise HetsamInputError(f"{name!r} is a built-in device kind; it cannot be unregistered")
    _KINDS.pop(name, None)
    _GENERATION[0] += 1


def generation() -> int:
    """A number that changes whenever the registry does (for caches of parsed names)."""
    _load_builtins()
    return _GENERATION[0]


def kinds() -> tuple[DeviceKind, ...]:
    """Every registered kind, the built-ins first."""
    _load_builtins()
    return tuple(_KINDS.values())


def record_kinds() -> tuple[str, ...]:
    """The kinds a profile or detection record may carry (``cpu``, ``gpu``, ...)."""
    return tuple(dict.fromkeys(k.record_kind for k in kinds()))


def accepted_forms() -> str:
    """Every accepted form of a device name, for messages."""
    return "; ".join(k.forms or f"'{k.name}:N'" for k in kinds())


def kind_named(prefix: str) -> DeviceKind:
    """The kind whose names start with ``prefix``; a one-line error naming the known kinds."""
    _load_builtins()
    kind = _KINDS.get(prefix) if isinstance(prefix, str) else None
    if kind is None:
        shown = repr(prefix) if len(repr(prefix)) <= 40 else repr(prefix)[:37] + "..."
        raise HetsamInputError(f"device kind {shown} is unknown; hetsam knows {', '.join(_KINDS)}")
    return kind


def kind_of(name: Any) -> DeviceKind:
    """The kind of a device name (``"cuda:0"``, ``"cpu:0[1]"``) or of a :class:`DeviceName`."""
    if isinstance(name, DeviceName):
        return kind_named(name.type)
    m = _PREFIX.match(name) if isinstance(name, str) else None
    if m is None:
        raise HetsamInputError(f"unknown device {str(name)[:40]!r}: use {accepted_forms()}")
    return kind_named(m.group(1))


def torch_kind(device: Any) -> DeviceKind:
    """The kind of a ``torch.device`` (duck-typed: its ``type``); a one-line error for a kind
    hetsam does not know (``mps``, ``xpu``, ``meta``, ...), naming the ones it does."""
    kind_type = getattr(device, "type", None)
    for kind in kinds():
        if kind.torch_type is not None and kind.torch_type == kind_type:
            return kind
    known = ", ".join(k.torch_type for k in kinds() if k.torch_type)
    raise HetsamInputError(f"the model is on a {str(kind_type)[:20]!r} device, which hetsam does not know "
                           f"(it knows {known}); move the model to one of those, e.g. model.to('cpu')")


def torch_device_name(device: Any) -> str:
    """The hetsam name of a ``torch.device``: ``cpu`` or ``cuda:N`` (the one place that decides)."""
    kind = torch_kind(device)
    return kind.name_of(device)
