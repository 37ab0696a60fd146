"""What ``hetsam bench`` measures: the arrangements (a label, a plan, executor options)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hetsam.hardware.names import format_cpulist
from hetsam.planning.plan import Plan
from hetsam.strategies import ASYNC_SAM, RST, SAM, SAMPA, SGD

__all__ = ["Arrangement", "default_arrangements", "fitted_pool_arrangement", "socket0_halves",
           "POOLS", "SLICED"]

POOLS, SLICED = f"{ASYNC_SAM} pools", f"{ASYNC_SAM} time-sliced"  # labels the report compares


@dataclass
class Arrangement:
    """One thing to measure: a label, the plan AutoSAM runs, and options of its executor."""

    label: str
    plan: Plan
    executor_options: dict = field(default_factory=dict)


def socket0_halves() -> tuple[str, str] | None:
    """Two disjoint pools of socket 0: its first and its second half of usable cores."""
    from hetsam.hardware.detect import detect_cpus

    sockets = [d for d in detect_cpus() if d.id == "cpu:0" and d.cpus]
    if not sockets:
        return None
    n = sockets[0].cores if isinstance(sockets[0].cores, int) else len(sockets[0].cpus)
    n = min(n, len(sockets[0].cpus))
    if n < 2:
        return None
    half = n // 2
    return f"cpu:0[{format_cpulist(range(half))}]", f"cpu:0[{format_cpulist(range(half, n))}]"


def default_arrangements(batch_size: int, *, pools: tuple[str, str] | None | bool = True) -> list[Arrangement]:
    """The strategies ``hetsam bench`` compares (module docstring); ``pools=None`` leaves out
    the two-pool ones (a one-core machine), ``True`` finds socket 0's halves."""
    b, ascent_batch_size = batch_size, max(1, batch_size // 4)
    if pools is True:
        pools = socket0_halves()
    out = [
        Arrangement(SGD, Plan(SGD, descent_device="cpu", batch_size=b)),
        Arrangement(SAM, Plan(SAM, descent_device="cpu", batch_size=b)),
    ]
    if pools:
        d, a = pools
        out.append(Arrangement(POOLS, Plan(ASYNC_SAM, descent_device=d, ascent_device=a, batch_size=b,
                                           options={"ascent_batch_size": ascent_batch_size, "staleness": 1})))
    out.append(Arrangement(SLICED, Plan(ASYNC_SAM, descent_device="cpu", ascent_device="cpu", batch_size=b,
                                        options={"ascent_batch_size": ascent_batch_size, "staleness": 1}),
                           {"share": "time-slice"}))
    if pools:
        d, a = pools
        out.append(Arrangement(f"{SAMPA} pools", Plan(SAMPA, descent_device=d, ascent_device=a, batch_size=b)))
    out.append(Arrangement(RST, Plan(RST, descent_device="cpu", batch_size=b, options={"sam_probability": 0.5})))
    return out


def fitted_pool_arrangement(profile, batch_size: int) -> Arrangement | None:
    """AsyncSAM on socket 0's two halves with the planner's b' for that pair (the largest whose
    ascent fits in a descent step), or None without two pools or such a candidate."""
    from hetsam.planning.search import plan

    pools = socket0_halves()
    if not pools:
        return None
    report = plan(profile, batch_size=batch_size, strategies=(ASYNC_SAM,), descent_kind="cpu", simulate=False)
    for c in report.candidates:
        p = c.plan
        if p.strategy == ASYNC_SAM and (p.descent_device, p.ascent_device) == pools:
            p = dataclasses.replace(p, options={**p.options, "ascent_batches": "lookahead"})
            return Arrangement(f"{POOLS} b'={p.spec.ascent_batch_size(p, batch_size)}", p)
    return None
