"""torch's global optimizer step hooks fire once per step of the optimizer the user steps.

``torch.optim.optimizer.register_optimizer_step_pre_hook`` (and ``_post_hook``) run around every
``Optimizer.step``. hetsam's optimizers (``AutoSAM``, ``SAM``, ``RST``) step a base optimizer
inside their own step, so without care a global hook fires twice per step: once for hetsam's
optimizer and once for the base. The base's step runs inside :func:`no_global_step_hooks`, so
the global hooks see only the outer optimizer; the base optimizer's own hooks (and those that
AutoSAM registers on it) still run. It swaps torch's module-level hook tables for empty ones
while the base steps, and does nothing on a torch without them.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch.optim.optimizer as _torch_optimizer

__all__ = ["no_global_step_hooks"]

_TABLES = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")


@contextlib.contextmanager
def no_global_step_hooks() -> Iterator[None]:
    saved = {name: getattr(_torch_optimizer, name, None) for name in _TABLES}
    if not any(saved.values()):  # none registered (or a torch without them): nothing to hide
        yield
        return
    for name, table in saved.items():
        if table is not None:
            setattr(_torch_optimizer, name, OrderedDict())
    try:
        yield
    finally:
        for name, table in saved.items():
            if table is not None:
                setattr(_torch_optimizer, name, table)
