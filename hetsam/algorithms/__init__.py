"""The update rules of DESIGN.md section 3, correct on one device in a plain sequential loop.

- :class:`SAM` / :class:`RST`: torch optimizers wrapping any base optimizer.
- :mod:`~hetsam.algorithms.schedules`: RST's p(t).
- :mod:`~hetsam.algorithms.strategies`, :mod:`~hetsam.algorithms.asyncsam`,
  :mod:`~hetsam.algorithms.sampa`: the per-step rules AutoSAM runs, which send the gradients
  that may run elsewhere to an executor as :class:`~hetsam.algorithms.jobs.GradJob` s.
"""

from hetsam.algorithms._passes import frozen_running_stats, norm_layers
from hetsam.algorithms.rst import RST
from hetsam.algorithms.sam import SAM
from hetsam.algorithms import schedules

__all__ = ["SAM", "RST", "schedules", "frozen_running_stats", "norm_layers"]
