"""``hetsam.planning.plan.Plan``, the plan's public path. The class is defined in
:mod:`hetsam.strategies.plan`, below the simulator, which reads plans and is itself read by the
planner (docs/architecture.md, "The layers")."""

from __future__ import annotations

from hetsam.strategies.plan import ASCENT_POLICIES, SCHEMA_VERSION, Plan

__all__ = ["Plan", "ASCENT_POLICIES", "SCHEMA_VERSION"]
