"""AutoSAM's divergence guard: a strategy that changes SAM's algorithm falls back to SAM when its
loss diverges.

It watches the plans whose spec says ``guarded`` (MSAM's radius of its own; the skipped or stale
perturbations of RST, interval, late-phase SAM and AsyncSAM). With ℓ_t the loss step t returns,
``m_t`` the median of the last W losses, ``best`` the lowest ``m`` seen so far and ``first`` the
first window's ``m``, step t *diverges* when

- ℓ_t is not finite (NaN or ±inf; such a step never reaches the base optimizer: its update is
  skipped), or
- ``m_t > k · best`` and ``m_t − best > r · (first − best)``: for most of a window the loss stays
  far above the best the run has been, *and* it has given back a share r of the progress it made
  since its first window. The second condition keeps a small, noisy loss (a fitted training set:
  0.17 to 0.37 on a random-label soak) from counting; with no progress yet it is the first alone.

Defaults (``hetsam.defaults``): W = 20 steps (5 to 10,000), k = 2 (1.2 to 100), r = 0.5 (0 to 1).
The median of W ignores spikes shorter than W/2 steps. The reference is the best window, not the
one before: a radius that is too large often degrades the model over several windows, each a
little worse than the last (the digits MLP of tests/test_guard.py with MSAM at ρ = 3: medians of
20 steps 2.29 first, 0.86 at the warm-up's end, then 1.46, 1.54, 1.55, 1.62, 1.84, 2.34). A run
whose loss never falls (a radius too large from the first step) is not a divergence by this rule.

On a divergence AutoSAM (a) restores the last good state when it kept one and (b) switches to a
SAM-faithful plan (:func:`fallback_plan`), logs one line and records it in ``stats()["guard"]``.
Step counts, schedules (the learning rates are not restored) and checkpoints continue. The new
plan is not guarded, so the guard acts at most once per run.

**The last good state** is a host copy of the trainable parameters, the model's buffers (BatchNorm
statistics) and the base optimizer's per-parameter state (momentum, Adam's moments and step). It is
taken before the first guarded step and then every W steps while the loss is at most halfway to a
divergence by either condition (``m_t ≤ √k · best`` or ``m_t − best ≤ (r/2)(first − best)``),
so a state from the start of a slow rise is not kept. The rule's own state is not copied: the rule is replaced by the fallback plan's. It costs
host memory of one copy of that state (SGD with momentum: 2x the parameters; Adam: 3x) and a
device-to-host copy every W steps, made inside ``step()`` on the descent's cores and threads (a plan
on two pools never copies with a team over the ascent worker's cores); above ``snapshot_bytes``
(default 1 GiB) no snapshot is kept, and a divergence switches plans without reverting (said once
in the log and in ``stats()``).

``AutoSAM(guard=False)`` switches it off; ``guard={"window": ..., "factor": ..., "regress": ...,
"snapshot_bytes": ...}`` sets it. Under ``DistributedDataParallel`` it is off (ranks would decide
at different steps), as re-planning is.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, fields
from typing import Any

import torch

from hetsam import _checks, defaults
from hetsam.errors import HetsamInputError
from hetsam.optim.options import show
from hetsam.optim.state_checks import counter, keys, real
from hetsam.profiling.stats import median
from hetsam.strategies import SAM

__all__ = ["GuardSettings", "LossWatch", "Snapshot", "DivergenceGuard", "fallback_plan"]


@dataclass(frozen=True)
class GuardSettings:
    """W, k, r and the snapshot's memory limit (module docstring)."""

    window: int = defaults.GUARD_WINDOW
    factor: float = defaults.GUARD_FACTOR
    regress: float = defaults.GUARD_REGRESS
    snapshot_bytes: int = defaults.GUARD_SNAPSHOT_BYTES

    def __post_init__(self) -> None:
        _checks.integer(self.window, "guard['window']", low=5, high=10_000, hint="steps per window")
        _checks.number(self.factor, "guard['factor']", low=1.2, high=100.0)
        _checks.number(self.regress, "guard['regress']", low=0.0, high=1.0, hint="a share of the loss's progress")
        _checks.integer(self.snapshot_bytes, "guard['snapshot_bytes']", low=0, high=1 << 50,
                        hint="bytes of host memory; 0 keeps no snapshot")

    @classmethod
    def from_value(cls, value: Any) -> GuardSettings | None:
        """True/None: the defaults; False: off (None); a dict of the fields."""
        if value is None or value is True:
            return cls()
        if value is False:
            return None
        if not isinstance(value, dict):
            raise HetsamInputError(f"guard={show(value)} must be True, False or a dict of window, factor, regress, "
                                   "snapshot_bytes")
        unknown = sorted(str(k) for k in set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise HetsamInputError(f"guard has unknown key(s) {', '.join(unknown)}; known: factor, regress, "
                                   "snapshot_bytes, window")
        return cls(**value)


class LossWatch:
    """The divergence rule on the stream of step losses (torch-free; module docstring)."""

    def __init__(self, settings: GuardSettings):
        self.s = settings
        self.recent: deque = deque(maxlen=settings.window)
        self.best: float | None = None
        self.first: float | None = None

    def _far(self, m: float, share: float) -> bool:
        """Whether m is ``share`` of the way to a divergence by both conditions (1: a divergence)."""
        k, r = self.s.factor ** share, self.s.regress * share
        return m > k * self.best and m - self.best > r * (self.first - self.best)

    def observe(self, loss: float) -> str | None:
        """Record ℓ_t; why step t diverges, or None."""
        if not math.isfinite(loss):
            return f"a non-finite loss ({loss})"
        self.recent.append(loss)
        if len(self.recent) < self.s.window:
            return None
        m = median(self.recent)
        if self.first is None:
            self.first = self.best = m
        if self._far(m, 1.0):
            return (f"the median of the last {self.s.window} losses, {m:.4g}, is over {self.s.factor:g} x the best, "
                    f"{self.best:.4g}, and gave back over {self.s.regress:.0%} of the progress from the first, "
                    f"{self.first:.4g}")
        self.best = min(self.best, m)
        return None

    def healthy(self) -> bool:
        """Whether the state now is worth keeping: at most halfway to a divergence by either
        condition (or too few losses to say)."""
        if self.best is None or len(self.recent) < self.s.window:
            return True
        return not self._far(median(self.recent), 0.5)

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "best": self.best, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.recent = deque((float(x) for x in state.get("recent", [])), maxlen=self.s.window)
        self.best = None if state.get("best") is None else float(state["best"])
        self.first = None if state.get("first") is None else float(state["first"])


class Snapshot:
    """The last good state on the host (module docstring); ``steps``: the steps it includes."""

    def __init__(self):
        self.steps: int | None = None
        self.nbytes = 0
        self._params: list = []
        self._buffers: list = []
        self._state: list = []

    @staticmethod
    def size(params, buffers, state) -> int:
        """Bytes a snapshot of this state takes."""
        tensors = [*params, *buffers, *(v for p in params for v in state.get(p, {}).values() if torch.is_tensor(v))]
        return sum(t.numel() * t.element_size() for t in tensors)

    def take(self, params, buffers, state, steps: int) -> None:
        """Copy to the host, reusing the last snapshot's host tensors where they fit."""
        with torch.no_grad():
            self._params = [_host(t, old) for t, old in _pad(params, self._params)]
            self._buffers = [_host(t, old) for t, old in _pad(buffers, self._buffers)]
            self._state = [_host_state(state.get(p), old) for p, old in _pad(params, self._state)]
        self.steps = steps
        kept = self._params + self._buffers + [v[0] for e in self._state if e for v in e.values() if isinstance(v, tuple)]
        self.nbytes = sum(t.numel() * t.element_size() for t in kept)

    def restore(self, params, buffers, state) -> None:
        """Copy back into the live tensors (parameters added since keep theirs)."""
        with torch.no_grad():
            for p, h in zip(params, self._params):
                p.copy_(h)
            for b, h in zip(buffers, self._buffers):
                b.copy_(h)
            for p, saved in zip(params, self._state):
                if saved is None:
                    state.pop(p, None)
                    continue
                live = state.get(p, {})
                new = {}
                for k, v in saved.items():
                    if isinstance(v, tuple):
                        host, device = v
                        old = live.get(k)
                        fits = torch.is_tensor(old) and old.shape == host.shape and old.dtype == host.dtype
                        new[k] = old.copy_(host) if fits else host.to(device, copy=True)
                    else:
                        new[k] = copy.deepcopy(v)
                state[p] = new


def _pad(items, old: list):
    return [(x, old[i] if i < len(old) else None) for i, x in enumerate(items)]


def _host_state(entry: dict | None, old: dict | None) -> dict | None:
    """One parameter's optimizer state on the host: tensors as (host copy, device), the rest copied."""
    if not entry:
        return None
    out = {}
    for k, v in entry.items():
        prev = (old or {}).get(k)
        out[k] = (_host(v, prev[0] if isinstance(prev, tuple) else None), v.device) if torch.is_tensor(v) \
            else copy.deepcopy(v)
    return out


def _host(t: torch.Tensor, old):
    t = t.detach()
    if old is not None and old.shape == t.shape and old.dtype == t.dtype:
        return old.copy_(t)
    return t.to("cpu", copy=True)


def fallback_plan(plan, report=None):
    """The SAM-faithful plan a divergence switches to.

    With the planner's report (``plan="auto"``): its best candidate within the budget whose
    strategy keeps the user's ρ and SAM's algorithm (spec neither ``guarded`` nor ``own_radius``,
    and not SGD, whose ``exact_share`` is 0: SAM, or SAMPa where a second device runs it), by the
    planner's objective and then speed. Otherwise, or when none fits: plain SAM on the plan's
    descent device.
    """
    if report is not None:
        faithful = [c for c in report.candidates if c.fits_budget and not c.plan.spec.guarded
                    and not c.plan.spec.own_radius and c.plan.spec.exact_share != 0.0]
        if faithful:
            return max(faithful, key=lambda c: (c.objective_value, -c.predicted_seconds)).plan
    from hetsam.planning.plan import Plan

    return Plan(strategy=SAM, descent_device=plan.descent_device, batch_size=plan.batch_size)


class DivergenceGuard:
    """The guard of one AutoSAM (module docstring): ``arm`` before a step, ``observe`` after it,
    ``trip`` on a divergence."""

    def __init__(self, settings: GuardSettings | None, log, off: str | None = None):
        self.settings = settings
        self.log = log
        self.off = off if settings is not None else "guard=False"  # why it never acts, or None
        self.watch = LossWatch(settings) if settings is not None else None
        self.snapshot: Snapshot | None = None
        self.no_snapshot: str | None = None  # why no snapshot is kept
        self.events: list[dict] = []

    @classmethod
    def for_model(cls, guard, model, log) -> DivergenceGuard:
        """AutoSAM's ``guard=`` for ``model`` (off under DDP)."""
        ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
        return cls(GuardSettings.from_value(guard), log,
                   off="under DistributedDataParallel (ranks would decide at different steps)" if ddp else None)

    def active(self, plan) -> bool:
        return self.off is None and not self.events and plan is not None and plan.spec.guarded

    def arm(self, opt, steps: int) -> None:
        """Before a step of a guarded plan: the first snapshot, if none is kept yet."""
        if self.active(opt.plan) and self.snapshot is None and self.no_snapshot is None:
            self._take(opt, steps)

    def observe(self, opt, loss: Any, steps: int, skipped: bool = False) -> str | None:
        """After a step (``steps`` done in all; ``skipped``: its update was, for a non-finite loss or
        gradient): why it diverged, or None (then a snapshot every W steps while healthy). The loss
        (a tensor) is read on the host only while the guard watches: one sync per guarded step."""
        if not self.active(opt.plan):
            return None
        reason = "a non-finite loss or update gradient (its update was skipped)" if skipped else \
            self.watch.observe(float(loss))
        if reason is None and self.snapshot is not None and steps - self.snapshot.steps >= self.settings.window \
                and self.watch.healthy():
            self._take(opt, steps)
        return reason

    def _take(self, opt, steps: int) -> None:
        params, buffers, state = _live(opt)
        nbytes = Snapshot.size(params, buffers, state)
        if nbytes > self.settings.snapshot_bytes:
            self.snapshot = None
            self.no_snapshot = (f"the state to keep is {nbytes / 2**20:.1f} MiB, over guard['snapshot_bytes'] = "
                                f"{self.settings.snapshot_bytes / 2**20:.1f} MiB")
            self.log(f"hetsam: guard: no snapshot ({self.no_snapshot}); a divergence switches plans without reverting")
            return
        if self.snapshot is None:
            self.snapshot = Snapshot()
        self.snapshot.take(params, buffers, state, steps)

    def release(self) -> None:
        """Free the snapshot (the plan that runs now is not guarded)."""
        self.snapshot = None

    def trip(self, opt, reason: str, step: int, old, new, share_text: str) -> dict:
        """After AutoSAM switched from ``old`` to ``new``: restore the snapshot, log, record."""
        reverted = self.snapshot is not None
        if reverted:
            self.snapshot.restore(*_live(opt))
            back = f"reverted to the state after step {self.snapshot.steps} (a host snapshot)"
        else:
            back = f"not reverted ({self.no_snapshot or 'no snapshot kept'})"
        event = {"step": step, "reason": reason, "reverted": reverted,
                 "reverted_to": self.snapshot.steps if reverted else None, "from": old.describe(),
                 "plan": new.describe()}
        self.events.append(event)
        self.snapshot = None
        self.log(f"hetsam: guard: step {step}: {reason} under {old.describe()}; {back}; switching from "
                 f"{old.strategy} to {new.describe()} (share of SAM's gain {share_text}) for the rest of the run")
        return event

    def stats(self) -> dict:
        s = self.settings
        out = {"on": self.off is None, "events": [dict(e) for e in self.events]}
        if s is not None:
            out.update(window=s.window, factor=s.factor, regress=s.regress, snapshot_bytes_limit=s.snapshot_bytes)
        if self.off is not None:
            out["off"] = self.off
        out["snapshot"] = (None if self.snapshot is None else
                           {"steps": self.snapshot.steps, "bytes": self.snapshot.nbytes})
        if self.no_snapshot:
            out["no_snapshot"] = self.no_snapshot
        return out

    def state_dict(self) -> dict:
        return {"events": [dict(e) for e in self.events],
                "watch": self.watch.state_dict() if self.watch is not None else None}

    @staticmethod
    def check_state(state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads."""
        keys(state, where, (), ("events", "watch"))
        events = state.get("events", [])
        if not isinstance(events, list):
            raise HetsamInputError(f"{where}['events'] must be a list of the guard's events")
        for i, event in enumerate(events):
            at = f"{where}['events'][{i}]"
            keys(event, at, ("step", "reason", "reverted", "reverted_to", "from", "plan"))
            step = counter(event["step"], f"{at}['step']")
            if not isinstance(event["reverted"], bool):
                raise HetsamInputError(f"{at}['reverted'] must be True or False")
            if event["reverted_to"] is not None:
                counter(event["reverted_to"], f"{at}['reverted_to']", high=step)
            for key in ("reason", "from", "plan"):
                if not isinstance(event[key], str):
                    raise HetsamInputError(f"{at}[{key!r}] must be a string")
        watch = state.get("watch")
        if watch is not None:
            keys(watch, f"{where}['watch']", ("recent", "best", "first"))
            recent = watch["recent"]
            if not isinstance(recent, list) or len(recent) > 10_000:
                raise HetsamInputError(f"{where}['watch']['recent'] must be a list of at most 10,000 losses")
            for i, x in enumerate(recent):
                real(x, f"{where}['watch']['recent'][{i}]")
            for key in ("best", "first"):
                if watch[key] is not None:
                    real(watch[key], f"{where}['watch'][{key!r}]")
            if (watch["best"] is None) != (watch["first"] is None):
                raise HetsamInputError(f"{where}['watch'] must have both 'best' and 'first' (or neither)")

    def load_state_dict(self, state: dict) -> None:
        self.events = [dict(e) for e in state.get("events", [])]
        if self.watch is not None and state.get("watch") is not None:
            self.watch.load_state_dict(state["watch"])


def _live(opt):
    """The trainable parameters, the model's buffers and the base optimizer's state."""
    from hetsam.execution.distributed import unwrap

    params = [p for group in opt.param_groups for p in group["params"]]
    return params, list(unwrap(opt.model).buffers()), opt.base_optimizer.state

