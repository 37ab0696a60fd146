"""Validation of numbers and choices, with one-line messages that name the value and the fix.

Every constructor and command that takes a number checks it here, before any arithmetic:
``bool`` is never an integer, floats must be finite, and bounds are inclusive unless ``*_open``.
Failures raise :class:`hetsam.HetsamInputError` (a ``ValueError``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from hetsam.errors import HetsamInputError

__all__ = ["integer", "number", "choice", "optional"]


def _bounds(low, high, low_open: bool = False, high_open: bool = False) -> str:
    lo = None if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = None if high is None else f"{'<' if high_open else '<='} {high:g}"
    if lo and hi:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return lo or hi or ""


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """``value`` as an int in ``[low, high]``; ``HetsamInputError`` naming ``name`` otherwise."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    where = _bounds(low, high)
    raise HetsamInputError(f"{name}={_show(value)} must be an integer{' ' + where if where else ''}{_hint(hint)}")


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite float within the bounds; ``HetsamInputError`` otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        try:
            x = float(value)
        except OverflowError:  # an int too large for a float
            x = math.inf
        ok = math.isfinite(x) and (low is None or (x > low if low_open else x >= low)) \
            and (high is None or (x < high if high_open else x <= high))
        if ok:
            return x
    where = _bounds(low, high, low_open, high_open)
    raise HetsamInputError(f"{name}={_show(value)} must be a finite number{' ' + where if where else ''}{_hint(hint)}")


def choice(value: Any, name: str, choices: Iterable[Any], hint: str = "") -> Any:
    """``value`` if it is one of ``choices``; ``HetsamInputError`` listing them otherwise."""
    choices = tuple(choices)
    if isinstance(value, (str, int, float, type(None))) and value in choices:
        return value
    listed = ", ".join(repr(c) for c in choices)
    raise HetsamInputError(f"{name}={_show(value)} is not one of {listed}{_hint(hint)}")


def optional(check, value: Any, *args, **kwargs):
    """``None``, or ``check(value, ...)``."""
    return None if value is None else check(value, *args, **kwargs)


def _show(value: Any) -> str:
    """A short repr: a 5,000-digit integer or a huge string must not flood the one-line message."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value))) if abs(value) < 10 ** 30 else None
        if digits is None:
            return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    text = " ".join(repr(value).split())  # one line, even for a tensor's repr
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""
