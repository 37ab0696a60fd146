"""The strategy registry: the one place that maps a strategy name to its spec.

Adding a strategy means adding one folder under ``hetsam/strategies/`` (a torch-free spec and a
torch rule) and one line in :data:`BUILTIN`; a user can also :func:`register` a spec of their own
at run time (``docs/architecture.md``, "Adding a strategy"), which checks it and imports its rule
at once. The built-in specs are imported on first use and checked without their rules, so
``import hetsam`` stays cheap and the planner never imports torch.
"""

from __future__ import annotations

import importlib

from hetsam.errors import HetsamInputError
from hetsam.strategies.checks import check_spec
from hetsam.strategies.spec import StrategySpec

__all__ = ["BUILTIN", "SGD", "SAM", "RST", "ASYNC_SAM", "SAMPA", "INTERVAL", "LATE_PHASE", "MSAM", "register",
           "unregister", "get", "names", "specs"]

# the built-in strategies' names, for code that builds a plan of one of them (baselines, benchmarks)
SGD, SAM, RST, ASYNC_SAM, SAMPA = "sgd", "sam", "rst", "async_sam", "sampa"
INTERVAL, LATE_PHASE, MSAM = "interval", "late_phase", "msam"

# one line per built-in strategy: name -> the module whose SPEC describes it
BUILTIN = {
    SGD: "hetsam.strategies.sgd",
    SAM: "hetsam.strategies.sam",
    RST: "hetsam.strategies.rst",
    ASYNC_SAM: "hetsam.strategies.async_sam",
    SAMPA: "hetsam.strategies.sampa",
    INTERVAL: "hetsam.strategies.interval",
    LATE_PHASE: "hetsam.strategies.late_phase",
    MSAM: "hetsam.strategies.msam",
}

_SPECS: dict[str, StrategySpec] = {}


def _load_builtins() -> None:
    if len(_SPECS) >= len(BUILTIN) and all(n in _SPECS for n in BUILTIN):
        return
    for name, module in BUILTIN.items():
        if name not in _SPECS:
            spec = importlib.import_module(module).SPEC
            if spec.name != name:
                raise RuntimeError(f"{module}.SPEC is named {spec.name!r}, registered as {name!r}")
            check_spec(spec, lazy=True)  # torch-free: hetsam.testing.StrategyContract resolves the rules
            _SPECS[name] = spec


def register(spec: StrategySpec, *, replace: bool = False, lazy: bool = False) -> StrategySpec:
    """Add ``spec`` under ``spec.name``; a name already taken needs ``replace=True``.

    The spec is checked first (:func:`hetsam.strategies.checks.check_spec`: its name, fields,
    options, closed form and rule), and its rule imported now, so that a typo fails here and not
    when a plan first runs. ``lazy=True`` only finds the rule's module and resolves the class when
    a rule is first built (for a spec registered where torch must not be imported yet)."""
    check_spec(spec, lazy=True)  # everything but importing the rule: before the name is taken
    name = spec.name
    _load_builtins()
    if name in _SPECS and not replace:
        raise HetsamInputError(f"strategy {name!r} is registered already; pass replace=True to replace it")
    if not lazy:
        spec.rule_class()
    _SPECS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a strategy registered with :func:`register` (the built-ins stay)."""
    if name in BUILTIN:
        raise HetsamInputError(f"{name!r} is a built-in strategy; it cannot be unregistered")
    _SPECS.pop(name, None)


def get(name) -> StrategySpec:
    """The spec of ``name``; a one-line error naming the registered strategies otherwise."""
    _load_builtins()
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
        raise HetsamInputError(f"strategy {shown} is unknown; choose one of {', '.join(_SPECS)}")
    return spec


def names() -> tuple[str, ...]:
    """Registered strategy names, built-ins first, in registration order."""
    _load_builtins()
    return tuple(_SPECS)


def specs() -> tuple[StrategySpec, ...]:
    _load_builtins()
    return tuple(_SPECS.values())
