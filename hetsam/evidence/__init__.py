"""The evidence behind every share of SAM's gain hetsam shows (torch-free; docs/architecture.md, "Evidence").

- :mod:`~hetsam.evidence.records`: evidence records with their provenance (a paper's table,
  hetsam's own benchmark, the user's own ``hetsam.study``), read and checked;
- :mod:`~hetsam.evidence.pooling`: random-effects pooling (DerSimonian-Laird with a common
  between-task variance, empirical Bayes for the user's own task, Student's t);
- :mod:`~hetsam.evidence.model`: a plan's share for a new task with its interval
  (:class:`~hetsam.evidence.share.Share`);
- :mod:`~hetsam.evidence.crossval`: leave-one-setting-out coverage of those intervals.

The shipped records are ``hetsam/data/evidence/*.json``; ``hetsam plan --shares FILE`` and
``PlannerOptions(shares=...)`` add a study's file to them.
"""

from __future__ import annotations

from pathlib import Path

from hetsam.evidence.model import LEVEL, ShareModel, optimizer_family
from hetsam.evidence.records import Record, parse_records
from hetsam.evidence.share import OBJECTIVES, Share

__all__ = ["Record", "Share", "ShareModel", "LEVEL", "OBJECTIVES", "EVIDENCE_DIR", "load_records",
           "shipped_records", "share_model", "optimizer_family"]

EVIDENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "evidence"
_SHIPPED: tuple | None = None
_MODELS: dict = {}


def load_records(path) -> list[Record]:
    """The records of one evidence file (``HetsamInputError`` in one line when it is not one)."""
    from hetsam.io import read_json

    return parse_records(read_json(path, "evidence file"), str(path))[1]


def shipped_records() -> tuple[Record, ...]:
    """Every record shipped with hetsam (read once per process)."""
    global _SHIPPED
    if _SHIPPED is None:
        records = []
        for path in sorted(EVIDENCE_DIR.glob("*.json")):
            records += load_records(path)
        _SHIPPED = tuple(records)
    return _SHIPPED


def share_model(shares=None, *, level: float = LEVEL) -> ShareModel:
    """The model the planner reads: the shipped records plus ``shares`` (a path, records, or a list
    of either; a ShareModel is returned as it is). A record whose id is already in is skipped,
    so passing a shipped file again counts nothing twice."""
    if isinstance(shares, ShareModel):
        return shares
    if shares is None:
        if level not in _MODELS:
            _MODELS[level] = ShareModel(shipped_records(), level=level)
        return _MODELS[level]
    items = [shares] if isinstance(shares, (str, Path, Record)) else list(shares)
    records = list(shipped_records())
    seen = {r.id for r in records}
    for item in items:
        for r in [item] if isinstance(item, Record) else load_records(item):
            if r.id not in seen:
                seen.add(r.id)
                records.append(r)
    return ShareModel(records, level=level)
