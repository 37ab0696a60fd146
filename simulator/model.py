"""A plan on a cost model as resources and tasks: the primitives every strategy's iteration uses.

Notation (all from the :class:`~hetsam.cost.model.CostModel`): D the descent device, A the
ascent device, b and b' the batch sizes, ``t_D = grad_seconds(D, b)``,
``t_A = grad_seconds(A, b')``, ``u = update_seconds(D)``, ``L`` the data loader's seconds per
step (``loader_seconds``, default 0), ``c_DA = copy_seconds(D, A, parameter_bytes)`` for a
parameter snapshot and ``c_AD`` for the gradient coming back (a gradient has the parameters'
size). ``U_t`` is the time step t's update ends; the *iteration time* is ``U_t − U_{t−1}``
(``U_{−1} = 0``).

How one iteration of a strategy maps to tasks is that strategy's own business: its spec's
``simulation(workload)`` (``hetsam/strategies/<name>/__init__.py``, which also gives its period
in closed form) builds iteration t from these primitives:

- :meth:`Workload.load`: ``load_t`` (L, on D, after ``U_{t−1}``);
- :meth:`Workload.descent_step`: gradient plus the step's fixed costs on D (``t_D + s``, with
  ``s = CostModel.step_seconds``: the update u, the loop's own work ℓ, and for a perturbed step
  the climb c; with an ascent job of the threaded executor also its hand-off h,
  ``CostModel.handoff_seconds``: the pair's on two pools, the device's time-sliced one on shared
  cores), the task whose end is ``U_t``; at scale DDP's bucketed backward and all-reduce;
- :meth:`Workload.ascent_chain`: ``copy θ`` (D→A link) → the ascent gradient on A (t_A) →
  ``copy ĝ`` (A→D link), after a given task (the update that made the θ it reads);
- :meth:`Workload.sgd_step` and :meth:`Workload.sam_step`: the two baselines' iterations
  (SGD: ``L + t_D + s``; SAM: the ascent then the descent at ``θ_t + e``, ``L + 2·t_D + s`` on D,
  or with both copies when the plan names another ascent device).

Same hardware (``CostModel.shares_cores``): D and A are one resource, so the two gradients are
time-sliced (one after the other), as the executor runs them on a shared pool; the copies
between the same device cost nothing. Disjoint pools of one socket are two resources that slow
each other while both compute (``CostModel.slowdown``; see ``engine.py``).

Jitter (:mod:`hetsam.cost.jitter`): every gradient time is drawn from a lognormal matched to the
measured median and interquartile range. Draws come from separate seeded streams (descent,
ascent, and any a strategy asks for with :meth:`Workload.stream`), so the n-th descent of two
strategies uses the same random number (common random numbers make strategy comparisons less
noisy). Updates, loader and copies have no spread in the profile and are not jittered.

Many nodes (``cluster``, a :class:`hetsam.cost.cluster.Cluster` with n = N·G > 1 ranks). The
descent is data-parallel: every rank runs the plan on its own devices and DDP all-reduces the
descent gradient. Ranks run in lock-step (every rank applies the same averaged gradient), so
the simulation follows **one representative rank plus the network**, never n processes:

- :meth:`Workload.descent_step` splits the descent gradient of step t into the forward and
  one backward segment per DDP bucket (on D, in that order: the forward is the first
  ``1−β`` of the draw, then bucket k's share of the backward), adds one ring all-reduce task
  per bucket on a ``network`` resource (each after its bucket's segment and the previous
  all-reduce, so they run one after the other), and the update after both the backward and
  the last all-reduce. ``hetsam.cost.network`` gives the bucket sizes, ``β`` and the ring
  formula; without jitter the step is exactly ``max(t_D, e_K) + u`` of its closed form.
- The ascent runs on the rank's own ascent device without an all-reduce: the perturbation is
  per rank, as SAM is usually run under DDP.
- A strategy whose spec says ``rank_pairs`` runs its two gradients on a *pair* of ranks
  (D and A are the two ranks): :meth:`Workload.backward_buckets` and :meth:`Workload.allreduces`
  over ``2n`` ranks, with no D↔A copies.
- **Jitter across ranks**: an all-reduce waits for the slowest rank, so every gradient draw
  is the slowest of n ranks' draws (:class:`~hetsam.cost.jitter.MaxDraw`). Ascent draws are
  taken the same way. Taking the slowest ascent and the slowest descent in one step is an
  upper bound (``max_r a_r + max_r d_r >= max_r (a_r + d_r)``) that is tight when the ascent is
  hidden. Strategy streams (``stream``) are common to all ranks (every rank takes the same
  decision).
- Not modelled: the other G−1 ranks' CPU pools computing on the same socket (shared memory
  bandwidth; a pool's times are those the cost model gives for it alone), other traffic on
  the network (data loading, checkpoints), and NCCL's switch to trees for small messages.
- With n = 1 none of this runs: the result is the single-node one exactly.
"""

from __future__ import annotations

import math
import random

from hetsam import strategies
from hetsam.cost.jitter import Draw, MaxDraw
from hetsam.cost.model import CostModel
from hetsam.errors import HetsamInputError

from .engine import Engine, Resource, Task

__all__ = ["Workload", "warmup_iterations", "ORIGIN"]


def warmup_iterations(staleness: int) -> int:
    """Iterations left out of the steady-state mean: the pipeline of τ+1 steps fills first."""
    return 5 * (staleness + 2)


def _stream(seed: int, name: str) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED
    return random.Random(f"hetsam.simulator:{seed}:{name}")


class Workload:
    """A plan on a cost model, as resources and a generator of per-iteration tasks.

    ``on_step(t, task)`` is called when step t's last task (its update) completes; the caller
    records the iteration and may stop the engine. Iterations are built lazily, τ+1 ahead of
    the last completed step, so memory stays bounded however many iterations run.
    """

    def __init__(self, plan, cm: CostModel, engine: Engine, *, jitter: bool, seed: int,
                 loader_seconds: float = 0.0, on_step=None, cluster=None):
        if not isinstance(loader_seconds, (int, float)) or not math.isfinite(loader_seconds) or loader_seconds < 0:
            raise HetsamInputError(f"loader_seconds={loader_seconds!r} must be a number >= 0")
        self.plan = plan
        self.spec = spec = strategies.get(plan.strategy)
        self.cm = cm
        self.engine = engine
        self.on_step = on_step
        self.seed, self.jitter = seed, jitter
        self.b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
        self.descent = _resolve(cm, plan.descent_device, "descent_device")
        self.ascent = _resolve(cm, plan.effective_ascent_device, "ascent_device")
        self.uses_ascent = spec.uses_ascent
        self.ascent_batch_size = spec.ascent_batch_size(plan, self.b)
        self.tau = spec.staleness(plan)
        self.loader = float(loader_seconds)
        self._fixed = (cm.step_seconds(self.descent, False), cm.step_seconds(self.descent, True))
        # data parallel over n > 1 ranks (module docstring): one representative rank + the network
        self.cluster = cluster if cluster is not None and cluster.ranks > 1 else None
        self.ranks = self.cluster.ranks if self.cluster is not None else 1
        self.pairs = self.cluster is not None and spec.rank_pairs
        self.t_descent = self._draw(self.descent, self.b, "descent")
        self.t_ascent = None
        self.notes: list[str] = []
        for dev, batch in ((self.descent, self.b), (self.ascent, self.ascent_batch_size)):
            limit = cm.max_batch(dev)
            if limit is not None and batch > limit and (dev == self.descent or self.uses_ascent):
                self.notes.append(f"batch {batch} on {dev} exceeds the largest batch that fit when profiling ({limit})")
        self._resources()
        # the threaded executor's hand-off (a worker on another pool, or a time-sliced job): a fixed cost of D's step;
        # SAM, RST and the other one-device rules run both passes on the calling thread, without a job
        self.handoff = cm.handoff_seconds(self.descent, self.ascent) if spec.uses_executor and not self.pairs else 0.0
        self._fixed = (self._fixed[0] + self.handoff, self._fixed[1] + self.handoff)
        self._steps: dict[int, Task] = {}  # step tasks still referenced by later iterations
        self.ascent_updates: dict[int, Task] = {}  # rank pairs: A's update of each step
        self._built = 0
        self._build_iteration = spec.simulation(self)  # the one dispatch point between strategies

    def _draw(self, dev: str, batch: int, name: str) -> Draw:
        med, iqr = self.cm.grad_seconds(dev, batch), self.cm.grad_spread(dev, batch)
        stream = _stream(self.seed, name) if self.jitter else None
        return MaxDraw(med, iqr, stream, self.ranks) if self.ranks > 1 else Draw(med, iqr, stream)

    def stream(self, name: str) -> random.Random:
        """A seeded random stream of its own for a strategy's decisions (common to all ranks)."""
        return _stream(self.seed, name)

    def _resources(self) -> None:
        cm, engine = self.cm, self.engine
        self.res_descent = engine.resource(self.descent)
        self.res_ascent = self.res_descent
        self.link_to_ascent: Resource | None = None
        self.link_to_descent: Resource | None = None
        self.copy_to_ascent = self.copy_to_descent = 0.0
        self.handover: Resource | None = None
        self.job_latency = 0.0
        self.shared = False
        if self.uses_ascent:
            self.t_ascent = self._draw(self.ascent, self.ascent_batch_size, "ascent")
            self.shared = cm.shares_cores(self.descent, self.ascent)
            if not self.shared:
                self.res_ascent = engine.resource(self.ascent)
                m = self.ascent_batch_size  # the job's batch sets both factors (hetsam/profiling/pairs.py)
                engine.contend(self.res_descent, self.res_ascent,
                               cm.slowdown(self.descent, self.ascent, m), cm.slowdown(self.ascent, self.descent, m))
        if self.uses_ascent and not self.pairs:  # rank pairs exchange through the all-reduce
            _job_path(self, cm, engine)
            if self.shared and self.ascent != self.descent:
                self.notes.append(f"{self.descent} and {self.ascent} share cores: their gradients are time-sliced")
        self.res_network: Resource | None = None
        self.exposed = [0.0, 0]  # sum and count of the seconds the last all-reduce ends after the backward
        if self.cluster is not None:
            c = self.cluster
            self.allreduce_ranks = 2 * c.ranks if self.pairs else c.ranks
            self.bucket_fractions, self.bucket_seconds = c.bucket_schedule(
                self.descent, cm.parameter_bytes, self.allreduce_ranks)
            self.res_network = engine.resource("network", "link", compute=False)
            self.update_ascent = cm.update_seconds(self.ascent)
            roles = {"descent": self.descent}
            if self.uses_ascent:
                roles["ascent"] = self.ascent
            self.notes += c.ownership_notes(roles)
            if self.pairs and not cm.accelerator(self.ascent):
                self.notes.append(f"{self.spec.title} pair: {self.ascent} is a rank of the all-reduce; NCCL needs GPUs, "
                                  "so a CPU rank means a gloo or mixed backend, priced here at the same ring link")

    # ---- roles, for reports ----------------------------------------------------------------
    def device_roles(self) -> dict[str, Resource]:
        roles = {self.descent: self.res_descent}
        if self.uses_ascent:
            roles[self.ascent] = self.res_ascent
        return roles

    def links(self) -> dict[str, Resource]:
        return {r.name: r for r in (self.link_to_ascent, self.link_to_descent, self.res_network) if r is not None}

    def track_labels(self) -> dict[Resource, str]:
        labels = {self.res_descent: "descent"}
        if self.uses_ascent:
            if self.shared:
                labels[self.res_descent] = "descent + ascent (time-sliced)"
            else:
                labels[self.res_ascent] = "ascent"
        for r in self.links().values():
            labels[r] = "copies"
        if self.handover is not None:
            labels[self.handover] = "executor hand-over"
        if self.res_network is not None:
            labels[self.res_network] = f"ring all-reduce over {self.allreduce_ranks} ranks"
        return labels

    # ---- building ------------------------------------------------------------------------
    def start(self) -> None:
        """Build the first τ+1 iterations (their ascents need nothing from earlier steps)."""
        for _ in range(self.tau + 1):
            self._next()

    def _next(self) -> None:
        t = self._built
        self._built += 1
        self._build_iteration(t)
        self._steps.pop(t - self.tau - 2, None)
        self.ascent_updates.pop(t - 2, None)

    def done(self, task: Task) -> None:
        """``on_done`` of a step's last task: build the next iteration, then report the step."""
        self._next()  # keeps τ+1 iterations ahead of the last completed step
        if self.on_step is not None:
            self.on_step(task.iteration, task)

    def step(self, t: int) -> Task | None:
        """The task whose end is ``U_t`` (None before step 0 or once forgotten)."""
        return self._steps.get(t)

    def set_step(self, t: int, task: Task) -> Task:
        self._steps[t] = task
        return task

    def load(self, t: int, prev: Task | None) -> Task | None:
        """The data loader's share of step t on the descent side (None when L = 0)."""
        if self.loader <= 0.0:
            return None
        return self.engine.add("load", "loader", self.res_descent, self.loader, t, (prev,), order=4 * t)

    def start_of(self, t: int) -> tuple[Task | None, Task | None]:
        """(``U_{t−1}``'s task, what step t's descent follows: its load, else ``U_{t−1}``)."""
        prev = self.step(t - 1)
        return prev, self.load(t, prev) or prev

    def fixed(self, perturbed: bool) -> float:
        """The fixed costs of a step on D beside its passes (``CostModel.step_seconds``)."""
        return self._fixed[bool(perturbed)]

    def descent_step(self, t: int, deps, chain: Task | None, perturbed: bool = False) -> Task:
        """Gradient plus the fixed costs of step t on D; the task whose end is ``U_t``.

        ``deps``: what the step needs (the previous step or its load, and the ascent gradient);
        ``chain``: the task it would follow if the ascent were free (for the wait); ``perturbed``:
        the step climbs to θ + e (its fixed costs include the climb). With n > 1 ranks it is DDP's
        bucketed backward and all-reduce (:meth:`_ddp_descent_step`).
        """
        if self.cluster is not None:
            return self._ddp_descent_step(t, deps, chain, perturbed)
        fixed = self.fixed(perturbed)
        task = self.engine.add("descent", "descent", self.res_descent, self.t_descent() + fixed, t, deps,
                               order=4 * t + 2, on_done=self.done, chain=chain or ORIGIN, tail=fixed)
        return self.set_step(t, task)

    def backward_buckets(self, t: int, res: Resource, work: float, deps, chain, name: str) -> list[Task]:
        """The forward and one backward segment per DDP bucket of a ``work``-second gradient on
        ``res``, one after the other: segment k ends when bucket k is ready (r_k)."""
        beta = self.cluster.backward_fraction
        fwd, bwd = work * (1.0 - beta), work * beta
        segs, done = [], 0.0
        for k, frac in enumerate(self.bucket_fractions):
            seg_work = (fwd if k == 0 else 0.0) + (frac - done) * bwd
            done = frac
            label = f"{name}: forward + backward 1/{len(self.bucket_fractions)}" if k == 0 else \
                f"{name}: backward {k + 1}/{len(self.bucket_fractions)}"
            segs.append(self.engine.add(label, "descent", res, seg_work, t, deps if k == 0 else (segs[-1],),
                                        order=4 * t + 2, chain=(chain or ORIGIN) if k == 0 else None))
        return segs

    def allreduces(self, t: int, *producers: list[Task]) -> Task:
        """One ring all-reduce per bucket, each after its bucket (on every producer) and the
        previous all-reduce; returns the last."""
        prev = None
        n = len(self.bucket_seconds)
        for k, seconds in enumerate(self.bucket_seconds):
            deps = tuple(p[k] for p in producers) + (prev,)
            prev = self.engine.add(f"all-reduce {k + 1}/{n}", "allreduce", self.res_network, seconds, t, deps,
                                   order=4 * t + 2)
        return prev

    def expose(self, seconds: float) -> None:
        """Record how long the last all-reduce ended after the backward."""
        self.exposed[0] += max(0.0, seconds)
        self.exposed[1] += 1

    def _ddp_descent_step(self, t: int, deps, chain: Task | None, perturbed: bool) -> Task:
        """Descent of step t as one rank of a DDP job: buckets, their all-reduces, the update."""
        segs = self.backward_buckets(t, self.res_descent, self.t_descent(), deps, chain, "descent")
        last = self.allreduces(t, segs)
        first, end = segs[0], segs[-1]

        def done(task: Task) -> None:
            task.wait = first.wait  # the descent's wait for ĝ, as in the single-node model
            self.expose(last.end - end.end)
            self.done(task)

        task = self.engine.add("update", "update", self.res_descent, self.fixed(perturbed), t, (end, last),
                               order=4 * t + 3, on_done=done)
        return self.set_step(t, task)

    def ascent_chain(self, t: int, theta: int, after: Task | None, name: str = "ascent") -> Task:
        """copy θ → the executor's hand-over → ascent gradient on A → copy ĝ back, for step t from
        θ_theta; returns the last task. Program order: right after load_theta, before descent_theta."""
        e = self.engine
        dep, order = after, 4 * theta + 1
        if self.link_to_ascent is not None:
            dep = e.add("copy θ", "copy", self.link_to_ascent, self.copy_to_ascent, t, (dep,), order=order)
        if self.handover is not None:
            dep = e.add("hand-over", "handover", self.handover, self.job_latency, t, (dep,), order=order)
        dep = e.add(name, "ascent", self.res_ascent, self.t_ascent(), t, (dep,), order=order)
        if self.link_to_descent is not None:
            dep = e.add("copy ĝ", "copy", self.link_to_descent, self.copy_to_descent, t, (dep,), order=order)
        return dep

    # ---- the baselines' iterations --------------------------------------------------------
    def sgd_step(self, t: int) -> None:
        """``load_t``, then the descent: ``L + t_D + u``."""
        _, chain = self.start_of(t)
        self.descent_step(t, (chain,), chain)

    def sam_step(self, t: int) -> None:
        """The ascent at θ_t (on A, with copies if A is not D), then the descent at θ_t + e."""
        prev, chain = self.start_of(t)
        grad = self.ascent_chain(t, t, prev)
        self.descent_step(t, (chain, grad), chain, perturbed=True)


def _job_path(w: Workload, cm: CostModel, engine: Engine) -> None:
    """The resources on a job's path besides A: the copies of θ and ĝ, and the executor's round trip
    beyond the hand-off that D's step pays (``CostModel.job_latency_seconds``)."""
    nbytes = cm.parameter_bytes
    w.copy_to_ascent = cm.copy_seconds(w.descent, w.ascent, nbytes)
    w.copy_to_descent = cm.copy_seconds(w.ascent, w.descent, nbytes)
    if w.copy_to_ascent > 0:
        w.link_to_ascent = engine.resource(f"{w.descent}→{w.ascent}", "link", compute=False)
    if w.copy_to_descent > 0:
        w.link_to_descent = engine.resource(f"{w.ascent}→{w.descent}", "link", compute=False)
    w.job_latency = cm.job_latency_seconds(w.descent, w.ascent) if w.spec.uses_executor else 0.0
    if w.job_latency > 0:
        w.handover = engine.resource(f"{w.descent}⇄{w.ascent}", "link", compute=False)


def _resolve(cm: CostModel, name: str, field: str) -> str:
    try:
        return cm.resolve(name)
    except HetsamInputError as exc:
        raise HetsamInputError(f"plan {field}: {exc}") from None


class _Origin:
    """Stands for "time 0" as a chain predecessor: done, ended at 0, nothing busy before."""

    done = True
    end = 0.0
    busy_mark = 0.0


ORIGIN = _Origin()
