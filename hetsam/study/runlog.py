"""The study's run log: every finished run, rewritten atomically after each one, so a restart resumes.

The log lives next to the evidence file (``<out>.runs.json``) unless ``runs=`` names it::

    {"schema_version": 1, "kind": "hetsam study runs", "fingerprint": {...}, "runs": [
        {"strategy": "msam", "label": "MSAM rho=1", "plan": {...}, "seed": 0, "epochs": 30,
         "score": 0.93, "seconds": 4.1, "wall_seconds": 4.3}, ...]}

(a study with ``curve=True`` adds each run's ``"curve"``: ``[training seconds, score]`` per epoch).
``fingerprint`` holds the settings that change what a run measures (ρ, the batch size, the base
optimizer and its arguments, the model's class and size, the data's size and a checksum, and
whether an LR schedule, per-seed data or a curve is used). A run is reused when its plan JSON,
seed and epochs match and the file's fingerprint equals this study's; a log of other settings is
refused in one line (mixing them would pair runs of two different studies), never reused
silently. A log without a path (``RunLog(None, ...)``) keeps its runs in memory. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from hetsam.errors import HetsamInputError

__all__ = ["RunLog", "fingerprint_id", "plan_key", "SCHEMA_VERSION", "KIND"]

SCHEMA_VERSION = 1
KIND = "hetsam study runs"
_MAX_RUNS = 1_000_000


def plan_key(plan_dict: dict) -> str:
    """A plan's canonical JSON (what a run is matched by, with its seed and epochs)."""
    return json.dumps(plan_dict, sort_keys=True, default=str)


def fingerprint_id(fingerprint: dict) -> str:
    """A short, stable hash of a fingerprint (names the study in its records' ids)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:10]


class RunLog:
    """The finished runs of one study (module docstring); ``add`` rewrites the file atomically."""

    def __init__(self, path, fingerprint: dict):
        self.path = None if path is None else Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from JSON
        self.runs: list[dict] = []
        self._index: dict[tuple, dict] = {}

    @classmethod
    def open(cls, path, fingerprint: dict) -> RunLog:
        """The log at ``path`` (empty when there is none); ``HetsamInputError`` when it holds
        runs of other settings or is not a run log."""
        from hetsam.io import read_json

        log = cls(path, fingerprint)
        if log.path is None or not log.path.exists():
            return log
        data = read_json(log.path, "study run log")
        fix = f"delete {str(log.path)!r} to start afresh, or give the study another run log (out= or runs=)"
        if not isinstance(data, dict) or data.get("kind") != KIND or data.get("schema_version") != SCHEMA_VERSION:
            raise HetsamInputError(f"{str(log.path)!r} is not a hetsam study run log (schema_version "
                                   f"{SCHEMA_VERSION}); {fix}")
        theirs = data.get("fingerprint")
        if theirs != log.fingerprint:
            raise HetsamInputError(f"study run log {str(log.path)!r} holds runs of other settings "
                                   f"({_difference(theirs, log.fingerprint)}); resuming would pair runs of two "
                                   f"studies: {fix}")
        runs = data.get("runs")
        if not isinstance(runs, list) or len(runs) > _MAX_RUNS:
            raise HetsamInputError(f"study run log {str(log.path)!r}: runs must be a list; {fix}")
        for i, run in enumerate(runs):
            log._remember(_checked(run, f"study run log {str(log.path)!r}: runs[{i}]", fix))
        return log

    def find(self, plan_dict: dict, seed: int, epochs: int) -> dict | None:
        """The finished run of this plan, seed and epochs, or None."""
        return self._index.get((plan_key(plan_dict), seed, epochs))

    def add(self, run: dict) -> None:
        """Record a finished run and rewrite the log atomically."""
        self._remember(run)
        self.save()

    def save(self) -> None:
        from hetsam.io import write_text

        if self.path is None:
            return
        doc = {"schema_version": SCHEMA_VERSION, "kind": KIND, "fingerprint": self.fingerprint, "runs": self.runs}
        write_text(self.path, json.dumps(doc, indent=1, allow_nan=False), "study run log")

    def seconds(self, epochs: int, *, plan_dict: dict | None = None, strategy: str | None = None) -> list[float]:
        """The wall seconds of every logged run of ``epochs`` epochs of one plan, or of one
        strategy at any of its settings (for estimates)."""
        key = None if plan_dict is None else plan_key(plan_dict)
        return [r["wall_seconds"] for r in self.runs if r["epochs"] == epochs
                and (key is None or plan_key(r["plan"]) == key) and (strategy is None or r["strategy"] == strategy)]

    def _remember(self, run: dict) -> None:
        key = (plan_key(run["plan"]), run["seed"], run["epochs"])
        if key in self._index:  # a repeated run replaces the earlier one
            self.runs.remove(self._index[key])
        self._index[key] = run
        self.runs.append(run)


def _checked(run, where: str, fix: str) -> dict:
    """One logged run, its fields checked (a hand-edited log must not feed a NaN into a share)."""
    def bad(field: str, what: str):
        raise HetsamInputError(f"{where}.{field} must be {what}; {fix}")

    if not isinstance(run, dict):
        bad("", "an object")
    for name in ("strategy", "label"):
        if not isinstance(run.get(name), str) or not run[name] or len(run[name]) > 500:
            bad(name, "a non-empty string")
    if not isinstance(run.get("plan"), dict):
        bad("plan", "a plan's JSON object")
    for name, high in (("seed", 999), ("epochs", 100_000)):
        value = run.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            bad(name, f"an integer in [0, {high}]")
    for name in ("score", "seconds", "wall_seconds"):
        if not _finite(run.get(name)):
            bad(name, "a finite number")
    curve = run.get("curve")
    if curve is not None and (not isinstance(curve, list) or len(curve) != run["epochs"] or not all(
            isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p) for p in curve)):
        bad("curve", "a list of [seconds, score] per epoch")
    return run


def _finite(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _difference(theirs, ours: dict) -> str:
    """``rho 0.05 there, 0.1 now`` for the first few settings that differ."""
    if not isinstance(theirs, dict):
        return "no fingerprint there"
    keys = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    parts = [f"{k} {_short(theirs.get(k))} there, {_short(ours.get(k))} now" for k in keys[:3]]
    return "; ".join(parts) + (f"; {len(keys) - 3} more" if len(keys) > 3 else "")


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
