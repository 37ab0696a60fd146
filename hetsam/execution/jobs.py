"""What an executor is asked to compute: a gradient job and its result.

The update rules (:mod:`hetsam.strategies.async_sam.rule`, :mod:`hetsam.strategies.sampa.rule`) decide
*what* is computed and emit :class:`GradJob` s; an executor (:mod:`hetsam.execution.executor`) decides
*where and when* they run and hands back :class:`GradResult` s. A job is a pure function of its
fields: the gradient g(θ; B) of the mean loss at the parameter values ``params`` on the samples
``batch``, so running it inline or on a worker thread gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["GradJob", "GradResult", "ASCENT", "SAMPA_Y"]

ASCENT = "ascent"  # AsyncSAM's ascent gradient ĝ
SAMPA_Y = "sampa_y"  # SAMPa's gradient g_y' at the auxiliary point y_{t+1}


@dataclass
class GradJob:
    """Compute g(θ; B) on a replica of the training model.

    Attributes:
        key: the step index whose update consumes the result (AsyncSAM: the step it perturbs;
            SAMPa: the step it is paired with).
        kind: :data:`ASCENT` or :data:`SAMPA_Y` (bookkeeping and traces only).
        batch: the samples B, as passed by the user (AsyncSAM: already cut to the first b').
        params: the parameter values θ, aligned with the trainable parameters (the base
            optimizer's groups, in order). These are *live* tensors that the caller changes as
            soon as ``Executor.submit`` returns, so ``submit`` must copy them before returning.
        buffers: the training model's buffers (BatchNorm statistics, …), aligned with
            ``model.buffers()``; live too, same rule.
        training: ``module.training`` of every module of the model (``model.modules()`` order).
        loss_scale: the AMP loss scale S to backpropagate with (the result is unscaled), or None.
        accumulate: split B into this many micro-batches (see ``compute_gradient``).
        positions: where ``params`` sit in ``model.parameters()`` (parameter groups may be added
            during a run; the replica follows them job by job). Empty: the replica's own list.
    """

    key: int
    kind: str
    batch: Any
    params: Sequence[Tensor]
    buffers: Sequence[Tensor] = ()
    training: tuple[bool, ...] = ()
    loss_scale: float | None = None
    accumulate: int = 1
    positions: tuple[int, ...] = ()


@dataclass
class GradResult:
    """The answer to a :class:`GradJob`.

    Attributes:
        key, kind: copied from the job.
        grads: g(θ; B), unscaled, on the training (descent) device, aligned with the trainable
            parameters; None where a parameter got no gradient. The tensors belong to the
            caller (they are never reused by the executor), so the update rule may overwrite them.
        loss: the mean loss of the pass (a float).
        seconds: wall time the job took where it ran (copy-in excluded).
    """

    key: int
    kind: str
    grads: list[Tensor | None]
    loss: float
    seconds: float = 0.0
