"""The planner's options for ``AutoSAM(plan="auto")``, with their defaults (``hetsam.defaults``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hetsam import _checks, defaults
from hetsam.errors import HetsamInputError

__all__ = ["PlannerOptions"]


@dataclass(frozen=True)
class PlannerOptions:
    """Options of ``plan="auto"`` (``AutoSAM(..., planner_options=...)`` takes these keys).

    ``budget``, ``max_staleness``, ``min_ascent_fraction``, ``reserve_cores``, ``objective``: as
    for ``hetsam plan``; ``strategies``: the registered strategies to consider (None: every planned
    one); ``shares``: evidence of your own to add to the shipped store (a path to a file
    ``hetsam.study`` wrote, or a list of them; None: the shipped evidence only);
    ``base_optimizer``: the base optimizer family (``"sgd"``, ``"adam"``; AutoSAM fills it in from
    its base optimizer; None: unknown, so MSAM has no tested radius). ``profile``: plan on this profile (a path, a bundled name or a Profile) instead of
    measuring this machine. ``profile_budget_seconds``: the measuring time of the profile (None:
    no bound). ``devices``: what to profile (None: every socket, its one-core pool, every GPU).
    ``calibration_window``, ``calibration_warmup``, ``confidence``, ``max_replans``: the measured
    step periods are compared with the prediction in windows of that many steps, after that many
    steps, with a median interval at that confidence; a disagreement calibrates the loop's own
    per-step work and plans again; the new choice replaces the running plan when that no longer
    fits the calibrated budget beyond the noise, or when the new one is better by the planner's
    objective by more than a near-tie, at most ``max_replans`` times (``hetsam.autosam.controller``). ``progress``: a progress bar while profiling.
    """

    budget: float = defaults.BUDGET
    max_staleness: int = defaults.MAX_STALENESS
    min_ascent_fraction: float = defaults.MIN_ASCENT_FRACTION
    reserve_cores: int = defaults.RESERVE_CORES
    strategies: tuple | None = None
    shares: Any = None
    objective: str = defaults.OBJECTIVE
    base_optimizer: str | None = defaults.BASE_OPTIMIZER
    profile: Any = None
    profile_budget_seconds: float | None = defaults.PROFILE_BUDGET_SECONDS
    devices: tuple | None = None
    calibration_window: int = 30
    calibration_warmup: int = 5
    confidence: float = 0.95
    max_replans: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        _checks.number(self.budget, "planner_options['budget']", low=1.0, high=100.0)
        _checks.integer(self.max_staleness, "planner_options['max_staleness']", low=1, high=defaults.STALENESS_LIMIT)
        _checks.number(self.min_ascent_fraction, "planner_options['min_ascent_fraction']", low=0.0, high=1.0, low_open=True)
        _checks.integer(self.reserve_cores, "planner_options['reserve_cores']", low=0, high=8192)
        _checks.optional(_checks.number, self.profile_budget_seconds, "planner_options['profile_budget_seconds']",
                         low=0.0, high=86400.0, low_open=True)
        _checks.integer(self.calibration_window, "planner_options['calibration_window']", low=5, high=100_000)
        _checks.integer(self.calibration_warmup, "planner_options['calibration_warmup']", low=0, high=100_000)
        _checks.number(self.confidence, "planner_options['confidence']", low=0.5, high=0.999)
        _checks.integer(self.max_replans, "planner_options['max_replans']", low=0, high=100)
        _checks.choice(self.objective, "planner_options['objective']", ("robust", "expected"))
        from hetsam.evidence.model import FAMILIES

        _checks.choice(self.base_optimizer, "planner_options['base_optimizer']", (None, *FAMILIES))
        if self.strategies is not None and not self.strategies:
            raise HetsamInputError("planner_options['strategies'] is empty: name at least one strategy, or None for all")
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        if self.strategies is not None:
            if isinstance(self.strategies, str):
                raise HetsamInputError("planner_options['strategies'] must be a list of strategy names, not one string")
            object.__setattr__(self, "strategies", tuple(self.strategies))
        if self.profile is not None:
            from hetsam.profiling.schema import load_profile

            object.__setattr__(self, "profile", load_profile(self.profile))

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
