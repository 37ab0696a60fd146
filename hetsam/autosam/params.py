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
from hetsam.optim.sam import check_group, share_groups

__all__ = ["resolve_params", "check_group_params", "add_group", "warn_unoptimized"]


def resolve_params(model: nn.Module, params: Any) -> list:
    """The params argument for ``torch.optim.Optimizer``: the model's trainable parameters by
    default, else ``params`` (tensors or group dicts) once every tensor is found in the model."""
    if params is None:
        chosen = [p for p in model.parameters() if p.requires_grad]
        if not chosen:
            raise HetsamInputError("the model has no parameters that require grad; nothing to optimize")
        return chosen
    if isinstance(params, (Tensor, dict)):
        raise HetsamInputError("params must be an iterable of tensors or of param-group dicts, as torch optimizers take")
    items = list(params)
    if not items:
        raise HetsamInputError("params is empty; give the model's parameters to optimize (or None for all of them)")
    owned = {id(p) for p in model.parameters()}
    seen: set[int] = set()
    for i, item in enumerate(items):
        tensors = item.get("params") if isinstance(item, dict) else [item]
        if isinstance(tensors, Tensor):
            tensors = [tensors]
        if tensors is None:
            raise HetsamInputError(f"params[{i}] is a group without a 'params' entry")
        check_group_params(list(tensors), owned, seen, where=f"params[{i}]")
    return items


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
    tensors = param_group["params"]
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
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
    check_group(group)
    opt.base_optimizer.add_param_group(group)
    share_groups(opt, opt.base_optimizer)


def warn_unoptimized(opt) -> bool:
    """Warn (once; returns True) about parameters that require grad but are in no group: with
    the default ``params``, unfrozen without ``add_param_group``, they would never be updated."""
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    idle = [n for n, p in unwrap(opt.model).named_parameters() if p.requires_grad and id(p) not in optimized]
    if idle:
        warn_user(f"AutoSAM: {len(idle)} parameter(s) require grad but are in no parameter group (e.g. {idle[0]!r}); "
                  "they are not updated: add them with opt.add_param_group({'params': [...]})", UserWarning)
    return bool(idle)
