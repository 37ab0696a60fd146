"""Validation of a profile's JSON: each error names the JSON path and the fix (torch-free)."""

from __future__ import annotations

import math

from hetsam.errors import HetsamInputError
from hetsam.hardware.names import parse_device

__all__ = ["Checker", "SECONDS", "COUNT", "BATCH", "BYTES", "ENTRIES"]

# the ranges a profile's numbers must lie in: every one is checked before any arithmetic uses it
SECONDS = (1e-9, 1e5)  # a gradient, an update or a copy: a nanosecond to a day
COUNT = 8192  # cores, threads
BATCH = 1 << 20  # samples in a batch
BYTES = float(1 << 60)
ENTRIES = 4096  # devices, links, ladder points, contention pairs


class Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, path: str, problem: str) -> None:
        raise HetsamInputError(f"{self.where}: {path} {problem}; fix the file or re-create it with 'hetsam profile'")

    def obj(self, value, path: str, required: set[str], optional: set[str]) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"must be a JSON object, got {type(value).__name__}")
        missing = sorted(required - set(value))
        if missing:
            self.fail(path, f"is missing field(s) {', '.join(missing)}")
        unknown = sorted(set(value) - required - optional)
        if unknown:
            self.fail(path, f"has unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(required | optional))})")
        return value

    def num(self, value, path: str, *, positive=False, nonneg=False, integer=False, nullable=False,
            low: float | None = None, high: float | None = None):
        if value is None and nullable:
            return None
        ok_type = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
            self.fail(path, f"must be {'an integer' if integer else 'a finite number'}, got {_short(value)}")
        if positive and value <= 0:
            self.fail(path, f"must be > 0, got {value!r}")
        if nonneg and value < 0:
            self.fail(path, f"must be >= 0, got {value!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(path, f"is {value!r}, outside the range [{low if low is not None else '-inf'}, "
                            f"{high if high is not None else 'inf'}] hetsam accepts")
        return value

    def string(self, value, path: str, *, nullable=False):
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            self.fail(path, f"must be a non-empty string, got {_short(value)}")
        if len(value) > 10_000:
            self.fail(path, f"is a string of {len(value)} characters; at most 10,000")
        return value

    def array(self, value, path: str, *, nonempty=True, most: int = ENTRIES) -> list:
        if not isinstance(value, list):
            self.fail(path, f"must be a JSON array, got {type(value).__name__}")
        if nonempty and not value:
            self.fail(path, "must not be empty")
        if len(value) > most:
            self.fail(path, f"has {len(value)} entries; at most {most}")
        return value

    def device_id(self, value, path: str) -> str:
        self.string(value, path)
        try:
            parse_device(value)
        except HetsamInputError as exc:
            self.fail(path, f"is not a device name ({exc})")
        return value


def _short(value) -> str:
    text = repr(value) if not (isinstance(value, int) and abs(value) > 10**30) else f"<an integer of {len(str(abs(value)))} digits>"
    return text if len(text) <= 60 else text[:57] + "..."
