"""Strategies: one folder each, a torch-free spec and a torch rule, found through the registry.

``hetsam.strategies.get(name)`` is a strategy's :class:`~hetsam.strategies.spec.StrategySpec`;
``register(spec)`` adds one. See ``docs/architecture.md``, "Strategies".
"""

from hetsam.strategies.registry import (
    ASYNC_SAM,
    BUILTIN,
    INTERVAL,
    LATE_PHASE,
    MSAM,
    RST,
    SAM,
    SAMPA,
    SGD,
    get,
    names,
    register,
    specs,
    unregister,
)
from hetsam.strategies.spec import Option, PlanningContext, Proposal, StrategySpec

__all__ = ["StrategySpec", "Option", "Proposal", "PlanningContext", "get", "names", "register", "unregister", "specs",
           "BUILTIN", "SGD", "SAM", "RST", "ASYNC_SAM", "SAMPA", "INTERVAL", "LATE_PHASE", "MSAM"]
