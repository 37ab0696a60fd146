"""hetsam: sharpness-aware minimization at close to SGD speed on heterogeneous hardware.

``import hetsam`` is cheap: it imports nothing but the error types. Every public name (``Plan``,
``SAM``, ``RST``, ``AutoSAM``, ``plan``, ``profile``, ``simulate``, ``study``, ...) loads on first
use, and only the torch-backed ones import torch.
"""

from __future__ import annotations

import importlib

from hetsam.errors import HetsamInputError, NonFiniteUpdate, WorkerFailure

__version__ = "0.1.0"

# public name -> module that defines it (loaded lazily, PEP 562)
_LAZY = {
    "Plan": "hetsam.planning.plan",
    "SAM": "hetsam.optim.sam",
    "RST": "hetsam.optim.rst",
    "AutoSAM": "hetsam.autosam",
    "Prediction": "hetsam.planning.prediction",
    "plan": "hetsam.planning.search",
    "profile": "hetsam.profiling.measure",
    "Profile": "hetsam.profiling.schema",
    "load_profile": "hetsam.profiling.schema",
    "CostModel": "hetsam.cost.model",
    "simulate": "hetsam.simulator",
    "detect_devices": "hetsam.hardware.detect",
}
# public name -> a module that is itself the public name (``hetsam.study`` is callable)
_MODULES = {"study": "hetsam.study"}

__all__ = ["HetsamInputError", "NonFiniteUpdate", "WorkerFailure", "__version__", *_LAZY, *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hetsam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))
