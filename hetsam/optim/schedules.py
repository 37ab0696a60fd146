"""Schedules p(t) of RST's SAM probability (Zhao et al., "Randomized Sharpness-Aware Training
for Boosting Computational Efficiency in Deep Learning", 2022).

A schedule is a callable ``t -> p`` on the step index t = 0, 1, 2, …; every value must lie in
[0, 1]. The named schedules (``steps`` is the length of the ramp, after which p stays at ``end``):

==============================  ============================================================
``constant(p)``                 p(t) = p
``linear(start, end, steps)``   p(t) = start + (end − start) · min(t, steps) / steps
                                (increasing when end > start, decreasing when end < start)
``cosine(start, end, steps)``   p(t) = end + (start − end) · (1 + cos(π · min(t, steps) / steps)) / 2
``step(values, boundaries)``    p(t) = values[i] for boundaries[i−1] ≤ t < boundaries[i]
                                (piecewise constant; ``len(values) == len(boundaries) + 1``)
==============================  ============================================================

:func:`make_schedule` turns what a user passes as ``p`` (a number, a callable, a schedule, or a
mapping ``{"schedule": "linear", "start": 0.1, "end": 0.9, "steps": 1000}``) into a schedule.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = ["Schedule", "constant", "linear", "cosine", "step", "make_schedule", "SCHEDULES"]


def _unit(name: str, value: Any) -> float:
    return _checks.number(value, name, low=0.0, high=1.0, hint="a probability")


def _steps(value: Any) -> int:
    return _checks.integer(value, "steps", low=1, high=2**62, hint="the length of the ramp")


class Schedule:
    """Base of the named schedules: ``schedule(t) -> p`` for integer t ≥ 0."""

    def __call__(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class constant(Schedule):  # noqa: N801 - schedule names read as functions
    """p(t) = p."""

    p: float

    def __post_init__(self):
        object.__setattr__(self, "p", _unit("p", self.p))

    def __call__(self, t: int) -> float:
        return self.p


@dataclass(frozen=True)
class _Ramp(Schedule):
    """From ``start`` at t = 0 to ``end`` at t = ``steps``, then ``end``."""

    start: float
    end: float
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "start", _unit("start", self.start))
        object.__setattr__(self, "end", _unit("end", self.end))
        _steps(self.steps)


class linear(_Ramp):  # noqa: N801
    """p(t) = start + (end − start) · min(t, steps) / steps."""

    def __call__(self, t: int) -> float:
        return self.start + (self.end - self.start) * min(t, self.steps) / self.steps


class cosine(_Ramp):  # noqa: N801
    """p(t) = end + (start − end) · (1 + cos(π · min(t, steps) / steps)) / 2."""

    def __call__(self, t: int) -> float:
        return self.end + (self.start - self.end) * (1.0 + math.cos(math.pi * min(t, self.steps) / self.steps)) / 2.0


@dataclass(frozen=True)
class step(Schedule):  # noqa: N801
    """Piecewise constant: p(t) = values[i] where boundaries[i−1] ≤ t < boundaries[i]."""

    values: tuple
    boundaries: tuple

    def __post_init__(self):
        values = tuple(_unit(f"values[{i}]", v) for i, v in enumerate(self.values))
        bounds = tuple(self.boundaries)
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bounds):
            raise HetsamInputError(f"boundaries={list(bounds)!r} must be positive integers (step indices)")
        if list(bounds) != sorted(set(bounds)):
            raise HetsamInputError(f"boundaries={list(bounds)!r} must be strictly increasing")
        if len(values) != len(bounds) + 1:
            raise HetsamInputError(
                f"step schedule: {len(values)} values for {len(bounds)} boundaries; give one more value than boundaries"
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "boundaries", bounds)

    def __call__(self, t: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t)]


SCHEDULES: dict[str, type[Schedule]] = {"constant": constant, "linear": linear, "cosine": cosine, "step": step}


class _Checked(Schedule):
    """A user callable whose values are checked to lie in [0, 1]."""

    def __init__(self, fn: Callable[[int], float]):
        self.fn = fn

    def __call__(self, t: int) -> float:
        value = self.fn(t)
        try:
            return _unit(f"p({t})", float(value))
        except (TypeError, ValueError):
            raise HetsamInputError(f"the probability schedule returned p({t})={value!r}; it must be a number in [0, 1]") from None

    def __repr__(self) -> str:
        return f"schedule({self.fn!r})"


def make_schedule(p: Any, name: str = "p") -> Schedule:
    """A :class:`Schedule` from a number, a callable ``t -> p`` or a mapping with a ``schedule`` name
    (``name`` is the argument name that error messages use)."""
    if isinstance(p, Schedule):
        return p
    if isinstance(p, Mapping):
        spec = dict(p)
        name = spec.pop("schedule", None)
        if name not in SCHEDULES:
            raise HetsamInputError(
                f"schedule={name!r} is unknown; choose one of {', '.join(SCHEDULES)} "
                "(e.g. {'schedule': 'linear', 'start': 0.1, 'end': 0.9, 'steps': 1000})"
            )
        try:
            return SCHEDULES[name](**spec)
        except TypeError as exc:
            raise HetsamInputError(f"schedule {name!r}: {exc}") from None
    if callable(p):
        return _Checked(p)
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        _unit(name, p)
        return constant(p)
    raise HetsamInputError(f"{name}={p!r} must be a probability in [0, 1], a callable t -> p, or a schedule")
