"""Independent, plain-loop reference implementations of the README ("The update rules") for the tests.

Written from the equations only (per-parameter Python loops, no hetsam code but the toy model and
data of ``hetsam.testing.toys``): the library's
foreach/executor machinery is checked against these. Every ascent-type gradient is computed on
a separate scratch copy of the model (``Scratch``), so the training model's BatchNorm running
statistics are touched only by the pass whose gradient the update applies.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# the small model and data, shipped in hetsam.testing (its contract cases run on them)
from hetsam.testing.toys import SGD_KW, batches, flat, loss_fn, mlp, save_load  # noqa: F401


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> None:
    err = (a - b).norm() / b.norm()
    assert err <= tol, f"relative difference {err.item():.3e} > {tol:g}"


# ---- building blocks ----------------------------------------------------------------------
class Scratch:
    """A copy of the model on which gradients at arbitrary parameter values are taken."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model)

    def grad(self, values, batch) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), values):
                p.copy_(v)
        for p in self.model.parameters():
            p.grad = None
        loss_fn(self.model, batch).backward()
        return [p.grad.detach().clone() for p in self.model.parameters()]


def norm(gs) -> torch.Tensor:
    return torch.sqrt(sum((g * g).sum() for g in gs))


def snapshot(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def descend(model, opt, batch, e=None, g0=None, alpha=1.0) -> None:
    """θ ← base(θ, g(θ + e; B)) with the training model (its BatchNorm stats update here);
    with ``g0``: θ ← base(θ, (1 − α) g0 + α g(θ + e; B)) (G-RST)."""
    params = list(model.parameters())
    old = snapshot(model)
    if e is not None:
        with torch.no_grad():
            for p, ei in zip(params, e):
                p.add_(ei)
    opt.zero_grad()
    loss_fn(model, batch).backward()
    with torch.no_grad():
        for i, (p, o) in enumerate(zip(params, old)):
            p.copy_(o)
            if g0 is not None:
                p.grad = (1 - alpha) * g0[i] + alpha * p.grad
    opt.step()


def perturbation(g, rho):
    n = norm(g)
    return [rho * gi / n for gi in g]


# ---- the rules ------------------------------------------------------------------------------
def ref_sam(model, data, rho=0.05, steps=None, **kw):
    opt = torch.optim.SGD(model.parameters(), **(kw or SGD_KW))
    scratch = Scratch(model)
    for batch in data[:steps]:
        g = scratch.grad(snapshot(model), batch)  # g(θ_t; B_t)
        descend(model, opt, batch, perturbation(g, rho))
    return model


def ref_async_sam(model, data, tau, b_prime, policy, rho=0.05, **kw):
    """AsyncSAM: ĝ_t = g(θ_{t−τ}; B'_t) (lookahead) or g(θ_{t−τ}; B'_{t−τ}) (independent)."""
    opt = torch.optim.SGD(model.parameters(), **(kw or SGD_KW))
    scratch = Scratch(model)
    history = []
    for t, batch in enumerate(data):
        history.append(snapshot(model))
        e = None
        if t >= tau:
            s = t - tau
            src = data[t] if policy == "lookahead" else data[s]
            x, y = src
            ghat = scratch.grad(history[s], (x[:b_prime], y[:b_prime]))
            e = perturbation(ghat, rho)
        descend(model, opt, batch, e)
    return model


def ref_sampa(model, data, lam, rho=0.05, lr=0.1, momentum=0.9, weight_decay=5e-4):
    """SAMPa-λ as the README ("The update rules") (the official LIONS-EPFL/SAMPa train.py semantics)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    params = list(model.parameters())
    scratch = Scratch(model)
    g_y = None
    prev = None
    for batch in data:
        b_prev = batch if prev is None else prev
        x = snapshot(model)
        # y_{t+1} = x_t − η (g_y + wd x_t + μ buf_t); x_t − η g_y without a momentum buffer
        y = []
        for i, p in enumerate(params):
            gy = g_y[i] if g_y is not None else torch.zeros_like(p)
            buf = opt.state[p].get("momentum_buffer") if p in opt.state else None
            d = gy + weight_decay * x[i] + momentum * buf if buf is not None else gy
            y.append(x[i] - lr * d)
        g_y_new = scratch.grad(y, batch)  # g(y_{t+1}; B_t)
        # x̃_t = x_t + ρ g_y / ‖g_y‖;  g_x = g(x̃_t; B_{t−1}) on the training model
        with torch.no_grad():
            if g_y is not None:
                for p, ei in zip(params, perturbation(g_y, rho)):
                    p.add_(ei)
        opt.zero_grad()
        loss_fn(model, b_prev).backward()
        with torch.no_grad():
            for p, xi, gy in zip(params, x, g_y_new):
                p.copy_(xi)
                p.grad = (1 - lam) * p.grad + lam * gy
        opt.step()
        g_y, prev = g_y_new, batch
    return model
