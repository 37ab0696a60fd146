"""Which parameters AutoSAM optimizes: torch's ``params`` argument, checked against the model.

``params`` takes what any torch optimizer takes (an iterable of tensors, or of param-group dicts
with per-group options such as ``lr`` and ``weight_decay``, and hetsam's ``rho``, ``adaptive``
and ``eta``). Every parameter must be one of the model's own: replicas, snapshots and executors
work per parameter of the model. Groups may be added during a run (gradual unfreezing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hetsam._warnings import warn_user
from hetsam.errors import HetsamInputError
from hetsam.execution.distributed import unwrap
from hetsam.optim.options import check_like
from hetsam.optim.sam import check_group, share_groups

__all__ = ["resolve_params", "group_tensors", "check_group_params", "add_group", "warn_unoptimized"]


def resolve_params(model: nn.Module, params: Any) -> list:
    """The params argument for ``torch.optim.Optimizer``: the model's trainable parameters by
    default, else ``params`` (tensors or group dicts) once every tensor is found in the model."""
    if params is None:
        chosen = [p for p in model.parameters() if p.requires_grad]
        if not chosen:
            raise HetsamInputError("the model has no parameters that require grad; nothing to optimize")
        return chosen
    items = _listed(params, "params", "an iterable of tensors or of param-group dicts, as torch optimizers take")
    if not items:
        raise HetsamInputError("params is empty; give the model's parameters to optimize (or None for all of them)")
    owned = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    for i, item in enumerate(items):
        if isinstance(item, dict):
            if "params" not in item:
                raise HetsamInputError(f"params[{i}] is a group without a 'params' entry")
            tensors = group_tensors(item["params"], f"params[{i}]")
        else:
            tensors = [item]
        check_group_params(tensors, owned, seen, where=f"params[{i}]")
    return items


def _listed(value: Any, where: str, what: str) -> list:
    """``value`` as a list: an ordered iterable that is neither a tensor, a dict nor a set."""
    if isinstance(value, (Tensor, dict, set, frozenset, str, bytes)):
        raise HetsamInputError(f"{where} must be {what}, not a {type(value).__name__}")
    try:
        return list(value)
    except TypeError:
        raise HetsamInputError(f"{where} must be {what}, not a {type(value).__name__}") from None


def group_tensors(value: Any, where: str) -> list:
    """A group's ``params`` entry as a non-empty list (a lone tensor is one)."""
    tensors = [value] if isinstance(value, Tensor) else _listed(value, f"{where}['params']", "tensors in a list")
    if not tensors:
        raise HetsamInputError(f"{where} is a group with no parameters; leave it out (an optimizer group needs at "
                               "least one parameter)")
    return tensors


def check_group_params(tensors: list, owned: set[int], seen: set[int], where: str) -> None:
    """Every tensor is a parameter of the model, listed once."""
    for j, p in enumerate(tensors):
        if not isinstance(p, Tensor):
            raise HetsamInputError(f"{where}: entry {j} is a {type(p).__name__}, not a tensor")
        if id(p) not in owned:
            raise HetsamInputError(
                f"{where}: entry {j} (shape {tuple(p.shape)}) is not a parameter of the model; AutoSAM optimizes the "
                "model's own parameters (replicas and snapshots follow them)"
            )
        if id(p) in seen:
            raise HetsamInputError(f"{where}: entry {j} (shape {tuple(p.shape)}) is optimized already; list each "
                                   "parameter in one group")
        seen.add(id(p))


def add_group(opt, param_group: dict) -> None:
    """``AutoSAM.add_param_group``: checked like ``params``; under DDP only parameters that
    required grad when DDP was built (it never all-reduces the others)."""
    if not isinstance(param_group, dict) or "params" not in param_group:
        raise HetsamInputError("add_param_group takes a dict with a 'params' entry, as torch optimizers do")
    tensors = group_tensors(param_group["params"], "add_param_group")
    seen = {id(p) for g in opt.param_groups for p in g["params"]}
    check_group_params(tensors, {id(p) for p in opt.model.parameters()}, seen, where="add_param_group")
    if isinstance(opt.model, torch.nn.parallel.DistributedDataParallel):
        frozen = [p for p in tensors if id(p) not in opt._ddp_trainable]
        if frozen:
            raise HetsamInputError(
                f"{len(frozen)} of these parameters did not require grad when DistributedDataParallel was built, so "
                "DDP never all-reduces them; build DDP with them requiring grad (and add them to no group until "
                "it is their turn), or wrap the model again")
    group = {**param_group, "params": tensors}
    for key in ("rho", "adaptive", "eta"):
        group.setdefault(key, opt.defaults[key])
    where = f"add_param_group (param group {len(opt.param_groups)})"
    check_group(group, where)
    check_like(group, opt.base_optimizer.defaults, where)
    try:
        opt.base_optimizer.add_param_group(group)
    except (ValueError, TypeError, KeyError) as exc:  # e.g. a negative lr, refused by the base optimizer
        text = str(exc).strip().splitlines()
        raise HetsamInputError(f"{where}: {type(opt.base_optimizer).__name__} refused it: "
                               f"{text[0] if text else type(exc).__name__}") from exc
    share_groups(opt, opt.base_optimizer)


def warn_unoptimized(opt) -> bool:
    """Warn (once; returns True) about parameters that require grad but are in no group: with
    the default ``params``, unfrozen without ``add_param_group``, they would never be updated."""
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    idle = [n for n, p in unwrap(opt.model).named_parameters() if p.requires_grad and id(p) not in optimized]
    if idle:
        warn_user(f"AutoSAM: {len(idle)} parameter(s) require grad but are in no parameter group (e.g. {idle[0]!r}); "
                  f"they are not updated: add them with {getattr(opt, 'holder', 'opt')}.add_param_group({{'params': [...]}})",
                  UserWarning)
    return bool(idle)
