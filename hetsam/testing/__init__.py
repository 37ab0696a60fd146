"""``hetsam.testing``: the contract test cases a strategy or an executor must pass, shipped so that
whoever registers one can run them (as optuna ships its samplers' test cases in ``optuna.testing``).

The contracts need pytest (``pip install "hetsam[testing]"``; the ``test`` extra has it too) and
torch, and load when first named; ``import hetsam`` never imports this package.

- :class:`StrategyContract`: a registered strategy's spec (the registration checks with its rule
  resolved, the planner, the simulator) and its rule (the threaded executor equals the inline
  reference bit for bit; a checkpoint resumes exactly). Subclass it and set ``strategy``, or
  override its ``spec`` fixture.
- :class:`ExecutorContract` and :class:`ExecutorCase`: an executor's results equal the inline
  reference's, snapshots are taken at submit, jobs complete in order, failures surface and
  stuck jobs time out (never a hang), and ``close()`` leaves no thread. Subclass it and define
  ``build(model, loss)``.
- :mod:`hetsam.testing.toys` and :mod:`hetsam.testing.profiles`: the small model and data they
  train on, and the synthetic machine (torch-free) they plan on.

``docs/architecture.md`` ("Adding a strategy") shows a strategy from outside the package using them.
"""

from __future__ import annotations

import importlib

__all__ = ["StrategyContract", "ExecutorContract", "ExecutorCase"]

# public name -> its module, imported on first use (PEP 562): hetsam.testing.profiles stays torch-free
_LAZY = {"StrategyContract": "hetsam.testing.strategies", "ExecutorContract": "hetsam.testing.executors",
         "ExecutorCase": "hetsam.testing.executors"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hetsam.testing' has no attribute {name!r}")
    try:
        import pytest  # noqa: F401 - the contracts are pytest test cases
    except ImportError as exc:
        raise ImportError('hetsam.testing needs pytest; install it with: pip install "hetsam[testing]"') from exc
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
