"""The plain optimizers for users, and the kernels every rule shares (the bottom of the torch side).

- :class:`SAM` / :class:`RST`: torch optimizers wrapping any base optimizer (``first_step`` /
  ``second_step`` / ``step(closure)``), over the functional kernels of :mod:`~hetsam.optim.kernels`.
- :mod:`~hetsam.optim.schedules`: RST's p(t).
- :func:`norm_layers`, :func:`frozen_running_stats`: run a pass without touching BatchNorm's
  running statistics (so exactly one pass per step updates them).
"""

from hetsam.optim import schedules
from hetsam.optim.batchnorm import frozen_running_stats, norm_layers
from hetsam.optim.rst import RST
from hetsam.optim.sam import SAM, asam_groups

__all__ = ["SAM", "RST", "asam_groups", "schedules", "frozen_running_stats", "norm_layers"]
