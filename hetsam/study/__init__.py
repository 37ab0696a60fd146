"""``hetsam.study``: measure, on your own model and data, how much of SAM's gain each plan keeps.

    result = hetsam.study(make_model, loss_fn, (x, y), evaluate, epochs=30, seeds=3, lr=0.05, momentum=0.9)
    print(result.table())            # then: hetsam plan --shares shares.json

The candidates are the planner's plans for this machine (``hetsam.study.candidates``), each run
``seeds`` times for ``epochs`` epochs, paired with SGD and SAM (``hetsam.study.runner``), seed
after seed (``hetsam.study.schedule``). Every finished run goes to a run log beside ``out``
(``hetsam.study.runlog``), so a restart resumes. After each complete seed from the second on,
``out`` is rewritten as an evidence file (``hetsam.evidence``; ``hetsam.study.result``) that
``hetsam plan --shares`` and ``PlannerOptions(shares=...)`` read. README, "A study on your own
model".

``hetsam.study`` is this module, and calling it calls :func:`study`: an ``import hetsam.study``
(which makes the package attribute the module) does not hide the function.
"""

from __future__ import annotations

import sys
import time
import types

import torch

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.study.result import StudyResult, measured, study_records, write_evidence
from hetsam.study.schedule import Schedule

__all__ = ["study", "StudyResult"]

MAX_SEEDS = 1000
MAX_EPOCHS = 100_000


def study(make_model, loss_fn, train_data, evaluate, *, epochs: int, strategies=None, seeds: int = 3,
          budget: float | None = None, out="shares.json", base_optimizer=torch.optim.SGD, rho: float = 0.05,
          batch_size: int = 64, task: str | None = None, planner_options=None, progress: bool = True, log=None,
          **base_kwargs) -> StudyResult:
    """Measure the share of SAM's gain each of the planner's plans keeps on your model and data.

    Args:
        make_model: ``make_model()`` -> a fresh ``nn.Module``, called right after
            ``torch.manual_seed(seed)`` (every strategy of a seed starts from the same weights).
        loss_fn: ``loss_fn(model, batch)``, as ``hetsam.AutoSAM`` takes it.
        train_data: a ``torch.utils.data.Dataset`` or a tuple of equal-length tensors; each
            epoch reads a permutation seeded by the seed, the same for every strategy.
        evaluate: ``evaluate(model) -> float``, higher is better (held-out accuracy), called
            once at the end of each run with the model in eval mode.
        epochs: epochs per run (1 to 100,000; required: it decides both the shares and the cost).
        strategies: the strategies to measure besides SGD and SAM (None: every one the planner
            plans that the base optimizer does not refuse), each at ``report.best_of(name)``.
        seeds: paired seeds (2 to 1,000; seed s uses ``torch.manual_seed(s)``).
        budget: seconds of wall time for this call (None: no bound); a seed is not started, nor
            a run of it, when the estimate says it would end past the budget.
        out: the evidence file (its run log is ``out + ".runs.json"``).
        base_optimizer: the base optimizer class; ``**base_kwargs`` (``lr``, ``momentum``, ...) go to it.
        rho: SAM's radius for SAM and the strategies that use the user's ρ.
        batch_size: samples per step (the last batch of an epoch may be smaller).
        task: the task's name in the records (default: the model's class name).
        planner_options: as ``AutoSAM``'s (``{"profile": ...}`` plans on that profile without
            measuring; ``{"shares": out}`` plans with this study's own file; ``budget`` there is
            the planner's per-step budget, x SGD's step). Its ``strategies`` are this call's; its
            ``base_optimizer`` family defaults to the study's.
        progress: a progress bar with the remaining time; False also silences ``log``.
        log: where one-line messages go (default: stderr when ``progress``, else nowhere).

    Returns a :class:`StudyResult`. Bad input raises a one-line ``HetsamInputError`` before
    anything trains. Ctrl-C loses at most the run in progress: run the same call again. A run
    log written with other settings is refused (delete it, or give another ``out``); a change
    inside ``make_model``, ``loss_fn`` or ``evaluate`` is invisible to it. The study seeds
    torch's global generator (seed 0 for the planner's model, then each run's seed).
    """
    from hetsam.io import check_writable
    from hetsam.optim.sam import check_base_optimizer, check_group
    from hetsam.study.candidates import plan_candidates
    from hetsam.study.runlog import RunLog
    from hetsam.study.runner import PairedData

    started = time.perf_counter()
    _checks.integer(seeds, "seeds", low=2, high=MAX_SEEDS, hint="shares are paired over at least 2 seeds")
    _checks.integer(epochs, "epochs", low=1, high=MAX_EPOCHS)
    _checks.optional(_checks.number, budget, "budget", low=0.0, high=1e9, low_open=True,
                     hint="seconds of wall time, or None for no bound")
    _checks.integer(batch_size, "batch_size", low=1, high=2**31 - 1)
    check_group({"rho": rho, "adaptive": False, "eta": 0.0})
    _checks.number(rho, "rho", low=0.0, low_open=True, hint="SAM at rho=0 is SGD, and a share needs SAM's gain")
    _checks.choice(progress, "progress", (True, False))
    for name, fn in (("make_model", make_model), ("loss_fn", loss_fn), ("evaluate", evaluate)):
        if not callable(fn):
            raise HetsamInputError(f"{name} must be callable; see help(hetsam.study)")
    if log is not None and not callable(log):
        raise HetsamInputError("log must be a callable taking one line of text, or None")
    if task is not None and (not isinstance(task, str) or not task.strip() or len(task) > 200):
        raise HetsamInputError("task must be a non-empty name of at most 200 characters, or None")
    if strategies is not None and not isinstance(strategies, str):
        strategies = list(strategies)
    if strategies == []:
        raise HetsamInputError("strategies is empty: name at least one strategy, or None for every planned one")
    check_base_optimizer(base_optimizer)
    out = str(out)
    check_writable(out, "study evidence file")
    check_writable(out + ".runs.json", "study run log")
    data = PairedData(train_data, batch_size)
    say = log if log is not None else (_stderr if progress else (lambda line: None))

    torch.manual_seed(0)
    model = make_model()
    if not isinstance(model, torch.nn.Module):
        raise HetsamInputError(f"make_model() returned {type(model).__name__}; it must return a fresh torch.nn.Module")
    setup = _Setup(model, data, base_optimizer, base_kwargs, rho, epochs, task)
    runlog = RunLog.open(out + ".runs.json", setup.fingerprint)  # a log of other settings: refused before planning
    candidates, _ = plan_candidates(model, loss_fn, data.first_batch(), base_optimizer=base_optimizer,
                                    base_kwargs=base_kwargs, strategies=strategies, planner_options=planner_options,
                                    progress=progress, log=say)
    if len(candidates) < 3:
        raise HetsamInputError("no strategy to measure besides SGD and SAM (the base optimizer refuses the others, "
                               "or the planner has no plan for them); name some with strategies=[...]")
    say("hetsam study: " + "; ".join(c.label.replace("\n", " ") for c in candidates)
        + f"; {seeds} seed(s) x {epochs} epoch(s)")
    sched = Schedule(candidates, seeds, epochs, runlog, budget, started, progress)
    written = {"seeds": 0, "records": []}

    def on_seed(complete: int) -> None:
        if complete >= 2:
            written.update(seeds=complete, records=_write(out, candidates, complete, setup, sched, say))

    try:
        sched.run(lambda c, seed: _train(make_model, loss_fn, data, evaluate, c, seed, setup), on_seed)
    finally:
        sched.close()
    complete = sched.complete_seeds()
    if sched.stopped:
        say(f"hetsam study: stopped: {sched.stopped}")
    if complete < 2:
        say(f"hetsam study: {complete} complete seed(s), fewer than the 2 a share needs: {out} not written; "
            "run again (with a larger budget) to resume")
    elif written["seeds"] != complete:
        on_seed(complete)
    records = written["records"]
    return StudyResult(records, {c.strategy: sched.scores(c, complete) for c in candidates},
                       {c.strategy: c.label for c in candidates}, {c.strategy: c.plan for c in candidates},
                       time.perf_counter() - started, {c.strategy: sched.seconds(c, complete) for c in candidates},
                       complete, sched.trained, sched.reused, sched.stopped, out if records else None,
                       candidates[0].strategy, candidates[1].strategy)


class _Setup:
    """The settings every run shares, their fingerprint, and the records' task."""

    def __init__(self, model, data, base_optimizer, base_kwargs, rho, epochs, task):
        from hetsam.study.candidates import optimizer_name

        self.data, self.base_optimizer, self.base_kwargs = data, base_optimizer, dict(base_kwargs)
        self.rho, self.epochs = float(rho), epochs
        self.optimizer = optimizer_name(base_optimizer)
        self.model_name = type(model).__name__
        self.parameters = sum(p.numel() for p in model.parameters())
        self.task = task or self.model_name
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> dict:
        return {"task": self.task, "model": self.model_name, "parameters": self.parameters,
                "data": self.data.checksum(), "batch_size": self.data.batch_size, "rho": self.rho,
                "base_optimizer": f"{getattr(self.base_optimizer, '__module__', '')}."
                                  f"{getattr(self.base_optimizer, '__qualname__', self.optimizer)}",
                "base_kwargs": {k: repr(v) for k, v in sorted(self.base_kwargs.items())}, "epochs": self.epochs}

    def task_dict(self) -> dict:
        return {"name": self.task, "model": f"{self.model_name} ({self.parameters:,} parameters)",
                "dataset": self.data.describe(), "epochs": self.epochs, "base_optimizer": self.optimizer,
                "batch_size": self.data.batch_size, "rho": self.rho}


def _train(make_model, loss_fn, data, evaluate, candidate, seed: int, setup: _Setup) -> dict:
    from hetsam.study.runner import train_run

    return train_run(make_model, loss_fn, data, evaluate, candidate.plan, seed=seed, epochs=setup.epochs,
                     base_optimizer=setup.base_optimizer, rho=setup.rho, base_kwargs=setup.base_kwargs)


def _write(out: str, candidates, complete: int, setup: _Setup, sched, say) -> list:
    """Write the evidence file of the first ``complete`` seeds; returns its records."""
    import hetsam
    from hetsam.study.runlog import fingerprint_id

    if complete < 2:
        return []
    study_id = f"{setup.task}-{fingerprint_id(setup.fingerprint)}"
    source = {"kind": "user", "study": study_id, "date": time.strftime("%Y-%m-%d"), "seeds": complete,
              "epochs": setup.epochs, "hetsam": hetsam.__version__}
    base, sam = ((c.plan, sched.scores(c, complete)) for c in candidates[:2])
    records = study_records(base, sam, measured(sched.runlog, candidates, complete, setup.epochs),
                            task=setup.task_dict(), source=source, batch_size=setup.data.batch_size,
                            study_id=study_id)
    if not records:
        return []
    write_evidence(out, records, provenance={
        "kind": "user", "command": "hetsam.study", "study": study_id, "seeds": complete, "epochs": setup.epochs,
        "hetsam": hetsam.__version__, "task": setup.task_dict(), "fingerprint": setup.fingerprint,
        "plans": {c.label.replace("\n", " "): c.plan.to_dict() for c in candidates}})
    say(f"hetsam study: {complete} complete seed(s) in {out}")
    return records


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _CallableModule(types.ModuleType):
    """``hetsam.study(...)`` calls :func:`study` even after ``import hetsam.study`` made the
    package attribute this module."""

    def __call__(self, *args, **kwargs) -> StudyResult:
        return study(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
