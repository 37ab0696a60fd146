"""`Prediction`: what the planner predicts for a plan, kept apart from the Plan itself (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hetsam.planning.objective import margin

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """The predicted cost of one plan on one machine, next to the SGD and SAM baselines.

    ``iteration_seconds`` is the simulator's typical step when ``simulated`` (its median, never
    the mean, which the spread inflates; ``hetsam.simulator.typical_step``), else the closed form
    from medians; ``step_range`` (p05, p95) is where 90% of simulated steps lie (None when not simulated);
    ``fidelity`` is ``(the objective's value of its share, *the strategy's (ascent fraction,
    −staleness, SAM share))``; ``share`` the share of SAM's gain for a new task with its
    interval and the evidence behind it (``hetsam.evidence.Share``). ``ranks``, ``nodes`` and ``devices_per_node`` describe a
    data-parallel job (1 for one process). ``ratio_uncertainty`` ``(median, worst)``: how far, as fractions,
    t(pool)/t(socket) moved between the profile's rounds, when the plan runs on a pool and its SGD
    baseline on the whole socket (or the other way round): its ratio to SGD is that uncertain on
    this machine (None otherwise, or when the profile did not measure it).
    """

    iteration_seconds: float
    sgd_iteration_seconds: float
    sam_iteration_seconds: float
    fidelity: tuple
    closed_form_seconds: float
    simulated: bool
    nodes: int = 1
    devices_per_node: int = 1
    share: Any = None
    step_range: tuple | None = None
    ratio_uncertainty: tuple | None = None

    @property
    def ranks(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def overhead_vs_sgd(self) -> float:
        return self.iteration_seconds / self.sgd_iteration_seconds - 1.0

    def vs_sgd_text(self) -> str:
        """``+3.1% vs SGD``, with ``±x%`` when the plan's ratio to SGD rests on an unstable pool/socket ratio."""
        if self.ratio_uncertainty is None:
            return f"{self.overhead_vs_sgd:+.1%} vs SGD"
        return f"{self.overhead_vs_sgd:+.1%} ±{margin(self.ratio_uncertainty):.1%} vs SGD"

    @property
    def speedup_vs_sam(self) -> float:
        return self.sam_iteration_seconds / self.iteration_seconds

    def to_dict(self) -> dict:
        d = {"iteration_seconds": self.iteration_seconds, "sgd_iteration_seconds": self.sgd_iteration_seconds,
             "sam_iteration_seconds": self.sam_iteration_seconds, "overhead_vs_sgd": self.overhead_vs_sgd,
             "speedup_vs_sam": self.speedup_vs_sam, "fidelity": list(self.fidelity),
             "closed_form_seconds": self.closed_form_seconds, "simulated": self.simulated}
        if self.step_range is not None:
            d["step_seconds_p05"], d["step_seconds_p95"] = self.step_range
        if self.ratio_uncertainty is not None:
            d["overhead_vs_sgd_uncertainty"], d["overhead_vs_sgd_uncertainty_worst"] = self.ratio_uncertainty
        if self.share is not None:
            d.update(self.share.to_dict())
        if self.ranks > 1:
            d.update({"nodes": self.nodes, "devices_per_node": self.devices_per_node, "ranks": self.ranks})
        return d
