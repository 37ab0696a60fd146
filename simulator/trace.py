"""Chrome-trace JSON of a simulated timeline (the format ``torch.profiler`` exports).

The JSON object format (Trace Event Format): ``{"traceEvents": [...], "displayTimeUnit": "ms"}``.
Each track (a device, or one direction of a link) is a *process* named by ``"ph": "M"``
metadata events; each interval is a complete event ``"ph": "X"`` with ``ts`` and ``dur`` in
microseconds. Perfetto (ui.perfetto.dev) and chrome://tracing open it.
"""

from __future__ import annotations

import json

__all__ = ["chrome_trace", "write_chrome_trace"]

_THREADS = {"descent": 1, "update": 1, "loader": 1, "wait": 1, "ascent": 2, "copy": 3, "handover": 3, "allreduce": 4}


def chrome_trace(result) -> dict:
    """The trace of a :class:`~hetsam.simulator.SimResult`'s timeline, as a dict."""
    pids = {track: i + 1 for i, track in enumerate(result.tracks)}
    events: list[dict] = []
    for track, pid in pids.items():
        label = result.tracks[track]
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                       "args": {"name": f"{track} ({label})" if label else track}})
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        for thread in sorted({_THREADS.get(e.category, 1) for e in result.timeline if e.track == track}):
            name = {1: "descent", 2: "ascent", 3: "copy", 4: "all-reduce"}[thread]
            events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": thread, "args": {"name": name}})
    for e in result.timeline:
        events.append({
            "name": e.name, "cat": e.category, "ph": "X",
            "ts": e.start * 1e6, "dur": e.duration * 1e6,
            "pid": pids[e.track], "tid": _THREADS.get(e.category, 1),
            "args": {"iteration": e.iteration},
        })
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "hetsam.simulator",
            "plan": result.plan.describe(),
            "iteration_seconds_mean": result.iteration_seconds["mean"],
            "seed": result.seed,
        },
    }


def write_chrome_trace(result, path) -> None:
    """Write :func:`chrome_trace` of ``result`` to ``path`` atomically (``hetsam.io``)."""
    from hetsam.io import write_text

    write_text(path, json.dumps(chrome_trace(result), allow_nan=False) + "\n", "trace")
