"""One profile from several of the same machine and model (the bench's per-round profiles)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hetsam.profiling.schema import DeviceProfile, Profile
from hetsam.profiling.stats import median

__all__ = ["median_profile"]


def median_profile(profiles: Sequence) -> Profile:
    """One profile from several of the same machine and model: per device and batch size the
    median of the medians (and of the spreads), the median update, climb and auxiliary times, link bandwidth and
    latency, and contention slowdowns (with the job at each batch). Points or entries missing from any
    profile are dropped."""
    dicts = [p.to_dict() for p in profiles]
    out = copy.deepcopy(dicts[0])
    med = median

    def same(key_fn, items_of):
        index = [{key_fn(x): x for x in items_of(d)} for d in dicts]
        keys = [k for k in index[0] if all(k in ix for ix in index)]
        return keys, index

    keys, index = same(lambda d: d["id"], lambda d: d["devices"])
    devices = []
    for k in keys:
        entries = [ix[k] for ix in index]
        dev = copy.deepcopy(entries[0])
        tables = [e["grad_seconds"] for e in entries]
        sizes = [b for b in tables[0]["batch_sizes"] if all(b in t["batch_sizes"] for t in tables)]
        at = lambda t, field, b: t[field][t["batch_sizes"].index(b)]  # noqa: E731
        dev["grad_seconds"] = {
            "batch_sizes": sizes,
            "median": [med(at(t, "median", b) for t in tables) for b in sizes],
            "spread": [med(at(t, "spread", b) for t in tables) for b in sizes],
        }
        repeats = sum(t.get("repeats", 0) for t in tables)
        if repeats:  # optional in a profile
            dev["grad_seconds"]["repeats"] = repeats
        for key in DeviceProfile.TIME_FIELDS:
            values = [e.get(key) for e in entries if e.get(key) is not None]
            dev[key] = med(values) if values else None
        devices.append(dev)
    out["devices"] = devices
    keys, index = same(lambda x: (x["src"], x["dst"]), lambda d: d.get("links", []))
    out["links"] = [{**index[0][k], "bytes_per_second": med(ix[k]["bytes_per_second"] for ix in index),
                     "latency_seconds": med(ix[k]["latency_seconds"] for ix in index)} for k in keys]
    keys, index = same(lambda x: tuple(x["devices"]), lambda d: d.get("contention", []))
    out["contention"] = []
    for k in keys:
        entry = {"devices": list(k), "slowdown": [med(ix[k]["slowdown"][j] for ix in index) for j in (0, 1)]}
        for key in ("handoff_seconds", "round_trip_seconds"):  # optional: the median of those measured
            values = [ix[k][key] for ix in index if ix[k].get(key) is not None]
            if values:
                entry[key] = med(values)
        points = [{x["batch"]: x["slowdown"] for x in ix[k].get("by_job_batch", [])} for ix in index]
        common = sorted(set(points[0]).intersection(*points[1:]))
        if common:  # the slowdowns with the job at each batch all measured
            entry["by_job_batch"] = [{"batch": m, "slowdown": [med(p[m][j] for p in points) for j in (0, 1)]} for m in common]
        out["contention"].append(entry)
    out["provenance"] = {**dicts[0]["provenance"], "notes": f"median of {len(dicts)} profiles taken between bench rounds"}
    return Profile.from_dict(out, where="median profile")
