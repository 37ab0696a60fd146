"""Checks of optimizer state before it is loaded: each problem is one ``HetsamInputError`` that names
the key (a path such as ``state_dict['state'][3]['momentum_buffer']``), raised before
anything changes, so a load is all or nothing (``AutoSAM.load_state_dict``).

What a torch optimizer's ``load_state_dict`` takes without complaint but its next ``step`` cannot
use is refused here: another model's shapes, a group that lost an option, a negative or non-finite
option, a state entry for a parameter no group lists.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from hetsam.errors import HetsamInputError
from hetsam.optim.options import HYPERPARAMETERS, check_like, show
from hetsam.optim.sam import check_group

__all__ = ["keys", "counter", "real", "tensor_for", "aligned", "generator_state", "check_optimizer_state"]

COUNT_LIMIT = 1 << 48  # steps and counters (as AutoSAM's total_steps)
# per-parameter state of torch.optim's optimizers: one value per element of the parameter ...
PARAM_SHAPED = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf", "sum", "square_avg",
                "acc_delta", "grad_avg", "ax", "prev", "step_size")
SCALARS = ("step", "mu_product", "eta", "mu")  # ... or one number per parameter


def keys(state: Any, where: str, required: Iterable[str] = (), optional: Iterable[str] | None = ()) -> dict:
    """``state`` is a dict with every ``required`` key and, unless ``optional`` is None, no key but those."""
    if not isinstance(state, dict):
        raise HetsamInputError(f"{where} must be a dict, not a {type(state).__name__}")
    required = tuple(required)
    missing = [k for k in required if k not in state]
    if missing:
        raise HetsamInputError(f"{where} has no {missing[0]!r} entry")
    if optional is not None:
        unknown = sorted(repr(k) for k in state if k not in required and k not in tuple(optional))
        if unknown:
            raise HetsamInputError(f"{where} has unknown key(s) {', '.join(unknown[:3])}: not a checkpoint of this "
                                   "optimizer and strategy")
    return state


def counter(value: Any, where: str, high: int = COUNT_LIMIT) -> int:
    """A count of steps or events: an integer in [0, high]."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high:
        return value
    raise HetsamInputError(f"{where}={show(value)} must be an integer in [0, {high:g}]")


def real(value: Any, where: str, *, finite: bool = True, low: float | None = None) -> float:
    """A real number (NaN and ±inf too unless ``finite``), at least ``low``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            x = float(value)
        except OverflowError:
            x = math.inf
        if (not finite or math.isfinite(x)) and (low is None or x >= low):
            return x
    bound = "" if low is None else f" >= {low:g}"
    raise HetsamInputError(f"{where}={show(value)} must be a {'finite ' if finite else ''}number{bound}")


def tensor_for(value: Any, param: Tensor, where: str, *, finite: bool = False, exact: bool = True) -> Tensor:
    """A floating tensor for ``param``: its shape (``exact``), or one that broadcasts to it with as
    many dimensions (Adafactor's row and column statistics); finite if asked."""
    if not isinstance(value, Tensor):
        raise HetsamInputError(f"{where} must be a tensor, not a {type(value).__name__}")
    if value.is_sparse or value.layout != torch.strided:
        raise HetsamInputError(f"{where} must be a dense tensor")
    kind_ok = value.is_complex() if param.is_complex() else value.is_floating_point()
    if not kind_ok:
        raise HetsamInputError(f"{where} has dtype {value.dtype}; the parameter is {param.dtype}")
    shape, want = tuple(value.shape), tuple(param.shape)
    fits = shape == want if exact else len(shape) == len(want) and all(s in (w, 1) for s, w in zip(shape, want))
    if not fits:
        raise HetsamInputError(f"{where} has shape {shape}; its parameter has {want} (a checkpoint of another model?)")
    if finite and not bool(torch.isfinite(value).all()):
        raise HetsamInputError(f"{where} is not finite")
    return value


def aligned(values: Any, params: Sequence[Tensor], where: str, *, finite: bool = False) -> list:
    """Gradients for the first ``len(values)`` parameters (groups may have been added since): a list
    of None or tensors of each parameter's shape."""
    if not isinstance(values, (list, tuple)):
        raise HetsamInputError(f"{where} must be a list of tensors, not a {type(values).__name__}")
    if len(values) > len(params):
        raise HetsamInputError(f"{where} has {len(values)} tensors for {len(params)} parameters")
    for i, (g, p) in enumerate(zip(values, params)):
        if g is not None:
            tensor_for(g, p, f"{where}[{i}]", finite=finite)
    return list(values)


def generator_state(value: Any, where: str) -> Tensor:
    """A CPU ``torch.Generator``'s state, tried on a scratch generator."""
    if not isinstance(value, Tensor) or value.dtype != torch.uint8:
        raise HetsamInputError(f"{where} must be a torch.Generator's state (a uint8 tensor)")
    try:
        torch.Generator(device="cpu").set_state(value)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise HetsamInputError(f"{where} is not a torch.Generator's state ({str(exc).splitlines()[0]})") from None
    return value


def check_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: Any, where: str) -> None:
    """A state dict that ``optimizer.load_state_dict`` takes and its next ``step`` can use: as many
    groups with as many parameters as now, each with the options the group has now (numeric ones in
    range, :mod:`hetsam.optim.options`; flags as flags) and hetsam's ``rho``,
    ``adaptive``, ``eta``; per-parameter state only for listed parameters, each tensor of its
    parameter's shape (a scalar for ``step`` and the like) and finite."""
    keys(state_dict, where, ("state", "param_groups"), optional=None)
    saved, groups = state_dict["param_groups"], optimizer.param_groups
    if not isinstance(saved, list) or len(saved) != len(groups):
        count = len(saved) if isinstance(saved, list) else type(saved).__name__
        raise HetsamInputError(f"{where}['param_groups'] has {count} groups; this optimizer has {len(groups)}")
    params: dict[int, Tensor] = {}
    group_of: dict[int, int] = {}
    for i, (old, new) in enumerate(zip(saved, groups)):
        at = f"{where}['param_groups'][{i}]"
        keys(old, at, ("params",), optional=None)
        ids = old["params"]
        if not isinstance(ids, list) or len(ids) != len(new["params"]):
            count = len(ids) if isinstance(ids, list) else type(ids).__name__
            raise HetsamInputError(f"{at}['params'] lists {count} parameters; the group has {len(new['params'])}")
        for j, (k, p) in enumerate(zip(ids, new["params"])):
            if not isinstance(k, str):  # torch's ids are integers; torch.distributed.checkpoint's, names
                counter(k, f"{at}['params'][{j}]")
            if k in params:
                raise HetsamInputError(f"{at}['params'][{j}] = {k} is listed twice")
            params[k], group_of[k] = p, i
        _check_options(old, new, at)
    state = state_dict["state"]
    if not isinstance(state, dict):
        raise HetsamInputError(f"{where}['state'] must be a dict, not a {type(state).__name__}")
    usual: dict[int, set] = {}  # group -> the keys of its parameters' state (alike within a group)
    for k, entry in state.items():
        at = f"{where}['state'][{k!r}]"
        if k not in params:
            raise HetsamInputError(f"{at}: no parameter group lists parameter {k!r}")
        for name, value in keys(entry, at, optional=None).items():
            _check_value(value, params[k], name, f"{at}[{name!r}]")
        want = usual.setdefault(group_of[k], set(entry)) if entry else None
        if want is not None and set(entry) != want:
            raise HetsamInputError(f"{at} has the keys {sorted(map(repr, entry))}, another parameter of its group "
                                   f"{sorted(map(repr, want))}")


def _check_options(old: dict, new: dict, where: str) -> None:
    """A saved group's options against the live group's: none of the options a step reads missing,
    flags as flags, strings as strings, numbers finite (:func:`check_group`: hetsam's and the base
    optimizer's known options in their ranges, shaped as the live ones)."""
    for key, now in new.items():
        if key == "params" or now is None and key not in _FLAGS:
            continue
        if key not in old:
            if key in HYPERPARAMETERS or key in ("rho", "adaptive", "eta"):  # what a step reads
                raise HetsamInputError(f"{where} has no {key!r} option; the optimizer's groups have one")
            continue
        value = old[key]
        if _number(now) and value is None:
            raise HetsamInputError(f"{where}[{key!r}] is None; the optimizer's groups have a number there")
        if isinstance(now, bool) or key in _FLAGS:
            if not isinstance(value, bool) and not (value is None and key in ("foreach", "fused")):
                raise HetsamInputError(f"{where}[{key!r}]={show(value)} must be True or False")
        elif isinstance(now, str) and not isinstance(value, str):
            raise HetsamInputError(f"{where}[{key!r}]={show(value)} must be a string")
        elif _number(now) and key not in HYPERPARAMETERS:
            real(value.item() if isinstance(value, Tensor) and value.numel() == 1 else value, f"{where}[{key!r}]")
    check_group({"rho": 0.0, "adaptive": False, "eta": 0.0, **old}, where)  # hetsam's options are in new's
    check_like(old, new, where)


_FLAGS = ("foreach", "fused", "capturable", "differentiable", "maximize")


def _number(value: Any) -> bool:
    return isinstance(value, Tensor) or isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_value(value: Any, param: Tensor, name: str, where: str) -> None:
    """One per-parameter state value: a tensor (param-shaped, or a scalar for ``step`` and the
    like; finite), a finite number (``step`` >= 0), or something that is not numeric."""
    if name in PARAM_SHAPED + SCALARS and not isinstance(value, Tensor) \
            and not (name in SCALARS and isinstance(value, numbers.Real) and not isinstance(value, bool)) \
            and not (name == "momentum_buffer" and value is None):  # SGD starts a None buffer afresh
        raise HetsamInputError(f"{where} must be a tensor{' or a number' if name in SCALARS else ''}, not a "
                               f"{type(value).__name__}")
    if isinstance(value, Tensor):
        if name in SCALARS or (value.dim() == 0 and name not in PARAM_SHAPED):
            if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
                raise HetsamInputError(f"{where} must be one real number (a tensor of shape {tuple(value.shape)} "
                                       f"and dtype {value.dtype})")
            real(value.item(), where, low=0.0 if name == "step" else None)
        else:
            tensor_for(value, param, where, finite=True, exact=name in PARAM_SHAPED)
    elif isinstance(value, numbers.Number) and not isinstance(value, bool):
        real(value, where, low=0.0 if name == "step" else None)
