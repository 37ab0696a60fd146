"""hetsam.simulator: a discrete-event simulation of a Plan on a CostModel. Never imports torch.

``simulate(plan, profile, iterations=..., seed=0)`` returns a :class:`SimResult` with the
seconds per iteration (mean, p50, p95), samples per second, per-device utilisation, the total
descent wait and a timeline (``trace.write_chrome_trace`` saves it for Perfetto).

Import it as ``hetsam.simulator`` (the source folder ``simulator/`` is shipped under that name).
"""

from .api import DEFAULT_ITERATIONS, SimResult, TimelineEvent, simulate

__all__ = ["simulate", "SimResult", "TimelineEvent", "DEFAULT_ITERATIONS"]
