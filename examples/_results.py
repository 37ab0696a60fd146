"""The study scripts' files: every output checked before any training, and the results JSON of
``examples/time_to_accuracy.py --json`` read with every field checked and bounded.

:func:`check_outputs` refuses, in one line, an output that could not be written after the work:
a missing or read-only folder, a folder named as the file, two flags naming one file, a plot
format matplotlib cannot write. :func:`load_results` refuses a results file that is not what
``time_to_accuracy.py --json`` writes, naming the first bad field; every number in it is bounded
like the flag it came from (``--seeds`` 2 to 1000, ``--epochs`` 1 to 10000, ...), so a hostile
file cannot make a reader train 10**29 seeds. ``planner_frontier.py``, ``alignment_probe.py``,
``evidence_from_runs.py`` and ``time_to_accuracy.py --from`` read results through it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

from hetsam import HetsamInputError, Plan

__all__ = ["check_outputs", "plot_format", "load_results", "check_results", "TASKS", "BATCH", "MAX_LABELS"]

TASKS = ("digits", "mnist1d", "mnist5k")  # examples/_tasks.py's (kept here: this module imports no torch model code)
BATCH = 64
MAX_LABELS = 1000
_FIX = "give a --json file of examples/time_to_accuracy.py"


# ---- outputs -----------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line (``prog: error: ...``, exit 2), without the usage block."""

    def error(self, message):
        from hetsam._notes import safe_text

        self.exit(2, f"{self.prog}: error: {safe_text(message)}\n")


def plot_format(path: str) -> str:
    """The format matplotlib writes ``path`` in (its suffix; png without one); refused when unknown."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise HetsamInputError(f"--plot {path!r} needs matplotlib: pip install matplotlib, or leave --plot out") \
            from None
    known = Figure().canvas.get_supported_filetypes()
    if fmt not in known:
        raise HetsamInputError(f"--plot {path!r}: matplotlib cannot write .{fmt}; use one of "
                               f"{', '.join(sorted(known))}")
    return fmt


def check_outputs(**paths) -> None:
    """Refuse (``HetsamInputError``, one line) any of ``flag=path`` that could not be written:
    called before any training, so that a bad path never costs the work."""
    from hetsam.io import check_writable

    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        name = "--" + flag.replace("_", "-")
        target = check_writable(path, name)
        folder = target.parent if str(target.parent) else Path(".")
        try:  # os.access is wrong for root and for read-only mounts: try it
            fd, probe = tempfile.mkstemp(dir=str(folder), prefix=".write-test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise HetsamInputError(f"{name} {str(path)!r}: cannot write in folder {str(folder)!r} "
                                   f"({exc.strerror or exc}); choose another folder") from None
        key = os.path.realpath(target)
        if key in seen:
            raise HetsamInputError(f"{seen[key]} and {name} both name {str(path)!r}; give each its own file")
        seen[key] = name
        if flag == "plot":
            plot_format(str(path))


# ---- the results JSON ----------------------------------------------------------------------------------
def load_results(path: str) -> dict:
    """The results file at ``path``, checked (:func:`check_results`)."""
    from hetsam.io import read_json

    return check_results(read_json(path, "results"), str(path))


def check_results(data, where: str) -> dict:
    """``data`` if it is a results document with every field in bounds; ``HetsamInputError``
    naming the first bad field otherwise."""
    def fail(field: str, problem: str):
        raise HetsamInputError(f"{where}: {field} {problem}; {_FIX}")

    _obj(data, "the document", fail)
    meta = _obj(data.get("meta"), "meta", fail)
    args = _obj(meta.get("args"), "meta.args", fail)
    seeds = _int(args.get("seeds"), "meta.args.seeds", 2, 1000, fail)
    epochs = _int(args.get("epochs"), "meta.args.epochs", 1, 10_000, fail)
    _num(args.get("rho"), "meta.args.rho", 0.0, 10.0, fail)
    noise = _num(args.get("noise"), "meta.args.noise", 0.0, 1.0, fail)
    if noise >= 1.0:
        fail("meta.args.noise", "must be below 1")
    if args.get("train_subset") is not None:
        _int(args["train_subset"], "meta.args.train_subset", 1, 10**7, fail)
    budgets = args.get("budgets", [])
    if not isinstance(budgets, list) or len(budgets) > 100:
        fail("meta.args.budgets", "must be a list of at most 100 numbers")
    for i, b in enumerate(budgets):
        _num(b, f"meta.args.budgets[{i}]", 0.0, 100.0, fail, low_open=True)
    for key in ("date", "torch", "hetsam"):
        if meta.get(key) is not None and (not isinstance(meta[key], str) or len(meta[key]) > 100):
            fail(f"meta.{key}", "must be a string of at most 100 characters")
    tasks = _obj(data.get("tasks"), "tasks", fail)
    if not tasks or any(name not in TASKS for name in tasks):
        fail("tasks", f"must hold 1 to {len(TASKS)} of the tasks {', '.join(TASKS)}")
    for name, task in tasks.items():
        _task(_obj(task, f"tasks.{name}", fail), f"tasks.{name}", seeds, epochs, fail)
    return data


def _task(task: dict, at: str, seeds: int, epochs: int, fail) -> None:
    labels = task.get("labels")
    if not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS:
        fail(f"{at}.labels", f"must be a list of 2 to {MAX_LABELS} labels")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip() or len(label) > 200 or "\n" in label:
            fail(f"{at}.labels[{i}]", "must be a one-line label of 1 to 200 characters")
    if len(set(labels)) != len(labels) or not {"sgd", "sam"} <= set(labels):
        fail(f"{at}.labels", "must be unique and hold 'sgd' and 'sam'")
    plans = _obj(task.get("plans"), f"{at}.plans", fail)
    for label in labels:
        try:
            plan = Plan.from_dict(plans.get(label))
        except (HetsamInputError, TypeError, ValueError) as exc:
            why = str(exc).splitlines()[0][:80] if str(exc) else repr(exc)
            fail(f"{at}.plans.{_short(label)}", f"is not a plan ({why})")
        if plan.batch_size not in (None, BATCH):
            fail(f"{at}.plans.{_short(label)}.batch_size", f"must be {BATCH} (the benchmark's batch) or null")
        if (plan.option("ascent_batch_size", None) or 0) > BATCH:
            fail(f"{at}.plans.{_short(label)}.ascent_batch_size", f"must be at most {BATCH} (the benchmark's batch)")
    ratios = _obj(task.get("time_ratio"), f"{at}.time_ratio", fail)
    for label in labels:
        _num(ratios.get(label), f"{at}.time_ratio.{_short(label)}", 0.0, 1e6, fail, low_open=True)
    equal = _obj(task.get("equal_epochs"), f"{at}.equal_epochs", fail)
    for label in labels:
        _runs(equal.get(label), f"{at}.equal_epochs.{_short(label)}", seeds, epochs, epochs, fail)
    budgets = _obj(task.get("budgets", {}), f"{at}.budgets", fail)
    if len(budgets) > 100:
        fail(f"{at}.budgets", "must hold at most 100 budgets")
    for b, runs in budgets.items():
        try:
            value = float(b)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= 100):
            fail(f"{at}.budgets", f"has the key {_short(b)!r}: each must be a number above 0 and at most 100")
        runs = _obj(runs, f"{at}.budgets.{_short(b)}", fail)
        for label in labels:
            _runs(runs.get(label), f"{at}.budgets.{_short(b)}.{_short(label)}", seeds, 1, 10**6, fail)


def _runs(runs, at: str, seeds: int, low: int, high: int, fail) -> None:
    if not isinstance(runs, list) or len(runs) != seeds:
        fail(at, f"must be a list of {seeds} runs (one per seed of meta.args.seeds)")
    for i, run in enumerate(runs):
        _obj(run, f"{at}[{i}]", fail)
        _num(run.get("test"), f"{at}[{i}].test", 0.0, 1.0, fail)
        _num(run.get("seconds"), f"{at}[{i}].seconds", 0.0, 1e9, fail)
        n = _int(run.get("epochs"), f"{at}[{i}].epochs", low, high, fail)
        curve = run.get("curve", [])
        if not isinstance(curve, list) or len(curve) > n or not all(
                isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p) for p in curve):
            fail(f"{at}[{i}].curve", f"must be a list of at most {n} [seconds, accuracy] pairs")


def _obj(value, at: str, fail) -> dict:
    if not isinstance(value, dict):
        fail(at, "must be a JSON object")
    return value


def _finite(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _int(value, at: str, low: int, high: int, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(at, f"must be an integer from {low} to {high}")
    return value


def _num(value, at: str, low: float, high: float, fail, low_open: bool = False) -> float:
    if not _finite(value) or not (low < value if low_open else low <= value) or value > high:
        fail(at, f"must be a number {'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} "
                 f"{high:g}")
    return float(value)


def _short(text) -> str:
    return json.dumps(str(text))[1:-1][:60]
