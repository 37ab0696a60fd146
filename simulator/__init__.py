"""hetsam.simulator: a discrete-event simulation of a Plan on a CostModel. Never imports torch.

``simulate(plan, profile, iterations=..., seed=0)`` returns a :class:`SimResult` with the
seconds per iteration (mean, p05, p50, p95), samples per second, per-device utilisation, the total
descent wait and a timeline (``trace.write_chrome_trace`` saves it for Perfetto).

``typical_step(plan, profile)`` is the centre every comparison uses (median, not mean: the
spread widens its range and never moves it).

Import it as ``hetsam.simulator`` (the source folder ``simulator/`` is shipped under that name).
"""

from .api import DEFAULT_ITERATIONS, SimResult, TimelineEvent, simulate
from .typical import TypicalStep, typical_step

__all__ = ["simulate", "typical_step", "SimResult", "TypicalStep", "TimelineEvent", "DEFAULT_ITERATIONS"]
