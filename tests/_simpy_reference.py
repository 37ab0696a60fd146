"""An independent SimPy model of AsyncSAM, to cross-check the engine and to benchmark it.

It is written the idiomatic SimPy way (a process per ascent job, ``PriorityResource`` for the
devices and links, events for "θ_k is ready" and "ĝ_t has arrived") and shares no code with
``engine.py``/``model.py``. It covers AsyncSAM without contention and without jitter, which
is enough to compare schedules exactly. Not part of the public API.
"""

from __future__ import annotations

__all__ = ["async_sam_update_ends"]


def async_sam_update_ends(t_descent: float, update: float, t_ascent: float, copy_to_ascent: float,
                          copy_to_descent: float, staleness: int, iterations: int, *, shared: bool = False):
    """End times ``U_t`` of every step's update, and the number of SimPy events scheduled.

    Step t waits for ĝ_t, computed on A from θ_{t−τ} (ready when step t−τ−1's update ends),
    copied D→A before and A→D after. ``shared``: D and A are one device, run the way the
    inline executor does: at step t, first the ascent for step t+τ from θ_t, then step t
    (no copies on one device).
    """
    import simpy

    env = simpy.Environment()
    if shared:
        return _inline(env, t_descent + update, t_ascent, staleness, iterations)
    dev_d = simpy.PriorityResource(env, capacity=1)
    dev_a = dev_d if shared else simpy.PriorityResource(env, capacity=1)
    link_da = simpy.PriorityResource(env, capacity=1)
    link_ad = simpy.PriorityResource(env, capacity=1)
    theta = [env.event() for _ in range(iterations + 1)]  # theta[k]: θ_k exists
    ghat = {t: env.event() for t in range(staleness, iterations)}
    ends: list[float] = []

    def use(resource, priority, seconds):
        with resource.request(priority=priority) as req:
            yield req
            yield env.timeout(seconds)

    def ascent(t):
        src = t - staleness
        yield theta[src]
        prio = 4 * src + 1  # program order: after load_src, before descent_src
        if copy_to_ascent > 0:
            yield env.process(use(link_da, prio, copy_to_ascent))
        yield env.process(use(dev_a, prio, t_ascent))
        if copy_to_descent > 0:
            yield env.process(use(link_ad, prio, copy_to_descent))
        ghat[t].succeed()

    def descent():
        for t in range(iterations):
            if t >= staleness:
                yield ghat[t]
            yield env.process(use(dev_d, 4 * t + 2, t_descent + update))
            ends.append(env.now)
            theta[t + 1].succeed()

    for t in range(staleness, iterations):
        env.process(ascent(t))
    env.process(descent())
    theta[0].succeed()
    env.run()
    return ends, next(env._eid)  # SimPy's own event counter (events scheduled)


def _inline(env, t_step, t_ascent, staleness, iterations):
    ends: list[float] = []

    def program():
        for _ in range(iterations):
            yield env.timeout(t_ascent)  # ĝ_{t+τ} = g(θ_t; ·)
            yield env.timeout(t_step)  # step t with ĝ_t (computed τ steps ago)
            ends.append(env.now)

    env.process(program())
    env.run()
    return ends, next(env._eid)
