"""AsyncSAM: the ascent gradient τ steps stale, on b' samples, computed by an executor.

After "Asynchronous Sharpness-Aware Minimization for Fast and Accurate Deep Learning", with the
two batch policies of the README ("AsyncSAM").
Let B'_s be the first b' samples of B_s.

* ``lookahead`` (hetsam's default): step t is perturbed by ĝ_t = g(θ_{t−τ}; B'_t). The job is
  submitted during step t − τ, at θ_{t−τ}, so it needs B_t τ steps early (``upcoming``).
* ``independent`` (the paper's): ĝ_s = g(θ_s; B'_s), submitted during step s, used at s + τ.

Either way: e_t = ρ T² ĝ / ‖T ĝ‖ and θ_{t+1} = base(θ_t, g(θ_t + e_t; B_t)); steps t < τ have no
perturbation; the staleness is exact (step t waits for the job submitted at step t − τ and for
nothing newer). With τ = 0 and b' = b both policies are SAM.

Without ``upcoming`` the ``lookahead`` policy cannot name B_{t+τ}: it then falls back to
``independent`` for the rest of the run, with a one-time warning; ``stats()`` reports the policy
that ran (the plan stays the decision). When ``upcoming`` is shorter than τ (the end of an
epoch's data: the next batch exists but is not known yet), the job for step t + τ is deferred:
if that step comes, its ĝ is taken then, at θ_{t+τ} on B'_{t+τ} (fresh, on the very samples,
computed before that step's descent), and ``stats()`` counts it in ``fresh_jobs``; at the end of
training nothing is computed for a step that never comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from hetsam._warnings import warn_user
from hetsam.errors import HetsamInputError
from hetsam.execution.batches import batch_size, slice_batch
from hetsam.execution.jobs import ASCENT, GradResult
from hetsam.optim.state_checks import aligned, counter, keys, real
from hetsam.strategies.rule import StrategyRule

__all__ = ["AsyncSAMRule", "completed"]


def completed(result: GradResult) -> Future:
    """A finished future holding ``result`` (pending results restored from a checkpoint)."""
    future: Future = Future()
    future.set_result(result)
    return future


class AsyncSAMRule(StrategyRule):
    """AsyncSAM(τ, b', policy); see the module docstring for the rule. Returns L(θ_t + e_t; B_t)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.executor = ctx.executor()
        self.plan = ctx.plan
        self.spec = ctx.plan.spec  # looked up once: _first needs it every step
        self.tau = ctx.plan.options["staleness"]
        self.policy = ctx.plan.options["ascent_batches"]
        self.fell_back = False
        self.pending_jobs: dict[int, Future] = {}  # step index -> the job whose ĝ perturbs that step
        self.counts = {"lookahead_jobs": 0, "independent_jobs": 0, "fresh_jobs": 0, "unperturbed_steps": 0}
        self.deferred: set[int] = set()  # steps whose job waits for their own batch (end of an epoch)

    @property
    def lookahead(self) -> int:
        return self.tau if self.policy == "lookahead" else 0

    def _job_source(self, batch: Any, upcoming: Sequence[Any] | None) -> Any:
        """B_{t+τ} under lookahead, B_t under independent (and τ = 0); None: deferred."""
        if self.tau > 0 and self.policy == "lookahead":
            if upcoming is None:
                self._fall_back()
            elif len(upcoming) >= self.tau:
                self.counts["lookahead_jobs"] += 1
                return upcoming[self.tau - 1]
            else:
                return None
        if self.tau > 0:
            self.counts["independent_jobs"] += 1
        return batch

    def _first(self, source: Any) -> Any:
        """B': the first b' samples of ``source``."""
        n = batch_size(source)
        size = self.spec.ascent_batch_size(self.plan, n)
        return source if size == n else slice_batch(source, 0, size)

    def _fall_back(self) -> None:
        self.policy = "independent"
        self.fell_back = True
        warn_user(
            "AsyncSAM ascent_batches='lookahead' needs the next τ batches: pass step(batch, upcoming=[...]) "
            "or iterate `for batch in opt.prefetch(loader)`. Without them this run falls back to "
            "ascent_batches='independent' (the AsyncSAM paper's policy, which keeps less of SAM's gain); "
            "opt.stats() reports the policy that ran."
        )

    def step(self, batch, upcoming, accumulate):
        rt, ex, t, tau = self.rt, self.executor, self.t, self.tau
        ghat = None
        if tau > 0 and t in self.pending_jobs:  # ĝ_t, submitted at step t − τ
            ghat = ex.wait(self.pending_jobs.pop(t)).grads
        elif t in self.deferred:  # its batch was not known τ steps ago: ĝ_t = g(θ_t; B'_t) now
            self.deferred.discard(t)
            self.counts["fresh_jobs"] += 1
            ghat = ex.wait(ex.submit(rt.job(t, ASCENT, self._first(batch), accumulate=accumulate))).grads
        # the job for step t + τ, at θ_t: submitted before the climb changes θ
        source = self._job_source(batch, upcoming)
        if source is None:
            self.deferred.add(t + tau)
        else:
            future = ex.submit(rt.job(t + tau, ASCENT, self._first(source), accumulate=accumulate))
            if tau == 0:
                ghat = ex.wait(future).grads
            else:
                self.pending_jobs[t + tau] = future
        climbed = False
        if ghat is None:
            self.counts["unperturbed_steps"] += 1  # t < τ
        else:
            rt.save()
            climbed = rt.climb(ghat, scratch=True)  # θ_t + e_t (ĝ becomes e_t in place)
            del ghat
        loss = rt.gradient(batch, accumulate=accumulate, update_stats=True, unscale=False, update=True)  # S·g(θ_t + e_t; B_t)
        if climbed:
            rt.restore()
        rt.perturbation.release()
        rt.apply()
        self.t += 1
        return loss

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        pending = {}
        for key, future in sorted(self.pending_jobs.items()):
            result = self.executor.wait(future)
            pending[key] = {"grads": list(result.grads), "loss": result.loss, "kind": result.kind}
        return {"t": self.t, "policy": self.policy, "fell_back": self.fell_back, "counts": dict(self.counts),
                "pending": pending, "deferred": sorted(self.deferred)}

    def check_state(self, state, where: str) -> None:
        """Refuse (naming the key) a state :meth:`load_state_dict` cannot take, before anything loads:
        pending ĝ and deferred jobs only for steps t to t + τ − 1, each ĝ of its parameter's shape."""
        keys(state, where, ("t", "policy", "fell_back", "counts", "pending"), ("deferred",))
        t = counter(state["t"], f"{where}['t']")
        if state["policy"] not in ("lookahead", "independent"):
            raise HetsamInputError(f"{where}['policy']={state['policy']!r} must be 'lookahead' or 'independent'")
        if not isinstance(state["fell_back"], bool):
            raise HetsamInputError(f"{where}['fell_back'] must be True or False")
        for key, value in keys(state["counts"], f"{where}['counts']", (), self.counts).items():
            counter(value, f"{where}['counts'][{key!r}]")
        steps = range(t, t + self.tau)  # the steps a job may still be pending for

        def step_of(key, at):
            if not (isinstance(key, int) and not isinstance(key, bool) and key in steps):
                raise HetsamInputError(f"{at}: step {key!r} is not one of the next τ = {self.tau} steps after step {t}")

        pending = state["pending"]
        if not isinstance(pending, dict):
            raise HetsamInputError(f"{where}['pending'] must be a dict of step -> ascent result")
        for key, entry in pending.items():
            at = f"{where}['pending'][{key!r}]"
            step_of(key, at)
            keys(entry, at, ("grads", "loss", "kind"))
            aligned(entry["grads"], self.rt.params, f"{at}['grads']")
            real(entry["loss"], f"{at}['loss']", finite=False)  # a non-finite ĝ only skips its perturbation
            if entry["kind"] != ASCENT:
                raise HetsamInputError(f"{at}['kind']={entry['kind']!r} must be {ASCENT!r}")
        deferred = state.get("deferred", [])
        if not isinstance(deferred, (list, tuple)):
            raise HetsamInputError(f"{where}['deferred'] must be a list of steps")
        for i, key in enumerate(deferred):
            step_of(key, f"{where}['deferred'][{i}]")

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.policy = state["policy"]
        self.fell_back = bool(state["fell_back"])
        self.counts = {**self.counts, **state["counts"]}
        self.deferred = {int(k) for k in state.get("deferred", ())}
        params = self.rt.params
        self.pending_jobs = {}
        for key, entry in state["pending"].items():
            grads = [None if g is None else g.to(p.device) for g, p in zip(entry["grads"], params)]
            self.pending_jobs[int(key)] = completed(GradResult(int(key), entry["kind"], grads, float(entry["loss"])))

    def pending(self) -> list:
        return list(self.pending_jobs.values())

    def held_tensors(self):
        out = []
        for future in self.pending_jobs.values():
            if future.done():
                out.extend(g for g in future.result().grads if g is not None)
        return out

    def stats(self) -> dict:
        return {"policy": self.policy, "fell_back": self.fell_back, **self.counts}
