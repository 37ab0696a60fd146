"""``AutoSAM``: the optimizer that configures itself (a façade over assemble + controller)."""

from hetsam.autosam.optimizer import AutoSAM, measure_own_work

__all__ = ["AutoSAM", "measure_own_work"]
