"""``hetsam.study``: measure, on your own model and data, how much of SAM's gain each plan keeps.

    result = hetsam.study(make_model, loss_fn, (x, y), evaluate, epochs=30, seeds=3, lr=0.05, momentum=0.9)
    print(result.table())            # then: hetsam plan --shares shares.json

The candidates are the planner's plans for this machine (``hetsam.study.candidates``), or the
plans given (``plans={label: Plan}``), each run ``seeds`` times for ``epochs`` epochs, paired
with SGD and SAM (``hetsam.study.runner``), seed after seed (``hetsam.study.schedule``). Every
finished run goes to a run log beside ``out`` (``hetsam.study.runlog``; ``hetsam.study.session``
holds the settings every run shares), so a restart resumes. After each complete seed from the
second on, ``out`` is rewritten as an evidence file (``hetsam.evidence``;
``hetsam.study.result``) that ``hetsam plan --shares`` and ``PlannerOptions(shares=...)`` read.
README, "A study on your own model".

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
from hetsam.study.session import MAX_EPOCHS, Runs  # noqa: F401  (MAX_EPOCHS: as before)

__all__ = ["study", "StudyResult", "Runs"]

MAX_SEEDS = 1000


def study(make_model, loss_fn, train_data, evaluate, *, epochs: int, strategies=None, plans=None, seeds: int = 3,
          budget: float | None = None, out="shares.json", runs=None, base_optimizer=torch.optim.SGD,
          rho: float = 0.05, batch_size: int = 64, task: str | None = None, schedule=None, curve: bool = False,
          planner_options=None, progress: bool = True, log=None, **base_kwargs) -> StudyResult:
    """Measure the share of SAM's gain each of the planner's plans (or the ``plans`` given) keeps
    on your model and data.

    Args:
        make_model: ``make_model()`` -> a fresh ``nn.Module``, called right after
            ``torch.manual_seed(seed)`` (every strategy of a seed starts from the same weights).
        loss_fn: ``loss_fn(model, batch)``, as ``hetsam.AutoSAM`` takes it.
        train_data: a ``torch.utils.data.Dataset`` or a tuple of equal-length tensors; each
            epoch reads a permutation seeded by the seed, the same for every strategy. Or a
            callable ``seed -> either``: each seed's own data, the same for every strategy at
            that seed (e.g. that seed's noisy labels).
        evaluate: ``evaluate(model) -> float``, higher is better (held-out accuracy), called
            at the end of each run (and of each epoch with ``curve``) with the model in eval mode.
        epochs: epochs per run (1 to 100,000; required: it decides both the shares and the cost).
        strategies: the strategies to measure besides SGD and SAM (None: every one the planner
            plans that the base optimizer does not refuse), each at ``report.best_of(name)``.
        plans: ``{label: hetsam.Plan}`` to measure instead of the planner's plans (no planning;
            SGD and SAM are added as ``"sgd"`` and ``"sam"`` unless a plan of theirs is given).
            The labels key the result and are kept in the run log; a plan given under two labels
            trains once. Not with ``strategies`` or ``planner_options``.
        seeds: paired seeds (2 to 1,000; seed s uses ``torch.manual_seed(s)``).
        budget: seconds of wall time for this call (None: no bound); a seed is not started, nor
            a run of it, when the estimate says it would end past the budget.
        out: the evidence file, or None to write none (the records are in the result).
        runs: the run log (default ``out + ".runs.json"``; with ``out=None`` and ``runs=None``
            the log stays in memory: nothing is saved, and an interruption loses every run).
        base_optimizer: the base optimizer class; ``**base_kwargs`` (``lr``, ``momentum``, ...) go to it.
        rho: SAM's radius for SAM and the strategies that use the user's ρ.
        batch_size: samples per step (the last batch of an epoch may be smaller).
        task: the task's name in the records (default: the model's class name).
        schedule: ``schedule(optimizer, total_steps)`` -> an LR scheduler for each run, stepped
            once after every step, e.g. ``lambda opt, n: LambdaLR(opt, lambda s: 0.5 * (1 +
            math.cos(math.pi * s / n)))``. The run log records that a schedule is used, not
            which: like ``make_model``, a callable cannot be fingerprinted.
        curve: also score after every epoch; each run keeps ``curve``, ``[training seconds,
            score]`` per epoch (``result.runs``).
        planner_options: as ``AutoSAM``'s (``{"profile": ...}`` plans on that profile without
            measuring; ``{"shares": out}`` plans with this study's own file; ``budget`` there is
            the planner's per-step budget, x SGD's step). Its ``strategies`` are this call's; its
            ``base_optimizer`` family defaults to the study's.
        progress: a progress bar with the remaining time; False also silences ``log``.
        log: where one-line messages go (default: stderr when ``progress``, else nowhere).

    Returns a :class:`StudyResult`. Bad input raises a one-line ``HetsamInputError`` before
    anything trains. Ctrl-C loses at most the run in progress: run the same call again. A run
    log written with other settings is refused (delete it, or give another ``out``/``runs``); a
    change inside ``make_model``, ``loss_fn``, ``evaluate`` or ``schedule`` is invisible to it.
    Every run is unguarded (``guard=False``): a diverging strategy is measured as it diverged.
    The study seeds torch's global generator (seed 0 for the planner's model, then each run's seed).
    """
    from hetsam.io import check_writable
    from hetsam.study.candidates import given_candidates, plan_candidates

    started = time.perf_counter()
    _checks.integer(seeds, "seeds", low=2, high=MAX_SEEDS, hint="shares are paired over at least 2 seeds")
    _checks.optional(_checks.number, budget, "budget", low=0.0, high=1e9, low_open=True,
                     hint="seconds of wall time, or None for no bound")
    _checks.choice(progress, "progress", (True, False))
    if log is not None and not callable(log):
        raise HetsamInputError("log must be a callable taking one line of text, or None")
    if plans is not None and (strategies is not None or planner_options is not None):
        raise HetsamInputError("plans= studies the plans given, without the planner: leave out strategies= and "
                               "planner_options=")
    if strategies is not None and not isinstance(strategies, str):
        strategies = list(strategies)
    if strategies == []:
        raise HetsamInputError("strategies is empty: name at least one strategy, or None for every planned one")
    if out is not None:
        out = str(out)
        check_writable(out, "study evidence file")
    if runs is None and out is not None:
        runs = out + ".runs.json"
    session = Runs(make_model, loss_fn, train_data, evaluate, epochs=epochs, runs=runs, base_optimizer=base_optimizer,
                   rho=rho, batch_size=batch_size, task=task, schedule=schedule, curve=curve, **base_kwargs)
    say = log if log is not None else (_stderr if progress else (lambda line: None))
    if plans is not None:  # SGD and SAM alone measure SAM's gain, and no share
        candidates = given_candidates(plans, session.groups)
    else:
        candidates, _ = plan_candidates(session.model, loss_fn, session.data(0).first_batch(),
                                        base_optimizer=base_optimizer, base_kwargs=base_kwargs, strategies=strategies,
                                        planner_options=planner_options, progress=progress, log=say)
        if len(candidates) < 3:
            raise HetsamInputError("no strategy to measure besides SGD and SAM (the base optimizer refuses the "
                                   "others, or the planner has no plan for them); name some with strategies=[...]")
    say("hetsam study: " + "; ".join(c.label.replace("\n", " ") for c in candidates)
        + f"; {seeds} seed(s) x {epochs} epoch(s)")
    sched = Schedule(candidates, seeds, epochs, session.log, budget, started, progress)
    written = {"seeds": 0, "records": []}

    def on_seed(complete: int) -> None:
        if complete >= 2:
            written.update(seeds=complete, records=_records(out, candidates, complete, session, sched, say))
        elif out is None:
            say(f"hetsam study: {complete} complete seed(s)")

    try:
        sched.run(lambda c, seed: session.run(c.plan, seed, label=c.label), on_seed)
    finally:
        sched.close()
    complete = sched.complete_seeds()
    if sched.stopped:
        say(f"hetsam study: stopped: {sched.stopped}")
    if complete < 2:
        say(f"hetsam study: {complete} complete seed(s), fewer than the 2 a share needs: "
            f"{'no records' if out is None else out + ' not written'}; run again (with a larger budget) to resume")
    elif written["seeds"] != complete:
        on_seed(complete)
    records = written["records"]
    keys = [c.key for c in candidates]
    return StudyResult(records, {c.key: sched.scores(c, complete) for c in candidates},
                       {c.key: c.label for c in candidates}, {c.key: c.plan for c in candidates},
                       time.perf_counter() - started, {c.key: sched.seconds(c, complete) for c in candidates},
                       complete, sched.trained, sched.reused, sched.stopped, out if records and out else None,
                       keys[0], keys[1], {c.key: sched.runs(c, complete) for c in candidates})


def _records(out, candidates, complete: int, session: Runs, sched, say) -> list:
    """The evidence records of the first ``complete`` seeds, written to ``out`` when it is given."""
    import hetsam
    from hetsam.study.runlog import fingerprint_id

    if complete < 2:
        return []
    study_id = f"{session.task}-{fingerprint_id(session.fingerprint)}"
    source = {"kind": "user", "study": study_id, "date": time.strftime("%Y-%m-%d"), "seeds": complete,
              "epochs": session.epochs, "hetsam": hetsam.__version__}
    base, sam = ((c.plan, sched.scores(c, complete)) for c in candidates[:2])
    records = study_records(base, sam, measured(sched.runlog, candidates, complete, session.epochs),
                            task=session.task_dict(), source=source, batch_size=session.batch_size,
                            study_id=study_id)
    if not records or out is None:
        if out is None:
            say(f"hetsam study: {complete} complete seed(s)")
        return records
    write_evidence(out, records, provenance={
        "kind": "user", "command": "hetsam.study", "study": study_id, "seeds": complete, "epochs": session.epochs,
        "hetsam": hetsam.__version__, "task": session.task_dict(), "fingerprint": session.fingerprint,
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
