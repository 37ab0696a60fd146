"""SAM and ASAM as a wrapper around any torch optimizer.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021;
Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of Deep
Neural Networks", ICML 2021. Semantics of the ``davda54/sam`` ``first_step``/``second_step``
reference (same arithmetic order, so the same numbers):

    first_step:   e = ρ · T² g / (‖T g‖ + 1e-12),  θ ← θ + e        (g = g(θ_t; B_t) in p.grad;
                                                                      T = |θ| if adaptive else I)
    second_step:  θ ← θ_t,  then the base optimizer applies g(θ_t + e; B_t)  (in p.grad)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.optim.hooks import no_global_step_hooks
from hetsam.optim.kernels import AscentGroup, Perturbation
from hetsam.optim.options import check_options, show

__all__ = ["SAM", "asam_groups", "check_rho", "check_group", "check_base_optimizer", "share_groups"]


def check_rho(rho) -> float:
    """ρ must be a finite number ≥ 0."""
    return _checks.number(rho, "rho", low=0.0, high=1e6, hint="the perturbation radius")


def check_group(group: dict, where: str = "") -> None:
    """A parameter group's options: hetsam's ``rho`` >= 0, ``adaptive`` a bool, ``eta`` >= 0, and the
    base optimizer's numeric options (:func:`hetsam.optim.options.check_options`); ``where`` names the group."""
    prefix = f"{where}: " if where else ""
    try:
        check_rho(group["rho"])
        _checks.choice(group["adaptive"], "adaptive", (True, False), hint="True is ASAM, False is SAM")
        _checks.number(group["eta"], "eta", low=0.0, high=1e3, hint="ASAM's offset T = |w| + eta")
    except HetsamInputError as exc:
        raise HetsamInputError(prefix + str(exc)) from None
    check_options(group, prefix)


def asam_groups(model, eta: float = 0.01, **options) -> list[dict]:
    """Parameter groups for the official ASAM (Kwon et al. 2021; ``SamsungLabs/ASAM``): the
    parameters whose name contains ``weight`` get T = |w| + η (``adaptive=True, eta=eta``), the
    others T = I; ``options`` (``lr``, ``weight_decay``, ``rho``, ...) go to both groups. Pass the
    result as ``params`` to ``hetsam.SAM`` or ``hetsam.AutoSAM``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weights = [p for n, p in named if "weight" in n]
    others = [p for n, p in named if "weight" not in n]
    groups = [{"params": weights, "adaptive": True, "eta": _checks.number(eta, "eta", low=0.0, high=1e3), **options}]
    if others:
        groups.append({"params": others, "adaptive": False, **options})
    return groups


def check_base_optimizer(base_optimizer) -> None:
    """The base optimizer is given as a class (or factory), not as an instance."""
    if not callable(base_optimizer) or isinstance(base_optimizer, torch.optim.Optimizer):
        raise HetsamInputError(
            f"base_optimizer={show(base_optimizer)} must be an optimizer class such as torch.optim.SGD "
            "(its keyword arguments are passed along: lr=..., momentum=...)"
        )


def share_groups(wrapper: torch.optim.Optimizer, base: torch.optim.Optimizer) -> None:
    """Make ``wrapper`` use ``base``'s param_groups and state (after construction and after
    ``load_state_dict``, which replaces them), so LR schedulers attached to the wrapper drive
    the base optimizer."""
    wrapper.param_groups = base.param_groups
    wrapper.state = base.state
    wrapper.defaults.update(base.defaults)


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimization around ``base_optimizer``.

    Args:
        params: parameters or parameter groups (groups may set their own ``rho``, ``adaptive``
            and ``eta``; :func:`asam_groups` builds the official ASAM's).
        base_optimizer: an optimizer class (or any callable ``(param_groups, **base_kwargs)``
            returning a ``torch.optim.Optimizer``), e.g. ``torch.optim.SGD``.
        rho: the perturbation radius ρ ≥ 0.
        adaptive: ASAM (T = |θ| + η) instead of SAM (T = I).
        eta: ASAM's offset η (default 0: ``davda54/sam``'s element-wise ASAM; the official ASAM
            uses 0.01 and scales only weights, see :func:`asam_groups`).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``momentum``, ``weight_decay``, …).

    The wrapper shares the base optimizer's ``param_groups`` and ``state``, so LR schedulers
    attach to it directly and ``state_dict()`` is the base optimizer's. It keeps exactly one
    extra copy of the parameters (θ_t, to come back from θ_t + e).

    Use either the two-step form (as with ``davda54/sam``)::

        loss_fn(model(x), y).backward(); opt.first_step(zero_grad=True)
        loss_fn(model(x), y).backward(); opt.second_step(zero_grad=True)

    or ``loss = opt.step(closure)``, where ``closure`` computes the loss and calls
    ``backward()``. Unlike ``davda54/sam``'s ``step``, this one calls the closure for *both*
    gradients (do not backpropagate before calling it) and returns the loss at θ_t, as
    ``torch.optim`` closures do. With BatchNorm, wrap one of the two passes in
    ``hetsam.optim.frozen_running_stats(norm_layers(model))`` so only one pass updates the
    running statistics.

    A zero or non-finite ascent gradient norm skips the climb for that step (the base step is
    then taken with the gradient at θ_t); skips are counted in ``skipped_perturbations``.
    """

    def __init__(self, params, base_optimizer: Callable[..., torch.optim.Optimizer], rho: float = 0.05,
                 adaptive: bool = False, eta: float = 0.0, **base_kwargs):
        check_group({"rho": rho, "adaptive": adaptive, "eta": eta})
        check_base_optimizer(base_optimizer)
        super().__init__(params, dict(rho=float(rho), adaptive=adaptive, eta=float(eta), **base_kwargs))
        for group in self.param_groups:
            check_group(group)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        share_groups(self, self.base_optimizer)
        self._perturbation = Perturbation(type(self).__name__)
        self._climbed = False

    @property
    def skipped_perturbations(self) -> int:
        """How many steps skipped the climb because the ascent gradient was zero or non-finite."""
        return self._perturbation.skipped

    def _ascent_groups(self) -> list[AscentGroup]:
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            groups.append(AscentGroup(params, [p.grad for p in params], group["rho"], group["adaptive"],
                                      group.get("eta", 0.0)))
        return groups

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """θ ← θ + e with e = ρ T² g / (‖T g‖ + 1e-12), g the gradients now in ``p.grad``."""
        groups = self._ascent_groups()
        self._perturbation.save([p for g in groups for p in g.params])  # θ_t, to come back to
        # with zero_grad the gradients are discarded anyway, so they may become e in place
        self._climbed = self._perturbation.perturb(groups, scratch=zero_grad)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """θ ← θ_t, then the base step with the gradients now in ``p.grad`` (taken at θ_t + e)."""
        if self._climbed:
            self._perturbation.restore()  # back to θ_t from θ_t + e
        self._perturbation.release()
        self._climbed = False
        self.base_optimizer.step()  # the sharpness-aware update
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        """A whole SAM step; ``closure`` computes the loss and calls ``backward()``. Returns the loss at θ_t."""
        if closure is None:
            raise HetsamInputError(
                f"{type(self).__name__}.step() needs a closure that computes the loss and calls backward(); "
                "or call first_step() and second_step() yourself"
            )
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        loss = closure()  # g(θ_t; B_t)
        self.first_step(zero_grad=True)
        closure()  # g(θ_t + e; B_t)
        with no_global_step_hooks():  # they fired for this step() already
            self.second_step()
        return loss

    # ---- groups and checkpoints -----------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        if not hasattr(self, "base_optimizer"):  # during torch.optim.Optimizer.__init__
            return super().add_param_group(param_group)
        for key in ("rho", "adaptive", "eta"):
            param_group.setdefault(key, self.defaults[key])
        check_group(param_group)
        self.base_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict:
        """The base optimizer's state dict (its groups carry ``rho`` and ``adaptive``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        share_groups(self, self.base_optimizer)
