"""The update rules of DESIGN.md section 3, correct on one device in a plain sequential loop.

- :class:`SAM` / :class:`RST`: torch optimizers wrapping any base optimizer.
- :mod:`~hetsam.optim.schedules`: RST's p(t).
- :mod:`~hetsam.strategies.rule`, :mod:`~hetsam.strategies.async_sam.rule`,
  :mod:`~hetsam.strategies.sampa.rule`: the per-step rules AutoSAM runs, which send the gradients
  that may run elsewhere to an executor as :class:`~hetsam.execution.jobs.GradJob` s.
"""

from hetsam.execution.passes import frozen_running_stats, norm_layers
from hetsam.optim.rst import RST
from hetsam.optim.sam import SAM
from hetsam.optim import schedules

__all__ = ["SAM", "RST", "schedules", "frozen_running_stats", "norm_layers"]
