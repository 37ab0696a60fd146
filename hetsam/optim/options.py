"""The base optimizer's numeric options (torch.optim's names), checked before a step can use them.

torch's constructors check some of them (``lr >= 0``, ``0 <= β < 1``); ``add_param_group`` and
``load_state_dict`` check none, and a NaN or infinite ``lr`` passes everywhere. Here each is a
finite number in [0, 10^6] (``t0``, a step count, up to 10^15; ``betas`` in [0, 1), as the bias
correction 1 − β^t divides by it), or a tensor of them, or for the pair-valued ones two of them:
beyond 10^6 an ``lr`` overflows float32 inside torch's own update (Adam's lr / (1 − β1))."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from hetsam import _checks
from hetsam.errors import HetsamInputError

__all__ = ["HYPERPARAMETERS", "PAIRS", "check_options", "check_like", "show"]

HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "betas", "eps", "alpha", "lr_decay",
                   "initial_accumulator_value", "momentum_decay", "etas", "step_sizes", "lambd", "t0")
PAIRS = ("betas", "etas", "step_sizes", "eps")  # (β1, β2), Rprop's, Adafactor's eps; eps is a number elsewhere
HIGH = 1e6
_HIGH = {"t0": 1e15, "betas": 1.0}  # betas: below 1


def check_options(group: dict, prefix: str = "") -> None:
    """Every :data:`HYPERPARAMETERS` value of ``group`` that is not None is in its range (module
    docstring); ``prefix`` names the group."""
    for key in HYPERPARAMETERS:
        value = group.get(key)
        if value is None:
            continue
        high = _HIGH.get(key, HIGH)
        if not _in_range(value, high, open_high=key == "betas", pair=key in PAIRS):
            where = f"in [0, {high:g}{')' if key == 'betas' else ']'}"
            raise HetsamInputError(f"{prefix}{key}={show(value)} must be "
                                   f"{'two numbers' if key == 'betas' else 'a finite number'} {where}"
                                   f"{' (or two)' if key in PAIRS and key != 'betas' else ''}")


def check_like(group: dict, reference: dict, where: str) -> None:
    """``group``'s numeric options are shaped as ``reference``'s (the base optimizer's defaults): a
    pair where it has a pair, a number where it has a number (Adam's ``eps`` is a number,
    Adafactor's a pair), None only where it has None."""
    prefix = f"{where}: " if where else ""
    for key in HYPERPARAMETERS:
        if key not in group or reference.get(key) is None:
            continue
        pair = isinstance(reference[key], (tuple, list))
        if group[key] is None or (key in PAIRS and isinstance(group[key], (tuple, list)) != pair):
            raise HetsamInputError(f"{prefix}{key}={show(group[key])} must be "
                                   f"{'a pair of numbers' if pair else 'a number'}, as for this optimizer")


def _in_range(value, high: float, open_high: bool = False, pair: bool = False) -> bool:
    """A real number (or a real tensor, every element) in [0, high] ([0, high) if ``open_high``);
    with ``pair``, two of them (None allowed: Adafactor's eps)."""
    if pair and isinstance(value, (tuple, list)):
        return len(value) == 2 and all(v is None or _in_range(v, high, open_high) for v in value)
    if isinstance(value, Tensor):
        if value.numel() == 0 or value.is_complex() or value.dtype == torch.bool:
            return False
        x = value.detach().double()
        return bool((torch.isfinite(x) & (x >= 0) & ((x < high) if open_high else (x <= high))).all())
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral) and abs(value) > 2**63:  # float() would overflow, torch refuses it
        return False
    x = float(value)
    return math.isfinite(x) and x >= 0 and (x < high if open_high else x <= high)


def show(value) -> str:
    """A short repr on one line (a tensor's, a module's or an optimizer's spans several)."""
    text = " ".join(_checks._show(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
