"""Evidence records: what a share of SAM's gain rests on, with its provenance (torch-free).

A record is one setting of one study: a strategy at its own numbers (``settings``: RST's p,
interval's k, late-phase's start, MSAM's ρ, AsyncSAM's b'/b, τ and batch policy, SAMPa's λ), on
one task (dataset, model, epochs, base optimizer, batch size), with

    share = (acc_strategy − acc_base) / (acc_SAM − acc_base)    (same table, same schedule)

and its standard error, or, where the source gives no number, a ``claim`` and no share. Its
``source`` says where it comes from: ``paper`` (citation, arXiv id, table), ``hetsam`` (hetsam's
own benchmark, with its command) or ``user`` (the user's own ``hetsam.study`` of their model).
A record of a close relative (LookSAM for ``interval``) names the method it ran; it informs the
spread between tasks, not the strategy's mean (``hetsam.evidence.model``).

Files are JSON, ``{"schema_version": 2, "kind": "hetsam evidence", "provenance": {...},
"records": [...]}`` (docs/architecture.md, "Evidence"). Every field is checked and bounded; a bad
one is refused in one line that names it.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from hetsam.errors import HetsamInputError

__all__ = ["SCHEMA_VERSION", "KIND", "SOURCES", "Record", "parse_records", "records_document", "paired_share",
           "share_from_means", "paired_records"]

SCHEMA_VERSION = 2
KIND = "hetsam evidence"
SOURCES = ("paper", "hetsam", "user")
_MAX_RECORDS = 100_000
_TEXT = 2000  # characters of any one string field


@dataclass(frozen=True)
class Record:
    """One setting of one study (module docstring)."""

    id: str
    strategy: str | None  # the hetsam strategy it informs (None: context only, e.g. ESAM)
    method: str  # what ran, as the source names it
    settings: dict
    task: dict
    source: dict
    share: float | None = None
    se: float | None = None
    claim: str | None = None
    accuracy: dict | None = None
    notes: str = ""
    relative: bool = False  # a close relative of the strategy, not the strategy itself
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.source["kind"]

    @property
    def has_number(self) -> bool:
        return self.share is not None and self.se is not None

    @property
    def base_optimizer(self) -> str | None:
        return self.task.get("base_optimizer")

    def to_dict(self) -> dict:
        d = {"id": self.id, "strategy": self.strategy, "method": self.method, "relative": self.relative,
             "settings": self.settings, "task": self.task, "share": self.share, "se": self.se, "claim": self.claim,
             "source": self.source}
        if self.accuracy is not None:
            d["accuracy"] = self.accuracy
        if self.notes:
            d["notes"] = self.notes
        d.update(self.extra)
        return d


def records_document(records, provenance: dict) -> dict:
    """The JSON document of ``records`` (for ``hetsam.io.write_text(..., json.dumps(doc))``)."""
    return {"schema_version": SCHEMA_VERSION, "kind": KIND, "provenance": provenance,
            "records": [r.to_dict() for r in records]}


# ---- shares from accuracies -------------------------------------------------------------------------
def paired_share(acc, base, sam) -> tuple[float, float]:
    """``mean(acc − base) / mean(sam − base)`` over paired seeds, and its standard error by the
    delta method with the covariance of the two paired differences (SAM's own gain is noisy
    too). NaN for both when SAM did not beat the base or there are fewer than two seeds."""
    d = [a - b for a, b in zip(acc, base)]
    e = [a - b for a, b in zip(sam, base)]
    n = len(d)
    if n < 2 or n != len(e):
        return float("nan"), float("nan")
    md, me = statistics.mean(d), statistics.mean(e)
    if me <= 0:
        return float("nan"), float("nan")
    r = md / me
    cov = sum((x - md) * (y - me) for x, y in zip(d, e)) / (n - 1)
    var = (statistics.variance(d) - 2 * r * cov + r * r * statistics.variance(e)) / n / (me * me)
    return r, math.sqrt(max(var, 0.0))


def share_from_means(base: float, sam: float, method: float, n: int, sd_base: float, sd_sam: float,
                     sd_method: float) -> tuple[float, float]:
    """The share from a table's means (unpaired runs, the base column shared by both gains) and
    its delta-method standard error; ``sd_*`` are the spreads over ``n`` seeds. NaN when SAM did
    not beat the base."""
    gain = sam - base
    if gain <= 0 or n < 1:
        return float("nan"), float("nan")
    r = (method - base) / gain
    vb, vs, vm = sd_base ** 2 / n, sd_sam ** 2 / n, sd_method ** 2 / n
    # var(d_m) = vm + vb, var(d_s) = vs + vb, cov(d_m, d_s) = vb
    var = ((vm + vb) - 2 * r * vb + r * r * (vs + vb)) / (gain * gain)
    return r, math.sqrt(max(var, 0.0))


def paired_records(runs: dict, base: str, sam: str, *, task: dict, source: dict, batch_size: int,
                   id_prefix: str, metric: str = "test accuracy") -> list[Record]:
    """Records from paired runs: ``runs`` maps a label to ``(plan, [score per seed])``, seeds
    paired across labels; ``base`` and ``sam`` are the labels of the two baselines. One record
    per distinct (strategy, settings): a second label of the same algorithm (AsyncSAM time-sliced
    and on pools at one b') adds nothing. Where SAM did not beat the base, a record says so with
    no share."""
    base_acc, sam_acc = runs[base][1], runs[sam][1]
    out, seen = [], set()
    for label, (plan, acc) in runs.items():
        if label in (base, sam) or plan.spec.exact_share is not None:
            continue
        settings = plan.spec.evidence_settings(plan, batch_size)
        key = (plan.strategy, json.dumps(settings, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        n = min(len(acc), len(base_acc), len(sam_acc))
        share, se = paired_share(acc[:n], base_acc[:n], sam_acc[:n])
        ok = math.isfinite(share) and math.isfinite(se)
        stat = {"metric": metric, "seeds": n, "paired": True,
                **{k: [statistics.mean(v[:n]), statistics.stdev(v[:n]) if n > 1 else 0.0]
                   for k, v in (("base", base_acc), ("SAM", sam_acc), ("method", acc))}}
        slug = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
        out.append(Record(f"{id_prefix}-{plan.strategy}-{slug}"[:200], plan.strategy, plan.spec.title or plan.strategy,
                          settings, dict(task), dict(source), share if ok else None, se if ok else None,
                          None if ok else f"SAM did not beat the base optimizer over {n} paired seeds: no share",
                          stat))
    return out


# ---- reading ------------------------------------------------------------------------------------------
def parse_records(data: Any, where: str) -> tuple[dict, list[Record]]:
    """``(provenance, records)`` of an evidence document; ``HetsamInputError`` naming the bad field."""
    def fail(path: str, problem: str):
        raise HetsamInputError(f"{where}: {path} {problem}; fix the file or write it again with hetsam.study")

    if not isinstance(data, dict):
        fail("the document", "must be a JSON object")
    version = data.get("schema_version")
    if version == 1 and "strategies" in data:
        fail("schema_version", "is 1, a share table of hetsam < 0.2; evidence files are schema_version 2 (records "
                               "with provenance): run hetsam.study, or examples/time_to_accuracy.py --evidence")
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        fail("schema_version", f"must be {SCHEMA_VERSION}")
    if data.get("kind") != KIND:
        fail("kind", f"must be {KIND!r}")
    prov = data.get("provenance", {})
    if not isinstance(prov, dict):
        fail("provenance", "must be an object")
    raw = data.get("records")
    if not isinstance(raw, list) or not raw or len(raw) > _MAX_RECORDS:
        fail("records", f"must be a list of 1 to {_MAX_RECORDS:,} records")
    records, seen = [], set()
    for i, r in enumerate(raw):
        rec = _record(r, f"records[{i}]", fail)
        if rec.id in seen:
            fail(f"records[{i}].id", f"repeats {_show(rec.id)}: ids must be unique")
        seen.add(rec.id)
        records.append(rec)
    return prov, records


def _record(r: Any, path: str, fail) -> Record:
    if not isinstance(r, dict):
        fail(path, "must be an object")
    ident = _text(r.get("id"), f"{path}.id", fail, required=True, limit=200)
    strategy = _text(r.get("strategy"), f"{path}.strategy", fail, limit=64)
    method = _text(r.get("method"), f"{path}.method", fail, required=True, limit=200)
    relative = r.get("relative", False)
    if not isinstance(relative, bool):
        fail(f"{path}.relative", "must be true or false")
    settings = _flat(r.get("settings", {}), f"{path}.settings", fail)
    task = _flat(r.get("task", {}), f"{path}.task", fail)
    source = _flat(r.get("source"), f"{path}.source", fail)
    if source.get("kind") not in SOURCES:
        fail(f"{path}.source.kind", f"must be one of {', '.join(SOURCES)}")
    share, se = r.get("share"), r.get("se")
    claim = _text(r.get("claim"), f"{path}.claim", fail)
    if share is None or se is None:
        if share is not None or se is not None:
            fail(f"{path}", "has a share without its se (or an se without its share): give both, or neither and a claim")
        if claim is None:
            fail(f"{path}.claim", "is needed when the record has no share")
    else:
        share = _number(share, f"{path}.share", -100.0, 100.0, fail)
        se = _number(se, f"{path}.se", 0.0, 100.0, fail)
    accuracy = r.get("accuracy")
    if accuracy is not None and not isinstance(accuracy, dict):
        fail(f"{path}.accuracy", "must be an object")
    notes = _text(r.get("notes"), f"{path}.notes", fail) or ""
    return Record(ident, strategy, method, settings, task, source, share, se, claim, accuracy, notes, relative)


def _text(value, path: str, fail, required: bool = False, limit: int = _TEXT) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        fail(path, f"must be a non-empty string of at most {limit} characters")
    return value


def _number(value, path: str, low: float, high: float, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        fail(path, f"must be a number in [{low:g}, {high:g}]")
    return float(value)


def _flat(value, path: str, fail) -> dict:
    """An object of names to numbers, strings, booleans or null (settings, task, source)."""
    if not isinstance(value, dict):
        fail(path, "must be an object")
    if len(value) > 64:
        fail(path, "has more than 64 entries")
    for key, v in value.items():
        if len(key) > 64:
            fail(path, "has a key over 64 characters")
        if v is None or isinstance(v, bool) or isinstance(v, str) and len(v) <= _TEXT:
            continue
        if isinstance(v, (int, float)) and math.isfinite(v) and abs(v) <= 1e12:
            continue
        fail(f"{path}.{_show(key)}", "must be a number (|x| <= 1e12), a string, true/false or null")
    return dict(value)


def _show(text: str) -> str:
    return json.dumps(text)[1:-1][:60]
