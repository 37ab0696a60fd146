"""One study's settings, its run log, and its runs: trained, or reused from the log.

:class:`Runs` holds what every run of a study shares (the model, the loss, the data, the score,
the base optimizer and its arguments, ρ, the batch size, an LR schedule, whether to score every
epoch) and the run log they are fingerprinted in (``hetsam.study.runlog``). :func:`hetsam.study`
trains each of its runs through it. A script trains runs of its own with the same settings into
the same log through it too, such as ``examples/time_to_accuracy.py``'s equal-time runs at other
epochs::

    runs = hetsam.study.Runs(make_model, loss_fn, (x, y), evaluate, epochs=30, runs="tta.runs.json", lr=0.05)
    run = runs.run(plan, seed=0, epochs=45, label="rst p=0.25")   # from the log, or trained and logged

``train_data`` is a Dataset, a tuple of tensors, or a callable ``seed -> either`` for data that
is part of the pairing (seed s's noisy labels, the same for every strategy at seed s). The
fingerprint covers seed 0's data, whether the data is per seed, whether an LR schedule is used
and whether runs keep a curve; the schedule callable itself, like ``make_model``, ``loss_fn`` and
``evaluate``, cannot be fingerprinted: a change inside one of them is invisible to the log.
"""

from __future__ import annotations

import torch

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = ["Runs", "MAX_EPOCHS"]

MAX_EPOCHS = 100_000


class Runs:
    """Runs of one study's settings in one run log (module docstring). Bad input raises a one-line
    ``HetsamInputError`` before anything trains; ``runs=None`` keeps the log in memory."""

    def __init__(self, make_model, loss_fn, train_data, evaluate, *, epochs: int, runs=None,
                 base_optimizer=torch.optim.SGD, rho: float = 0.05, batch_size: int = 64, task: str | None = None,
                 schedule=None, curve: bool = False, **base_kwargs):
        from hetsam.io import check_writable
        from hetsam.optim.sam import check_base_optimizer, check_group
        from hetsam.study.candidates import base_groups, optimizer_name
        from hetsam.study.runlog import RunLog

        _checks.integer(epochs, "epochs", low=1, high=MAX_EPOCHS)
        _checks.integer(batch_size, "batch_size", low=1, high=2**31 - 1)
        check_group({"rho": rho, "adaptive": False, "eta": 0.0})
        _checks.number(rho, "rho", low=0.0, low_open=True, hint="SAM at rho=0 is SGD, and a share needs SAM's gain")
        _checks.choice(curve, "curve", (True, False))
        for name, fn in (("make_model", make_model), ("loss_fn", loss_fn), ("evaluate", evaluate)):
            if not callable(fn):
                raise HetsamInputError(f"{name} must be callable; see help(hetsam.study)")
        if schedule is not None and not callable(schedule):
            raise HetsamInputError("schedule must be a callable schedule(optimizer, total_steps) -> an LR scheduler, "
                                   "or None for a constant learning rate")
        if task is not None and (not isinstance(task, str) or not task.strip() or len(task) > 200):
            raise HetsamInputError("task must be a non-empty name of at most 200 characters, or None")
        check_base_optimizer(base_optimizer)
        self.groups = base_groups(base_optimizer, base_kwargs)  # refuses lr=-1 and the like, before training
        if runs is not None:
            runs = str(runs)
            check_writable(runs, "study run log")
        self.make_model, self.loss_fn, self.evaluate = make_model, loss_fn, evaluate
        self.base_optimizer, self.base_kwargs = base_optimizer, dict(base_kwargs)
        self.rho, self.epochs, self.batch_size = float(rho), epochs, batch_size
        self.schedule, self.curve = schedule, curve
        self.per_seed = callable(train_data) and not isinstance(train_data, (torch.utils.data.Dataset, tuple, list))
        self._train_data, self._data = train_data, {}
        first = self.data(0)
        torch.manual_seed(0)
        self.model = make_model()  # seed 0's model: the fingerprint's size, and the planner's model
        if not isinstance(self.model, torch.nn.Module):
            raise HetsamInputError(f"make_model() returned {type(self.model).__name__}; it must return a fresh "
                                   "torch.nn.Module")
        self.optimizer = optimizer_name(base_optimizer)
        self.model_name = type(self.model).__name__
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.task = task or self.model_name
        self.describe_data = first.describe() + (" (seed 0; each seed its own)" if self.per_seed else "")
        self.fingerprint = self._fingerprint(first)
        self.log = RunLog.open(runs, self.fingerprint)  # a log of other settings: refused here
        self.trained = self.reused = 0

    # ---- data ----------------------------------------------------------------------------------------
    def data(self, seed: int):
        """Seed ``seed``'s data as :class:`hetsam.study.runner.PairedData` (checked; the last one is kept)."""
        from hetsam.study.runner import PairedData

        key = seed if self.per_seed else 0
        if key not in self._data:
            raw = self._train_data(seed) if self.per_seed else self._train_data
            self._data = {key: PairedData(raw, self.batch_size)}
        return self._data[key]

    # ---- runs ------------------------------------------------------------------------------------------
    def find(self, plan, seed: int, epochs: int | None = None) -> dict | None:
        """The logged run of ``plan`` at ``seed`` and ``epochs`` (default: the study's), or None."""
        return self.log.find(plan.to_dict(), seed, self.epochs if epochs is None else epochs)

    def train(self, plan, seed: int, epochs: int | None = None) -> dict:
        """Train ``plan`` at ``seed`` (not logged): ``{"score", "seconds", "wall_seconds"}`` and
        ``"curve"`` with ``curve=True`` (``hetsam.study.runner.train_run``)."""
        from hetsam.study.runner import train_run

        _checks.integer(seed, "seed", low=0, high=999)
        why = plan.spec.refuses(self.groups)
        if why is not None:
            raise HetsamInputError(f"{plan.describe()}: {why}")
        epochs = self.epochs if epochs is None else _checks.integer(epochs, "epochs", low=1, high=MAX_EPOCHS)
        return train_run(self.make_model, self.loss_fn, self.data(seed), self.evaluate, plan, seed=seed,
                         epochs=epochs, base_optimizer=self.base_optimizer, rho=self.rho,
                         base_kwargs=self.base_kwargs, schedule=self.schedule, curve=self.curve)

    def run(self, plan, seed: int, *, epochs: int | None = None, label: str | None = None) -> dict:
        """The logged run of ``plan`` at ``seed`` and ``epochs``, or a new one trained and logged (on
        disk before this returns): ``{"strategy", "label", "plan", "seed", "epochs", "score",
        "seconds", "wall_seconds"}`` and ``"curve"``."""
        epochs = self.epochs if epochs is None else epochs
        found = self.find(plan, seed, epochs)
        if found is not None:
            self.reused += 1
            return found
        label = plan.describe() if label is None else label
        run = {"strategy": plan.strategy, "label": label, "plan": plan.to_dict(), "seed": seed, "epochs": epochs,
               **self.train(plan, seed, epochs)}
        self.log.add(run)  # on disk before anything else: Ctrl-C now loses nothing of it
        self.trained += 1
        return run

    # ---- what the records and the log say -------------------------------------------------------------
    def _fingerprint(self, first) -> dict:
        out = {"task": self.task, "model": self.model_name, "parameters": self.parameters, "data": first.checksum(),
               "batch_size": self.batch_size, "rho": self.rho,
               "base_optimizer": f"{getattr(self.base_optimizer, '__module__', '')}."
                                 f"{getattr(self.base_optimizer, '__qualname__', self.optimizer)}",
               "base_kwargs": {k: repr(v) for k, v in sorted(self.base_kwargs.items())}, "epochs": self.epochs}
        # only when used, so that the logs of plain studies stay valid
        if self.per_seed:
            out["data_per_seed"] = True
        if self.schedule is not None:
            out["lr_schedule"] = "a callable (not fingerprinted)"
        if self.curve:
            out["curve"] = True
        return out

    def task_dict(self) -> dict:
        """The records' ``task``."""
        out = {"name": self.task, "model": f"{self.model_name} ({self.parameters:,} parameters)",
               "dataset": self.describe_data, "epochs": self.epochs, "base_optimizer": self.optimizer,
               "batch_size": self.batch_size, "rho": self.rho}
        if self.schedule is not None:
            out["lr_schedule"] = "given"
        return out
