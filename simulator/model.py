"""How one iteration of each strategy maps to tasks on devices and links.

Notation (all from the :class:`~hetsam.cost.model.CostModel`): D the descent device, A the
ascent device, b and b' the batch sizes, ``t_D = grad_seconds(D, b)``,
``t_A = grad_seconds(A, b')``, ``u = update_seconds(D)``, ``L`` the data loader's seconds per
step (``loader_seconds``, default 0), ``c_DA = copy_seconds(D, A, parameter_bytes)`` for a
parameter snapshot and ``c_AD`` for the gradient coming back (a gradient has the parameters'
size). ``U_t`` is the time step t's update ends; the *iteration time* is ``U_t − U_{t−1}``
(``U_{−1} = 0``).

Per iteration t (DESIGN.md section 3 gives the update rules):

- **sgd**: ``load_t`` (L, on D, after ``U_{t−1}``), then ``step_t`` = gradient + update
  (``t_D + u``, on D). Without jitter every iteration is exactly ``L + t_D + u``.
- **sam**: the ascent ``g(θ_t; B_t)`` then the descent at ``θ_t + e``: on D that is
  ``L + 2·t_D + u``. If the plan names another ascent device, the ascent runs there with
  both copies in between (AsyncSAM with τ = 0).
- **async_sam(τ, b')**: the ascent that perturbs step t is ``g(θ_{t−τ}; ·)`` under both batch
  policies (``lookahead``: on B'_t; ``independent``: on B'_{t−τ}); only the samples differ, not
  the timing. θ_{t−τ} exists once step t−τ−1's update is done (θ_0 at time 0), so:
  ``copy θ_{t−τ}`` (D→A link) after ``U_{t−τ−1}``, then ``ascent_t`` (t_A, on A), then
  ``copy ĝ_t`` (A→D link), and ``step_t`` starts after both ``load_t`` and that copy. Steps
  t < τ have no perturbation. The descent *waits* for the idle time of D between ``load_t``
  (or ``U_{t−1}``) and the gradient's arrival. With no jitter and τ = 1 the period is

      max(L + t_D + u, t_A, c_DA, c_AD, (c_DA + t_A + c_AD + L + t_D + u) / 2)

  (the last term is the cycle snapshot → ascent → copy → step spanning two steps). It equals
  ``max(t_D + u, t_A + copies)`` when the ascent chain fits in one step or the copies are free.
- **sampa**: both gradients of a step at once: ``g_x`` at b on D after ``load_t``; ``y_{t+1}``
  is sent D→A after ``U_{t−1}``, ``g_y'`` at b runs on A and comes back A→D; then the combine
  ``(1−λ)·g_x + λ·g_y'`` and the base update take ``u`` on D. Period:
  ``max(L + t_D, c_DA + t_A(b) + c_AD) + u``. The descent waits between ``g_x`` and ``g_y'``.
- **rst(p)**: each step draws u ~ U[0, 1) from its own seeded stream; if u < p it is a SAM
  step, otherwise an SGD step. Mean: ``L + t_D + u + p·t_D``.

Same hardware (``CostModel.shares_cores``): D and A are one resource, so the two gradients
are time-sliced (one after the other), as the executor runs them on a shared pool; the copies
between the same device cost nothing. Disjoint pools of one socket are two resources that
slow each other while both compute (``CostModel.slowdown``; see ``engine.py``).

Jitter: every gradient time is drawn from a lognormal with the measured median ``m`` and
interquartile range ``IQR`` matched exactly: ``σ = asinh(IQR / (2m)) / z_0.75`` (for small
spreads σ ≈ IQR / (1.349·m)). Draws come from separate seeded streams (descent, ascent,
RST coin), so the n-th descent of two strategies uses the same random number (common random
numbers make strategy comparisons less noisy). Updates, loader and copies have no spread in
the profile and are not jittered.

Many nodes (``cluster``, a :class:`hetsam.cost.network.Cluster` with n = N·G > 1 ranks). The
descent is data-parallel: every rank runs the plan on its own devices and DDP all-reduces the
descent gradient. Ranks run in lock-step (every rank applies the same averaged gradient), so
the simulation follows **one representative rank plus the network**, never n processes:

- :meth:`Workload.descent_step` splits the descent gradient of step t into the forward and
  one backward segment per DDP bucket (on D, in that order: the forward is the first
  ``1−β`` of the draw, then bucket k's share of the backward), adds one ring all-reduce task
  per bucket on a ``network`` resource (each after its bucket's segment and the previous
  all-reduce, so they run one after the other), and the update after both the backward and
  the last all-reduce. ``hetsam.cost.network`` gives the bucket sizes, ``β`` and the ring formula;
  without jitter the step is exactly ``max(t_D, e_K) + u`` of its closed form.
- The ascent of SAM and RST runs on D without an all-reduce, and AsyncSAM's on the rank's own
  ascent device: the perturbation is per rank, as SAM is usually run under DDP.
- **SAMPa pairs** (as the official SAMPa code runs on two GPUs): D and A are the two ranks of
  a pair; each step both compute their gradient at b (``g_x`` on D after ``U_{t−1}``,
  ``g_y'`` on A after A's previous update), and *one* all-reduce over the 2n ranks combines
  ``(1−λ)·g_x`` and ``λ·g_y'`` and averages over the pairs, so there are no D↔A copies. Its
  buckets are ready when both ranks have produced them; then D and A update (``u`` each).
  The descent wait is the time D's backward ends before A's. With n = 1 SAMPa keeps the
  single-process model above (copies).
- **Jitter across ranks**: an all-reduce waits for the slowest rank, so every gradient draw
  is the slowest of n ranks' draws: the maximum of n lognormals, sampled exactly by the
  inverse CDF, ``m·exp(σ·Φ⁻¹(U^{1/n}))`` with one uniform U (:class:`MaxDraw`). Ascent
  draws are taken the same way. Taking the slowest ascent and the slowest descent in one
  step is an upper bound (``max_r a_r + max_r d_r >= max_r (a_r + d_r)``) that is tight when
  the ascent is hidden. RST's coin is common to all ranks (every rank takes the same decision).
- Not modelled: the other G−1 ranks' CPU pools computing on the same socket (shared memory
  bandwidth; a pool's times are those the cost model gives for it alone), other traffic on
  the network (data loading, checkpoints), and NCCL's switch to trees for small messages.
- With n = 1 none of this runs: the result is the single-node one exactly.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

from hetsam.cost.model import CostModel
from hetsam.errors import HetsamInputError
from hetsam.planning.plan import Plan

from .engine import Engine, Resource, Task

__all__ = ["Workload", "Draw", "MaxDraw", "lognormal_sigma", "slowest_median", "warmup_iterations"]

_Z75 = 0.6744897501960817  # standard normal 0.75 quantile
_NORMAL = NormalDist()


def lognormal_sigma(median: float, iqr: float) -> float:
    """σ of the lognormal whose median is ``median`` and interquartile range is ``iqr``.

    The quartiles of ``m·exp(σZ)`` are ``m·exp(±σ·z_0.75)``, so ``IQR = 2m·sinh(σ·z_0.75)``.
    """
    if median <= 0 or iqr < 0:
        raise ValueError("median must be > 0 and iqr >= 0")
    return math.asinh(iqr / (2.0 * median)) / _Z75


def slowest_median(median: float, iqr: float, n: int) -> float:
    """Median of the slowest of ``n`` ranks' draws: ``m·exp(σ·Φ⁻¹(0.5^{1/n}))`` (see :class:`MaxDraw`)."""
    if n <= 1 or iqr <= 0:
        return median
    return median * math.exp(lognormal_sigma(median, iqr) * _NORMAL.inv_cdf(0.5 ** (1.0 / n)))


def warmup_iterations(staleness: int) -> int:
    """Iterations left out of the steady-state mean: the pipeline of τ+1 steps fills first."""
    return 5 * (staleness + 2)


class Draw:
    """Seconds of one gradient: the median, or a lognormal draw around it when jittering."""

    __slots__ = ("median", "sigma", "_gauss")

    def __init__(self, median: float, iqr: float, rng: random.Random | None):
        self.median = median
        self.sigma = lognormal_sigma(median, iqr) if rng is not None else 0.0
        self._gauss = rng.gauss if rng is not None else None

    def __call__(self) -> float:
        if self.sigma == 0.0:
            return self.median
        return self.median * math.exp(self.sigma * self._gauss(0.0, 1.0))


class MaxDraw(Draw):
    """Seconds of the slowest of ``n`` ranks' gradients: the maximum of n lognormal draws.

    ``P(max <= m·e^{σz}) = Φ(z)^n``, so ``max = m·exp(σ·Φ⁻¹(U^{1/n}))`` with U uniform: one
    draw per step whatever n. ``Φ⁻¹(U^{1/n})`` is taken as ``−Φ⁻¹(1 − U^{1/n})`` with
    ``1 − U^{1/n} = −expm1(ln U / n)``, which stays accurate when ``U^{1/n}`` rounds to 1.
    """

    __slots__ = ("inv_n", "_random")

    def __init__(self, median: float, iqr: float, rng: random.Random | None, n: int):
        super().__init__(median, iqr, rng)
        self.inv_n = 1.0 / n
        self._random = rng.random if rng is not None else None

    def __call__(self) -> float:
        if self.sigma == 0.0:
            return self.median
        u = self._random()
        while u == 0.0:  # log(0); probability 2^-53
            u = self._random()
        tail = -math.expm1(math.log(u) * self.inv_n)  # 1 − U^{1/n}
        return self.median * math.exp(-self.sigma * _NORMAL.inv_cdf(tail))


def _stream(seed: int, name: str) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED
    return random.Random(f"hetsam.simulator:{seed}:{name}")


class Workload:
    """A plan on a cost model, as resources and a generator of per-iteration tasks.

    ``on_step(t, task)`` is called when step t's last task (its update) completes; the caller
    records the iteration and may stop the engine. Iterations are built lazily, τ+1 ahead of
    the last completed step, so memory stays bounded however many iterations run.
    """

    def __init__(self, plan: Plan, cm: CostModel, engine: Engine, *, jitter: bool, seed: int,
                 loader_seconds: float = 0.0, on_step=None, cluster=None):
        if not isinstance(loader_seconds, (int, float)) or not math.isfinite(loader_seconds) or loader_seconds < 0:
            raise HetsamInputError(f"loader_seconds={loader_seconds!r} must be a number >= 0")
        self.plan = plan
        self.cm = cm
        self.engine = engine
        self.on_step = on_step
        self.strategy = plan.strategy
        self.b = plan.batch_size if plan.batch_size is not None else cm.profile.batch_size
        self.descent = _resolve(cm, plan.descent_device, "descent_device")
        self.ascent = _resolve(cm, plan.effective_ascent_device, "ascent_device")
        s = self.strategy
        self.uses_ascent = s != "sgd"
        self.b_ascent = plan.ascent_size(self.b) if s == "async_sam" else self.b
        self.tau = plan.staleness if s == "async_sam" else 0
        self.probability = plan.probability if s == "rst" else (1.0 if s == "sam" else 0.0)
        self.loader = float(loader_seconds)
        self.update = cm.update_seconds(self.descent)
        rng = (lambda name: _stream(seed, name)) if jitter else (lambda name: None)
        # data parallel over n > 1 ranks (module docstring): one representative rank + the network
        self.cluster = cluster if cluster is not None and cluster.ranks > 1 else None
        ranks = self.cluster.ranks if self.cluster is not None else 1
        self.pairs = self.cluster is not None and s == "sampa"

        def draw(dev: str, batch: int, name: str) -> Draw:
            med, iqr, stream = cm.grad_seconds(dev, batch), cm.grad_spread(dev, batch), rng(name)
            return MaxDraw(med, iqr, stream, ranks) if ranks > 1 else Draw(med, iqr, stream)

        self.t_descent = draw(self.descent, self.b, "descent")
        self.t_ascent = None
        self.coin = _stream(seed, "rst").random
        self.notes: list[str] = []
        for dev, batch in ((self.descent, self.b), (self.ascent, self.b_ascent)):
            limit = cm.max_batch(dev)
            if limit is not None and batch > limit and (dev == self.descent or self.uses_ascent):
                self.notes.append(f"batch {batch} on {dev} exceeds the largest batch that fit when profiling ({limit})")

        self.res_descent = engine.resource(self.descent)
        self.res_ascent = self.res_descent
        self.link_to_ascent: Resource | None = None
        self.link_to_descent: Resource | None = None
        self.copy_to_ascent = self.copy_to_descent = 0.0
        self.shared = False
        if self.uses_ascent:
            self.t_ascent = draw(self.ascent, self.b_ascent, "ascent")
            self.shared = cm.shares_cores(self.descent, self.ascent)
            if not self.shared:
                self.res_ascent = engine.resource(self.ascent)
                engine.contend(self.res_descent, self.res_ascent,
                               cm.slowdown(self.descent, self.ascent), cm.slowdown(self.ascent, self.descent))
        if self.uses_ascent and not self.pairs:  # SAMPa pairs exchange through the all-reduce
            nbytes = cm.parameter_bytes
            self.copy_to_ascent = cm.copy_seconds(self.descent, self.ascent, nbytes)
            self.copy_to_descent = cm.copy_seconds(self.ascent, self.descent, nbytes)
            if self.copy_to_ascent > 0:
                self.link_to_ascent = engine.resource(f"{self.descent}→{self.ascent}", "link", compute=False)
            if self.copy_to_descent > 0:
                self.link_to_descent = engine.resource(f"{self.ascent}→{self.descent}", "link", compute=False)
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
            if self.pairs and cm.kind(self.ascent) != "gpu":
                self.notes.append(f"SAMPa pair: {self.ascent} is a rank of the all-reduce; NCCL needs GPUs, so a CPU rank "
                                  "means a gloo or mixed backend, priced here at the same ring link")

        self._steps: dict[int, Task] = {}  # step tasks still referenced by later iterations
        self._ascent_updates: dict[int, Task] = {}  # SAMPa pairs: A's update of each step
        self._built = 0
        self._build_iteration = {
            "sgd": self._build_sgd, "sam": self._build_sam, "rst": self._build_rst,
            "async_sam": self._build_async, "sampa": self._build_sampa_pairs if self.pairs else self._build_sampa,
        }[s]  # the one dispatch point between strategies

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
        self._ascent_updates.pop(t - 2, None)

    def _done(self, task: Task) -> None:
        self._next()  # keeps τ+1 iterations ahead of the last completed step
        if self.on_step is not None:
            self.on_step(task.iteration, task)

    def _load(self, t: int, prev: Task | None) -> Task | None:
        """The data loader's share of step t on the descent side (None when L = 0)."""
        if self.loader <= 0.0:
            return None
        return self.engine.add("load", "loader", self.res_descent, self.loader, t, (prev,), order=4 * t)

    def descent_step(self, t: int, deps, chain: Task | None) -> Task:
        """Gradient plus update of step t on D; the task whose end is ``U_t``.

        ``deps``: what the step needs (the previous step or its load, and the ascent gradient);
        ``chain``: the task it would follow if the ascent were free (for the wait). With n > 1
        ranks it is DDP's bucketed backward and all-reduce (:meth:`_ddp_descent_step`).
        """
        if self.cluster is not None:
            return self._ddp_descent_step(t, deps, chain)
        e = self.engine
        work = self.t_descent() + self.update
        task = e.add("descent", "descent", self.res_descent, work, t, deps, order=4 * t + 2, on_done=self._done,
                     chain=chain or _ORIGIN, tail=self.update)
        self._steps[t] = task
        return task

    def _backward_buckets(self, t: int, res: Resource, work: float, deps, chain, name: str) -> list[Task]:
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
                                        order=4 * t + 2, chain=(chain or _ORIGIN) if k == 0 else None))
        return segs

    def _allreduces(self, t: int, *producers: list[Task]) -> Task:
        """One ring all-reduce per bucket, each after its bucket (on every producer) and the
        previous all-reduce; returns the last."""
        prev = None
        n = len(self.bucket_seconds)
        for k, seconds in enumerate(self.bucket_seconds):
            deps = tuple(p[k] for p in producers) + (prev,)
            prev = self.engine.add(f"all-reduce {k + 1}/{n}", "allreduce", self.res_network, seconds, t, deps,
                                   order=4 * t + 2)
        return prev

    def _expose(self, seconds: float) -> None:
        self.exposed[0] += max(0.0, seconds)
        self.exposed[1] += 1

    def _ddp_descent_step(self, t: int, deps, chain: Task | None) -> Task:
        """Descent of step t as one rank of a DDP job: buckets, their all-reduces, the update."""
        segs = self._backward_buckets(t, self.res_descent, self.t_descent(), deps, chain, "descent")
        last = self._allreduces(t, segs)
        first, end = segs[0], segs[-1]

        def done(task: Task) -> None:
            task.wait = first.wait  # the descent's wait for ĝ, as in the single-node model
            self._expose(last.end - end.end)
            self._done(task)

        task = self.engine.add("update", "update", self.res_descent, self.update, t, (end, last), order=4 * t + 3,
                               on_done=done)
        self._steps[t] = task
        return task

    def _ascent_chain(self, t: int, theta: int, after: Task | None, name: str = "ascent") -> Task:
        """copy θ → ascent gradient on A → copy ĝ back, for step t from θ_theta; returns the
        last task. Program order: right after load_theta, before descent_theta."""
        e = self.engine
        dep, order = after, 4 * theta + 1
        if self.link_to_ascent is not None:
            dep = e.add("copy θ", "copy", self.link_to_ascent, self.copy_to_ascent, t, (dep,), order=order)
        dep = e.add(name, "ascent", self.res_ascent, self.t_ascent(), t, (dep,), order=order)
        if self.link_to_descent is not None:
            dep = e.add("copy ĝ", "copy", self.link_to_descent, self.copy_to_descent, t, (dep,), order=order)
        return dep

    def _build_sgd(self, t: int) -> None:
        prev = self._steps.get(t - 1)
        chain = self._load(t, prev) or prev
        self.descent_step(t, (chain,), chain)

    def _build_sam(self, t: int) -> None:
        prev = self._steps.get(t - 1)
        chain = self._load(t, prev) or prev
        grad = self._ascent_chain(t, t, prev)
        self.descent_step(t, (chain, grad), chain)

    def _build_rst(self, t: int) -> None:
        if self.coin() < self.probability:
            self._build_sam(t)
        else:
            self._build_sgd(t)

    def _build_async(self, t: int) -> None:
        prev = self._steps.get(t - 1)
        chain = self._load(t, prev) or prev
        if t < self.tau:  # no perturbation yet
            self.descent_step(t, (chain,), chain)
            return
        # θ_{t−τ} is ready when step t−τ−1's update is done (θ_0 at time 0)
        grad = self._ascent_chain(t, t - self.tau, self._steps.get(t - self.tau - 1))
        self.descent_step(t, (chain, grad), chain)

    def _build_sampa(self, t: int) -> None:
        e = self.engine
        prev = self._steps.get(t - 1)
        chain = self._load(t, prev) or prev
        gy = self._ascent_chain(t, t, prev, name="g_y'")
        gx = e.add("g_x", "descent", self.res_descent, self.t_descent(), t, (chain,), order=4 * t + 2)
        task = e.add("combine + update", "update", self.res_descent, self.update, t, (gx, gy), order=4 * t + 3,
                     on_done=self._done, chain=gx)
        self._steps[t] = task


    def _build_sampa_pairs(self, t: int) -> None:
        """SAMPa across a pair of ranks (module docstring): g_x on D and g_y' on A at b, one
        all-reduce over the 2n ranks, then both update."""
        e = self.engine
        prev = self._steps.get(t - 1)
        chain = self._load(t, prev) or prev
        gx = self._backward_buckets(t, self.res_descent, self.t_descent(), (chain,), chain, "g_x")
        gy = self._backward_buckets(t, self.res_ascent, self.t_ascent(), (self._ascent_updates.get(t - 1),), None, "g_y'")
        for seg in gy:
            seg.category = "ascent"
        last = self._allreduces(t, gx, gy)
        ax, dx = gy[-1], gx[-1]

        def done(task: Task) -> None:
            task.wait = max(0.0, ax.end - dx.end)  # D's backward ended before A's
            self._expose(last.end - max(ax.end, dx.end))
            self._done(task)

        self._ascent_updates[t] = e.add("update", "update", self.res_ascent, self.update_ascent, t, (ax, last),
                                        order=4 * t + 3)
        self._steps[t] = e.add("combine + update", "update", self.res_descent, self.update, t, (dx, last),
                               order=4 * t + 3, on_done=done)


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


_ORIGIN = _Origin()
