"""What a training framework may set on an AutoSAM that the user built: its precision flag, and
the name under which the user holds it (``trainer.autosam``), which AutoSAM's messages use; and
the check that refuses an Accelerate wrapping that would train wrongly (:func:`check_wrappers`).

A framework's mixed-precision flag (Lightning's ``precision="bf16-mixed"``, the Trainer's
``bf16=True``, Accelerate's ``mixed_precision``) becomes AutoSAM's own AMP (autocast in every pass,
one GradScaler across the passes of a step for float16; README, "AMP"), so that the framework
itself neither autocasts nor scales (``hetsam.integrations``).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch

from hetsam.autosam.assemble import amp_spec, model_device
from hetsam.errors import HetsamInputError

__all__ = ["adopt_amp", "name_holder", "check_wrappers"]


def adopt_amp(opt, amp: Any, source: str) -> None:
    """Give AutoSAM ``opt`` the autocast ``amp`` (as ``AutoSAM(amp=...)`` takes it) that the framework
    setting ``source`` asks for, before its first step and before a checkpoint loads (the runtime is
    rebuilt). The same AMP given twice is fine; another one, or one given later, is refused."""
    spec = amp_spec(amp, model_device(opt.model).type)
    current = opt._settings.amp
    if spec is None or current == spec:
        return
    if current is not None:
        raise HetsamInputError(f"{source} asks for {spec.dtype} autocast but AutoSAM(amp=...) gives {current.dtype}: "
                               "drop one of the two")
    if opt._batch_size is not None or opt._steps_before or (opt._parts is not None and opt._parts.rule.t):
        raise HetsamInputError(f"{source} must reach AutoSAM before its first step and before a checkpoint loads")
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


def check_wrappers(opt) -> None:
    """At the first step: refuse a plain ``accelerator.prepare`` that would train wrongly. With
    ``mixed_precision`` accelerate wraps the model's forward in its own autocast (and scales outside
    AutoSAM); with ``gradient_accumulation_steps > 1`` its optimizer wrapper skips the step for all
    but the last micro-batch, so AutoSAM would step on that one alone; in several processes an
    AutoSAM built on the model before ``prepare`` wrapped it in DDP trains each rank apart.
    ``hetsam.integrations.accelerate.prepare`` maps the first two (it sets ``opt.adapter``)."""
    fix = "use hetsam.integrations.accelerate.prepare(accelerator, ...) in place of accelerator.prepare"
    model = getattr(opt.model, "module", opt.model)
    adapted = getattr(opt, "adapter", None) is not None
    if not adapted and "_original_forward" in vars(model) and "accelerate" in sys.modules:
        raise HetsamInputError(f"Accelerator(mixed_precision=...) wrapped the model's forward in its own autocast; {fix}")
    state = sys.modules.get("accelerate.state")
    if state is None or not _called_from("accelerate.optimizer"):  # accelerate's own optimizer wrapper steps it
        return
    procs = state.AcceleratorState().num_processes if state.AcceleratorState._shared_state else 1
    if procs > 1 and model is opt.model:  # AutoSAM's passes would bypass accelerate's DDP wrapper
        raise HetsamInputError(f"in {procs} processes AutoSAM must train the model accelerate wraps: model = "
                               "accelerator.prepare(model) first, then AutoSAM(model, ...)")
    if not adapted and state.GradientState._shared_state and state.GradientState().num_steps > 1:
        raise HetsamInputError(f"Accelerator(gradient_accumulation_steps>1) would step AutoSAM on the last micro-batch "
                               f"alone; {fix}")


def _called_from(module: str, depth: int = 8) -> bool:
    """Whether a function of ``module`` is among the ``depth`` callers of this one."""
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == module:
            return True
    return False
