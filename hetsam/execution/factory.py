"""Executors by name, with the failure policy applied (``make_executor``)."""

from __future__ import annotations

import importlib
from typing import Any

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.execution.executor import FAILURE_POLICIES, Executor, InlineExecutor
from hetsam.execution.fallback import FallbackExecutor

__all__ = ["EXECUTORS", "make_executor"]


# name -> Executor class, or "module:Class" imported when first asked for (no import cycle)
EXECUTORS: dict[str, Any] = {"inline": InlineExecutor, "threads": "hetsam.execution.threads:ThreadedExecutor"}


def make_executor(spec: str | Executor, *, on_worker_failure: str | None = None, **options) -> Executor:
    """An executor from a name in :data:`EXECUTORS` (built with ``options``) or an
    :class:`Executor` instance, with the failure policy applied: ``"degrade"`` wraps an executor
    that has a worker in a :class:`~hetsam.execution.fallback.FallbackExecutor`."""
    if isinstance(spec, Executor):
        ex = spec
    else:
        factory = EXECUTORS.get(spec) if isinstance(spec, str) else None
        if factory is None:
            raise HetsamInputError(f"executor={spec!r} is unknown; choose one of {', '.join(sorted(EXECUTORS))}")
        if isinstance(factory, str):
            module, _, cls = factory.partition(":")
            factory = EXECUTORS[spec] = getattr(importlib.import_module(module), cls)
        ex = factory(**options)
    policy = ex.on_worker_failure if on_worker_failure is None else _checks.choice(
        on_worker_failure, "on_worker_failure", FAILURE_POLICIES)
    ex.on_worker_failure = policy
    if policy == "degrade" and ex.has_worker:
        return FallbackExecutor(ex)
    return ex
