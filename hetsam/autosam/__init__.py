"""``AutoSAM``: the optimizer that configures itself (a façade over assemble + controller)."""

from hetsam.autosam.optimizer import AutoSAM

__all__ = ["AutoSAM"]
