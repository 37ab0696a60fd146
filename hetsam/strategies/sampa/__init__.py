"""SAMPa-λ (Xie et al., NeurIPS 2024): both gradients of a step in parallel on two devices.

The update rule (``rule.py``; README, "SAMPa"): g_x at x̃_t = x_t + ρ g_y/‖g_y‖ on the previous
batch, and in parallel g_y' at the optimistic point y_{t+1}; x_{t+1} = base(x_t, (1−λ) g_x + λ g_y').
Its perturbation comes from the previous step's auxiliary gradient, so its fidelity counts one
step of staleness. Under DDP the two gradients run on a pair of ranks (``pairs.py``).

Closed form: ``max(t_D(b)·s_D, c_DA + r + t_A(b)·s_A + c_AD) + u + c + h + a`` (x̃/y sent to A, g_y'
back; r the executor's round trip beyond h (``CostModel.job_latency_seconds``); c the climb, h the
threaded executor's hand-off, a the auxiliary work on D: save x, move to y,
restore, ‖g_y'‖, mix, measured by the profiler; before the submit and after the wait, so it
delays both passes alike); at
scale a pair of ranks, both gradients combined by one all-reduce over 2n ranks, no copies.

Simulated iteration: ``g_x`` at b on D after ``load_t``; the chain ``copy y → hand-over (r) → g_y'
on A → copy back`` after ``U_{t−1}``; then the combine and the base update (u) on D. The descent waits
between ``g_x`` and ``g_y'``. Rank pairs: both gradients as DDP buckets on D and A, one
all-reduce per bucket over both, then both update.
"""

from __future__ import annotations

from hetsam import defaults
from hetsam.strategies.registry import SAMPA
from hetsam.strategies.spec import Option, Proposal, StrategySpec, setting

__all__ = ["SPEC", "SAMPaSpec"]


class SAMPaSpec(StrategySpec):
    name = SAMPA
    title = "SAMPa"
    summary = "SAM's two gradients in parallel on two comparable devices"
    fields = ("ascent_device",)
    options = (Option("sampa_lambda", float, defaults.SAMPA_LAMBDA, 0.0, 1.0, "λ: the update is (1−λ) g_x + λ g_y'"),)
    uses_executor = True
    rank_pairs = True
    jobs_enter_update = True
    closure_descent = False  # g_x is taken on the previous batch
    rule = "hetsam.strategies.sampa.rule:SAMPaRule"
    evidence_axis = "levels"

    def evidence_settings(self, plan, batch_size: int) -> dict:
        return {"lambda": plan.options["sampa_lambda"]}

    def evidence_point(self, settings, base_optimizer=None):
        lam = setting(settings, "lambda", 0.0, 1.0)
        return None if lam is None else ((), lam)

    def fidelity(self, plan, batch_size: int) -> tuple[float, int, float]:
        return (1.0, -1, 1.0)  # the perturbation is the previous step's auxiliary gradient

    def settings(self, plan, batch_size: int) -> str:
        return f"lambda={plan.options['sampa_lambda']:g}"

    def label(self, plan, batch_size: int) -> str:
        return f"{self.title}-{plan.options['sampa_lambda']:g}\n{plan.descent_device} + {plan.effective_ascent_device}"

    def build_rule(self, ctx):
        """Across a pair of ranks under DDP rank pairs (``pairs.py``), else both gradients in this
        process, g_y' on the executor."""
        if ctx.dist is not None and ctx.dist.pairs:
            from hetsam.strategies.sampa.pairs import SAMPaPairRule

            return SAMPaPairRule(ctx)
        return self.rule_class()(ctx)

    # ---- the planner ----------------------------------------------------------------------------
    def closed_form_seconds(self, ctx, plan) -> float:
        cm, b, descent, ascent = ctx.cm, ctx.batch_size, plan.descent_device, plan.effective_ascent_device
        nbytes = cm.parameter_bytes
        s_d, s_a = cm.slowdown(descent, ascent, b), cm.slowdown(ascent, descent, b)  # g_y' at b
        if ctx.scale is not None:  # a pair of ranks: both passes, then one all-reduce of [g_x | g_y'] (2P)
            both = max(cm.grad_seconds(descent, b) * s_d, cm.grad_seconds(ascent, b) * s_a)
            return both + ctx.scale.allreduce_seconds(descent, 2 * nbytes, 2 * ctx.scale.ranks) + \
                cm.step_seconds(descent, perturbed=True)
        other = cm.copy_seconds(descent, ascent, nbytes) + cm.job_latency_seconds(descent, ascent) + \
            cm.grad_seconds(ascent, b) * s_a + cm.copy_seconds(ascent, descent, nbytes)
        return max(cm.grad_seconds(descent, b) * s_d, other) + cm.step_seconds(descent, perturbed=True) + \
            cm.handoff_seconds(descent, ascent) + cm.auxiliary_seconds(descent)  # hand-off h, auxiliary work a

    def candidates(self, ctx):
        note = "a pair of ranks" if ctx.scale is not None else "two gradients in parallel"
        for descent, ascent in ctx.pairs:
            if not ctx.cm.shares_cores(descent, ascent):
                p = ctx.plan(self.name, descent_device=descent, ascent_device=ascent)
                yield Proposal(p, self.closed_form_seconds(ctx, p), note)

    # ---- the simulator --------------------------------------------------------------------------
    def simulation(self, w):
        return _pairs(w) if w.pairs else _parallel(w)


def _parallel(w):
    aux = w.cm.auxiliary_seconds(w.descent)

    def build(t: int) -> None:
        e = w.engine
        prev, chain = w.start_of(t)
        gy = w.ascent_chain(t, t, prev, name="g_y'")
        gx = e.add("g_x", "descent", w.res_descent, w.t_descent(), t, (chain,), order=4 * t + 2)
        # the auxiliary work (a) before the submit and after the wait delays both passes alike: on D, once
        w.set_step(t, e.add("combine + update", "update", w.res_descent, w.fixed(True) + aux, t, (gx, gy), order=4 * t + 3,
                            on_done=w.done, chain=gx))

    return build


def _pairs(w):
    # the pair rule all-reduces [g_x | g_y'] (2P numbers) once, after both passes (pairs.py)
    seconds = w.cluster.allreduce_seconds(w.descent, 2 * w.cm.parameter_bytes, w.allreduce_ranks)

    def build(t: int) -> None:
        """g_x on D and g_y' on A at b, one all-reduce of both over the 2n ranks, then both update."""
        e = w.engine
        _, chain = w.start_of(t)
        dx = e.add("g_x", "descent", w.res_descent, w.t_descent(), t, (chain,), order=4 * t + 2)
        ax = e.add("g_y'", "ascent", w.res_ascent, w.t_ascent(), t, (w.ascent_updates.get(t - 1),), order=4 * t + 2)
        last = e.add("all-reduce [g_x | g_y']", "allreduce", w.res_network, seconds, t, (dx, ax), order=4 * t + 2)

        def done(task) -> None:
            task.wait = max(0.0, ax.end - dx.end)  # D's pass ended before A's
            w.expose(last.end - max(ax.end, dx.end))
            w.done(task)

        w.ascent_updates[t] = e.add("update", "update", w.res_ascent, w.update_ascent, t, (last,), order=4 * t + 3)
        w.set_step(t, e.add("combine + update", "update", w.res_descent, w.fixed(True), t, (last,), order=4 * t + 3,
                            on_done=done))

    return build


SPEC = SAMPaSpec()
