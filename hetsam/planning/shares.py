"""The expected share of SAM's gain: what the planner maximises within the time budget.

A plan's *share* is how much of SAM's accuracy gain over the base optimizer it keeps, measured
by ``examples/time_to_accuracy.py`` (paired seeds, equal epochs) and shipped as versioned data,
``hetsam/data/sam_shares.json``, with its provenance (tasks, seeds, epochs, date). For each
strategy the table holds measured points along one axis of its settings:

- ``sam_fraction`` (RST's p, interval's 1/k, late-phase's 1 − start): anchored at 0 (the base
  optimizer, share 0) and 1 (SAM, share 1);
- ``ascent_fraction`` (AsyncSAM's b'/b, at the measured staleness): anchored at 0;
- ``rho`` (MSAM's radius), or no axis (SAM, SAMPa at its λ).

Between points the share is interpolated linearly, after a monotone (isotonic) fit on the
``sam_fraction`` and ``ascent_fraction`` axes, where more of SAM cannot keep less of its gain.
Outside the measured range the nearest point holds. An AsyncSAM staleness above the measured one
reads the measured curve and says so in ``source``. A setting the table cannot speak for (an
AsyncSAM batch policy it did not measure, a strategy it has never seen) gets the old proxy —
the ascent fraction b'/b or p — and says so.

The shares come from two small tasks (an MLP on noisy digits and on MNIST-1D); they are a prior,
not a law. ``PlannerOptions(shares=...)`` / ``hetsam plan --shares FILE`` replace the table with
one of your own, in the same format. Torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetsam.errors import HetsamInputError

__all__ = ["Share", "ShareTable", "default_table", "TABLE_PATH", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
TABLE_PATH = Path(__file__).resolve().parents[1] / "data" / "sam_shares.json"
_AXES = (None, "sam_fraction", "ascent_fraction", "rho")
_MONOTONE = ("sam_fraction", "ascent_fraction")


@dataclass(frozen=True)
class Share:
    """A plan's expected share of SAM's gain, its standard error and where it came from."""

    value: float
    se: float | None
    source: str

    def to_dict(self) -> dict:
        return {"expected_share": self.value, "share_se": self.se, "share_source": self.source}


class ShareTable:
    """Measured shares per strategy (module docstring); ``share(plan, batch_size)`` reads it."""

    def __init__(self, data: dict, where: str = "share table"):
        self.where = where
        self.provenance, self._curves = _parse(data, where)
        self.summary = _summary(self.provenance)

    @classmethod
    def load(cls, path) -> "ShareTable":
        from hetsam.io import read_json

        return cls(read_json(path, "share table"), where=str(path))

    def strategies(self) -> tuple[str, ...]:
        return tuple(self._curves)

    def share(self, plan, batch_size: int) -> Share:
        spec = plan.spec
        entry = self._curves.get(plan.strategy)
        if entry is None:
            return Share(spec.fidelity(plan, batch_size)[0], None, "proxy: b'/b or p (not in the table)")
        axis, xs, ys, ses, tau, policy = entry
        if policy is not None and plan.ascent_batches != policy:
            return Share(spec.fidelity(plan, batch_size)[0], None,
                         f"proxy: b'/b (the table measured ascent_batches={policy}, not {plan.ascent_batches})")
        if axis is None:
            return Share(ys[0], ses[0], f"measured ({self.summary})")
        x = _coordinate(axis, plan, spec, batch_size)
        source = f"measured ({self.summary})"
        if axis == "ascent_fraction" and tau is not None and spec.staleness(plan) > tau:
            source = f"measured at τ={tau}, used for τ={spec.staleness(plan)} ({self.summary})"
        value, se = _interpolate(x, xs, ys, ses)
        if not any(abs(x - p) < 1e-9 for p in xs):
            source = "interpolated " + source
        return Share(value, se, source)

    def to_rows(self) -> list[dict]:
        """The table as rows (strategy, axis, x, share, se), for reports."""
        rows = []
        for name, (axis, xs, ys, ses, *_) in self._curves.items():
            rows += [{"strategy": name, "axis": axis, "x": x, "share": y, "se": s} for x, y, s in zip(xs, ys, ses)]
        return rows


def default_table() -> ShareTable:
    """The table shipped with hetsam (read once per process)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ShareTable.load(TABLE_PATH)
    return _DEFAULT


_DEFAULT: ShareTable | None = None


# ---- reading ---------------------------------------------------------------------------------------
def _parse(data: Any, where: str):
    def fail(path: str, problem: str):
        raise HetsamInputError(f"{where}: {path} {problem}; fix the file or re-create it with examples/fit_shares.py")

    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        fail("schema_version", f"must be {SCHEMA_VERSION}")
    prov = data.get("provenance")
    if not isinstance(prov, dict):
        fail("provenance", "must be an object (tasks, seeds, epochs, date)")
    strategies = data.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        fail("strategies", "must be a non-empty object of strategy name -> entry")
    curves = {}
    for name, entry in strategies.items():
        path = f"strategies.{json.dumps(name)[1:-1][:60]}"  # escaped: a name cannot break the line
        if not isinstance(entry, dict) or entry.get("axis") not in _AXES:
            fail(f"{path}.axis", f"must be one of {', '.join(str(a) for a in _AXES)}")
        axis, points = entry.get("axis"), entry.get("points")
        if not isinstance(points, list) or not points or len(points) > 1000:
            fail(f"{path}.points", "must be a list of 1 to 1000 points")
        xs, ys, ses = [], [], []
        for i, p in enumerate(points):
            if not isinstance(p, dict):
                fail(f"{path}.points[{i}]", "must be an object")
            x = 0.0 if axis is None else p.get("x")
            for key, value, low, high in (("x", x, 0.0, 100.0), ("share", p.get("share"), -10.0, 10.0),
                                          ("se", p.get("se", 0.0), 0.0, 10.0)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or not low <= value <= high:
                    fail(f"{path}.points[{i}].{key}", f"must be a number in [{low:g}, {high:g}]")
            xs.append(float(x))
            ys.append(float(p["share"]))
            ses.append(float(p.get("se", 0.0)))
        tau = entry.get("staleness")
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int) or not 0 <= tau <= 16):
            fail(f"{path}.staleness", "must be an integer in [0, 16]")
        policy = entry.get("ascent_batches")
        if policy not in (None, "lookahead", "independent"):
            fail(f"{path}.ascent_batches", "must be lookahead or independent")
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        xs, ys, ses = [xs[i] for i in order], [ys[i] for i in order], [ses[i] for i in order]
        if len(set(xs)) != len(xs):
            fail(f"{path}.points", "has two points at the same x")
        if axis in _MONOTONE:
            xs, ys, ses = _anchored(axis, xs, ys, ses)
        curves[name] = (axis, xs, ys, ses, tau, policy)
    return prov, curves


def _anchored(axis: str, xs, ys, ses):
    """Add the known ends (x = 0: share 0; for p-like axes x = 1: share 1), then a monotone fit."""
    from hetsam.cost.model import isotonic

    if xs[0] > 0:
        xs, ys, ses = [0.0] + xs, [0.0] + ys, [0.0] + ses
    if axis == "sam_fraction" and xs[-1] < 1.0:
        xs, ys, ses = xs + [1.0], ys + [1.0], ses + [0.0]
    return xs, isotonic(ys), ses


def _coordinate(axis: str, plan, spec, batch_size: int) -> float:
    if axis == "sam_fraction":
        return spec.sam_fraction(plan)
    if axis == "ascent_fraction":
        return spec.ascent_batch_size(plan, batch_size) / batch_size
    return float(spec.option(plan, "rho"))


def _interpolate(x: float, xs, ys, ses) -> tuple[float, float]:
    if x <= xs[0]:
        return ys[0], ses[0]
    if x >= xs[-1]:
        return ys[-1], ses[-1]
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            f = (x - xs[i]) / (xs[i + 1] - xs[i])
            return ys[i] + f * (ys[i + 1] - ys[i]), max(ses[i], ses[i + 1])
    return ys[-1], ses[-1]  # pragma: no cover - unreachable for sorted xs


def _summary(prov: dict) -> str:
    tasks = prov.get("tasks")
    bits = []
    if isinstance(tasks, list) and tasks:
        bits.append("+".join(" ".join(str(t).split())[:40] for t in tasks[:4]))
    if isinstance(prov.get("seeds"), int) and not isinstance(prov.get("seeds"), bool):
        bits.append(f"{prov['seeds']} seeds")
    if isinstance(prov.get("date"), str):
        bits.append(prov["date"][:10].replace("\n", " "))
    return ", ".join(bits) or "no provenance"
