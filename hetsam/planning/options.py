"""The planner's options for ``AutoSAM(plan="auto")``, with their defaults (``hetsam.defaults``)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from hetsam import _checks, defaults
from hetsam.errors import HetsamInputError

__all__ = ["PlannerOptions"]


@dataclass(frozen=True)
class PlannerOptions:
    """Options of ``plan="auto"`` (``AutoSAM(..., planner_options=...)`` takes these keys).

    ``budget``, ``max_staleness``, ``min_ascent_fraction``, ``reserve_cores``: as for
    ``hetsam plan``. ``profile_budget_seconds``: the measuring time of the profile (None: no
    bound). ``devices``: what to profile (None: every socket, its one-core pool, every GPU).
    ``drift_tolerance``, ``drift_window``, ``drift_warmup``, ``max_replans``: when measured step
    times disagree with the prediction, how far, over how many steps, after how many, and how
    often to re-plan. ``progress``: a progress bar while profiling.
    """

    budget: float = defaults.BUDGET
    max_staleness: int = defaults.MAX_STALENESS
    min_ascent_fraction: float = defaults.MIN_ASCENT_FRACTION
    reserve_cores: int = defaults.RESERVE_CORES
    profile_budget_seconds: float | None = defaults.PROFILE_BUDGET_SECONDS
    devices: tuple | None = None
    drift_tolerance: float = 0.15
    drift_window: int = 20
    drift_warmup: int = 3
    max_replans: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        _checks.number(self.budget, "planner_options['budget']", low=1.0, high=100.0)
        _checks.integer(self.max_staleness, "planner_options['max_staleness']", low=1, high=defaults.STALENESS_LIMIT)
        _checks.number(self.min_ascent_fraction, "planner_options['min_ascent_fraction']", low=0.0, high=1.0, low_open=True)
        _checks.integer(self.reserve_cores, "planner_options['reserve_cores']", low=0, high=8192)
        _checks.optional(_checks.number, self.profile_budget_seconds, "planner_options['profile_budget_seconds']",
                         low=0.0, high=86400.0, low_open=True)
        _checks.number(self.drift_tolerance, "planner_options['drift_tolerance']", low=0.0, high=10.0)
        _checks.integer(self.drift_window, "planner_options['drift_window']", low=1, high=100_000)
        _checks.integer(self.drift_warmup, "planner_options['drift_warmup']", low=0, high=100_000)
        _checks.integer(self.max_replans, "planner_options['max_replans']", low=0, high=100)
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))

    @classmethod
    def from_value(cls, value) -> "PlannerOptions":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise HetsamInputError(f"planner_options must be a dict or PlannerOptions, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(value) - known)
        if unknown:
            raise HetsamInputError(f"planner_options has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**value)
