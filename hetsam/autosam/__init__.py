"""``AutoSAM``: the optimizer that configures itself (a façade over assemble + controller)."""

from hetsam.autosam.optimizer import AutoSAM, time_step_costs

__all__ = ["AutoSAM", "time_step_costs"]
