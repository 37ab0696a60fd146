"""AsyncSAM(τ, b'): the ascent gradient τ steps stale, on b' samples, on the ascent device.

The update rule (``rule.py``; README, "AsyncSAM"): step t is perturbed by ĝ = g(θ_{t−τ}; B'_t)
(``lookahead``) or g(θ_{t−τ}; B'_{t−τ}) (``independent``), e_t = ρ ĝ/‖ĝ‖ and
θ_{t+1} = base(θ_t, g(θ_t + e_t; B_t)); steps t < τ are not perturbed.

Closed form (the planner's; ``s_D``, ``s_A`` the contention slowdowns of the two devices):

- time-sliced (D and A share cores): ``(t_D + u + c + h) + t_A(b')``, nothing hidden (h the
  time-sliced job's cost beyond its pass, ``CostModel.handoff_seconds``); b' is the largest that
  keeps the step within the budget (at least the floor);
- otherwise the window is one descent step ``W = t_D·s_D + u + h`` (h the threaded executor's
  hand-off, ``CostModel.handoff_seconds``); with τ = 1 the chain
  ``c_DA + r + t_A(b')·s_A + c_AD`` must fit in it (r the executor's round trip beyond h,
  ``CostModel.job_latency_seconds``), with τ >= 2 only its slowest stage (the copies
  overlap other steps); b' is the largest that fits, found by bisection on the monotone
  ``t_A``; the step is ``max(W, chain)``.

Simulated iteration: ``copy θ_{t−τ}`` (D→A) after ``U_{t−τ−1}``, the hand-over (r), then ``ascent_t`` (t_A on A),
then ``copy ĝ_t`` (A→D); step t starts after both ``load_t`` and that copy, and the descent waits
for the idle time of D in between. The policies differ in samples, not in timing. Without jitter
and with τ = 1 the period is ``max(L + t_D + u, t_A, c_DA, r, c_AD, (c_DA + r + t_A + c_AD + L + t_D + u)/2)``.
"""

from __future__ import annotations

from hetsam import defaults
from hetsam.cost.closed_form import largest_fitting
from hetsam.errors import HetsamInputError
from hetsam.strategies.registry import ASYNC_SAM
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "AsyncSAMSpec", "POLICIES"]

POLICIES = ("lookahead", "independent")  # the batch policies (module docstring)


class AsyncSAMSpec(StrategySpec):
    name = ASYNC_SAM
    title = "AsyncSAM"
    summary = "the ascent gradient one step stale on b' samples, on a spare device"
    fields = ("ascent_device",)
    options = (
        Option("ascent_batch_size", int, None, 1, defaults.BATCH_LIMIT,
               "b': the ascent uses the first b' samples of a batch (None: b' = b)", optional=True),
        Option("staleness", int, 1, 0, defaults.STALENESS_LIMIT, "τ: the ascent gradient is τ steps old"),
        Option("ascent_batches", str, defaults.ASCENT_BATCHES,
               help="lookahead: g(θ_{t−τ}; B'_t); independent (the paper's): g(θ_{t−τ}; B'_{t−τ})", choices=POLICIES),
    )
    uses_executor = True
    rule = "hetsam.strategies.async_sam.rule:AsyncSAMRule"
    evidence_axis = "ascent_fraction"
    guarded = True  # a stale perturbation on fewer samples

    def check(self, plan) -> None:
        size = plan.options["ascent_batch_size"]
        if size is not None and plan.batch_size is not None and size > plan.batch_size:
            raise HetsamInputError(f"Plan.options['ascent_batch_size']={size} exceeds batch_size={plan.batch_size}; "
                                   "the ascent uses the first b' samples of a batch, so b' <= b")

    def evidence_settings(self, plan, batch_size: int) -> dict:
        return {"ascent_fraction": self.ascent_batch_size(plan, batch_size) / batch_size,
                "staleness": self.staleness(plan), "ascent_batches": plan.options["ascent_batches"]}

    def evidence_point(self, settings, base_optimizer=None):
        # one curve per batch policy; the records' staleness is reported, not a curve of its own
        fraction = setting(settings, "ascent_fraction", 0.0, 1.0)
        policy = settings.get("ascent_batches", "independent")
        if fraction is None or policy not in POLICIES:
            return None
        return ((policy,), fraction)

    def staleness(self, plan) -> int:
        return plan.options["staleness"]

    def ascent_batch_size(self, plan, batch_size: int) -> int:
        size = plan.options["ascent_batch_size"]
        return batch_size if size is None else min(size, batch_size)

    def settings(self, plan, batch_size: int) -> str:
        size = plan.options["ascent_batch_size"]
        return f"b'={'b' if size is None else size} tau={self.staleness(plan)} {plan.options['ascent_batches']}"

    def label(self, plan, batch_size: int) -> str:
        where = plan.effective_ascent_device
        sliced = " (sliced)" if where == plan.descent_device else ""
        return (f"{self.title} b'={self.ascent_batch_size(plan, batch_size)} τ={self.staleness(plan)}\n"
                f"{plan.descent_device} + {where}{sliced}")

    # ---- the planner ----------------------------------------------------------------------------
    def closed_form_seconds(self, ctx, plan) -> float:
        descent, ascent = plan.descent_device, plan.effective_ascent_device
        size = self.ascent_batch_size(plan, ctx.batch_size)
        if ctx.cm.shares_cores(descent, ascent):
            return self._sliced_base(ctx, descent, ascent) + ctx.cm.grad_seconds(ascent, size)
        window, chain = self._window(ctx, descent, ascent, self.staleness(plan))
        return max(window(size), chain(size))

    @staticmethod
    def _sliced_base(ctx, descent, ascent) -> float:
        """A time-sliced step without its ascent pass: ``t_D + u + c + h`` (h the job's cost beyond its pass)."""
        return ctx.descent_step(descent, ctx.cm.grad_seconds(descent, ctx.batch_size), perturbed=True) + \
            ctx.cm.handoff_seconds(descent, ascent)

    def _window(self, ctx, descent, ascent, tau):
        """D's step and the ascent's chain, each a function of b' (the job's batch sets the slowdowns)."""
        cm, nbytes = ctx.cm, ctx.cm.parameter_bytes
        pass_d = cm.grad_seconds(descent, ctx.batch_size)
        h = cm.handoff_seconds(descent, ascent)  # the threaded executor's hand-off h, on D's step
        to_a, to_d = cm.copy_seconds(descent, ascent, nbytes), cm.copy_seconds(ascent, descent, nbytes)
        lat = cm.job_latency_seconds(descent, ascent)  # the executor's round trip beyond h, on the job's path

        def window(ascent_batch_size: int) -> float:
            return ctx.descent_step(descent, pass_d * cm.slowdown(descent, ascent, ascent_batch_size), perturbed=True) + h

        def chain(ascent_batch_size: int) -> float:
            compute = cm.grad_seconds(ascent, ascent_batch_size) * cm.slowdown(ascent, descent, ascent_batch_size)
            return to_a + lat + compute + to_d if tau == 1 else max(to_a, lat, compute, to_d)

        return window, chain

    def candidates(self, ctx):
        for descent, ascent in ctx.pairs:
            for tau in range(1, ctx.max_staleness + 1):
                yield self._candidate(ctx, descent, ascent, tau)

    def _candidate(self, ctx, descent, ascent, tau) -> Proposal:
        cm, b, floor = ctx.cm, ctx.batch_size, ctx.floor

        def plan(ascent_batch_size):
            return ctx.plan(self.name, descent_device=descent, ascent_device=ascent,
                            options={"ascent_batch_size": ascent_batch_size, "staleness": tau,
                                     "ascent_batches": ctx.ascent_batches})

        if cm.shares_cores(descent, ascent):
            # time-sliced: nothing is hidden; the largest b' that keeps the step within the budget
            base = self._sliced_base(ctx, descent, ascent)
            size = largest_fitting(lambda x: base + cm.grad_seconds(ascent, x) <= ctx.budget_seconds, floor, b) or floor
            return Proposal(plan(size), base + cm.grad_seconds(ascent, size), "time-sliced on one pool")
        window, chain = self._window(ctx, descent, ascent, tau)
        size = largest_fitting(lambda x: chain(x) <= window(x), floor, b)
        note = "ascent hidden behind the descent"
        if size is None:
            size, note = floor, "ascent at the floor does not fit; the descent waits"
        return Proposal(plan(size), max(window(size), chain(size)), note)

    # ---- the simulator --------------------------------------------------------------------------
    def simulation(self, w):
        tau = w.tau

        def build(t: int) -> None:
            prev, chain = w.start_of(t)
            if t < tau:  # no perturbation yet
                w.descent_step(t, (chain,), chain)
                return
            # θ_{t−τ} is ready when step t−τ−1's update is done (θ_0 at time 0)
            grad = w.ascent_chain(t, t - tau, w.step(t - tau - 1))
            w.descent_step(t, (chain, grad), chain, perturbed=True)

        return build


SPEC = AsyncSAMSpec()
