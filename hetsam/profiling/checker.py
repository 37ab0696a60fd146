"""Validation of a profile's JSON: each error names the JSON path and the fix (torch-free)."""

from __future__ import annotations

import math

from hetsam.errors import HetsamInputError
from hetsam.hardware.names import parse_device

__all__ = ["Checker"]


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

    def num(self, value, path: str, *, positive=False, nonneg=False, integer=False, nullable=False):
        if value is None and nullable:
            return None
        ok_type = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
            self.fail(path, f"must be {'an integer' if integer else 'a finite number'}, got {value!r}")
        if positive and value <= 0:
            self.fail(path, f"must be > 0, got {value!r}")
        if nonneg and value < 0:
            self.fail(path, f"must be >= 0, got {value!r}")
        return value

    def string(self, value, path: str, *, nullable=False):
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            self.fail(path, f"must be a non-empty string, got {value!r}")
        return value

    def array(self, value, path: str, *, nonempty=True) -> list:
        if not isinstance(value, list):
            self.fail(path, f"must be a JSON array, got {type(value).__name__}")
        if nonempty and not value:
            self.fail(path, "must not be empty")
        return value

    def device_id(self, value, path: str) -> str:
        self.string(value, path)
        try:
            parse_device(value)
        except HetsamInputError as exc:
            self.fail(path, f"is not a device name ({exc})")
        return value
