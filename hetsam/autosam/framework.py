"""What a training framework may set on an AutoSAM that the user built: its precision flag, and
the name under which the user holds it (``trainer.autosam``), which AutoSAM's messages use.

A framework's mixed-precision flag (Lightning's ``precision="bf16-mixed"``, the Trainer's
``bf16=True``, Accelerate's ``mixed_precision``) becomes AutoSAM's own AMP (autocast in every pass,
one GradScaler across the passes of a step for float16; README, "AMP"), so that the framework
itself neither autocasts nor scales (``hetsam.integrations``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from hetsam.autosam.assemble import amp_spec, model_device
from hetsam.errors import HetsamInputError

__all__ = ["adopt_amp", "name_holder"]


def adopt_amp(opt, amp: Any, source: str) -> None:
    """Give AutoSAM ``opt`` the autocast ``amp`` (as ``AutoSAM(amp=...)`` takes it) that the framework
    setting ``source`` asks for, before its first step. The same AMP given twice is fine; another
    one, or one after the first step, is refused."""
    spec = amp_spec(amp, model_device(opt.model).type)
    current = opt._settings.amp
    if spec is None or current == spec:
        return
    if current is not None:
        raise HetsamInputError(f"{source} asks for {spec.dtype} autocast but AutoSAM(amp=...) gives {current.dtype}: "
                               "drop one of the two")
    if opt._batch_size is not None:
        raise HetsamInputError(f"{source} must reach AutoSAM before its first step")
    opt._settings = dataclasses.replace(opt._settings, amp=spec)
    if spec.dtype == torch.float16 and opt.scaler is None:  # float16: one GradScaler across the step's passes
        opt.scaler, opt._owns_scaler = torch.amp.GradScaler(spec.device_type), True
    if opt._parts is not None:  # built for a given plan: rebuild with the new AMP (no step ran, nothing pending)
        opt._use(opt.plan)


def name_holder(opt, name: str) -> None:
    """Let AutoSAM's messages name ``opt`` as the user reaches it (``"trainer.autosam"``,
    ``"self.autosam"``) instead of ``opt``."""
    opt.holder = name
    if opt._controller is not None:
        opt._controller.holder = name
