"""The cost model: a Profile turned into functions of device and batch size. No torch.

- ``grad_seconds(device, b)``: one forward+backward at batch ``b``. Measured medians are first
  made monotone in ``b`` (pool-adjacent-violators, i.e. isotonic regression), then interpolated
  piecewise-linearly. Beyond the largest measured batch the last segment's per-sample slope
  continues; below the smallest, the first segment continues but never drops under the
  proportional bound ``t(b0)·b/b0``.
- ``grad_spread(device, b)``: the interquartile spread, as the interpolated relative spread
  times ``grad_seconds``.
- ``copy_seconds(src, dst, nbytes) = latency + nbytes / bandwidth`` of the link between the two
  devices' hardware (a pool uses its socket's links); zero on the very same device.
- ``slowdown(device, other, job_batch)``: how much slower ``device`` computes while ``other``
  computes too, with the ascent job at ``job_batch`` (``hetsam/profiling/pairs.py``).
- ``step_seconds(device, perturbed)``: the fixed costs of one step on the descent device, beside
  its gradient passes (``fixed_seconds``): as timed in AutoSAM's own SGD and SAM steps when the
  profile has them (``hetsam/autosam/step_costs.py``), else the update ``u`` and, for a perturbed
  step, the climb ``c`` (back up θ, θ + e, restore), both measured through the descent runtime;
  plus ``loop_seconds`` ``ℓ``, the training loop's own per-step work (0 unless AutoSAM calibrated
  it on the user's steps, :mod:`hetsam.autosam.controller`). ``step_terms(device)`` reports them.

A CPU pool the profile did not measure (``cpu:0[0-3]`` when only ``cpu:0`` was profiled) is
derived from the socket's measurements with Amdahl's law, ``t(k) = t(1)·((1−f) + f/k)``: ``f``
is fitted per batch size from two measured core counts, or taken as ``DEFAULT_PARALLEL_FRACTION``
when only one was measured (the result says so in ``derivations``).
"""

from __future__ import annotations

import bisect

from hetsam import _checks
from hetsam.errors import HetsamInputError
from hetsam.hardware.kinds import kind_of
from hetsam.hardware.names import parse_device
from hetsam.profiling.pairs import at_job_batch
from hetsam.profiling.schema import DeviceProfile, GradTable, Profile, load_profile

__all__ = ["CostModel", "DEFAULT_PARALLEL_FRACTION", "isotonic"]

DEFAULT_PARALLEL_FRACTION = 0.9


def isotonic(values) -> list[float]:
    """Least-squares non-decreasing fit (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for mean, weight in blocks:
        out.extend([mean] * int(weight))
    return out


class _Curve:
    """Monotone piecewise-linear t(b) with the extrapolation rules of the module docstring."""

    def __init__(self, table: GradTable):
        self.b = [float(x) for x in table.batch_sizes]
        self.t = isotonic(table.median)
        self.rel = [s / m for s, m in zip(table.spread, table.median)]

    def __call__(self, batch: float) -> float:
        b, t = self.b, self.t
        if len(b) == 1:
            return t[0] * batch / b[0]
        if batch >= b[-1]:
            slope = (t[-1] - t[-2]) / (b[-1] - b[-2])
            if slope <= 0:  # flat tail: fall back to the average per-sample cost
                slope = t[-1] / b[-1]
            return t[-1] + (batch - b[-1]) * slope
        if batch <= b[0]:
            slope = (t[1] - t[0]) / (b[1] - b[0])
            return max(t[0] * batch / b[0], t[0] + (batch - b[0]) * slope)
        i = bisect.bisect_right(b, batch) - 1
        frac = (batch - b[i]) / (b[i + 1] - b[i])
        return t[i] + frac * (t[i + 1] - t[i])

    def relative_spread(self, batch: float) -> float:
        b, rel = self.b, self.rel
        if batch <= b[0]:
            return rel[0]
        if batch >= b[-1]:
            return rel[-1]
        i = bisect.bisect_right(b, batch) - 1
        frac = (batch - b[i]) / (b[i + 1] - b[i])
        return rel[i] + frac * (rel[i + 1] - rel[i])


class CostModel:
    """Costs of one model on one machine, from a :class:`~hetsam.profiling.schema.Profile`."""

    def __init__(self, profile, *, loop_seconds: float = 0.0):
        _checks.number(loop_seconds, "loop_seconds", low=0.0, high=1e5)
        self.loop_seconds = float(loop_seconds)
        self.profile: Profile = load_profile(profile)
        self._curves: dict[str, _Curve] = {}
        self._derived: dict[str, DeviceProfile] = {}
        self.derivations: dict[str, str] = {}
        self._links = {(link.src, link.dst): link for link in self.profile.links}
        self._contention: dict[tuple[str, str], tuple[float, tuple[tuple[int, float], ...]]] = {}
        self._handoff: dict[tuple[str, str], float] = {}
        self._latency: dict[tuple[str, str], float] = {}
        for c in self.profile.contention:
            (a, b), (sa, sb) = c.devices, c.slowdown
            self._contention[(a, b)] = (sa, tuple((m, x[0]) for m, x in c.by_job_batch))
            self._contention[(b, a)] = (sb, tuple((m, x[1]) for m, x in c.by_job_batch))
            if c.handoff_seconds is not None:  # measured with a as the descent, b as the worker's pool
                self._handoff[(a, b)] = self._handoff[(b, a)] = c.handoff_seconds
            if c.round_trip_seconds is not None:  # the part of the round trip the hand-off does not charge
                self._latency[(a, b)] = self._latency[(b, a)] = max(0.0, c.round_trip_seconds - (c.handoff_seconds or 0.0))

    # ---- naming ------------------------------------------------------------------------
    @property
    def parameter_bytes(self) -> int:
        return self.profile.model.parameter_bytes

    @property
    def device_ids(self) -> tuple[str, ...]:
        return self.profile.device_ids

    def resolve(self, name) -> str:
        """The profile's id for ``name`` (``cpu`` -> ``cpu:0``); pools may be derived."""
        text = str(name)
        ids = self.profile.device_ids
        if text in ids:
            return text
        dev = parse_device(text)
        canon = str(dev.canonical())
        if canon in ids:
            return canon
        if dev.positions is not None and dev.socket_id in {parse_device(i).socket_id for i in ids}:  # a pool of a profiled unit
            self._derive_pool(canon)
            return canon
        raise HetsamInputError(
            f"device {text!r} is not in the profile (it has {', '.join(ids)}); name one of those, or a pool 'cpu:S[LIST]' of a profiled socket"
        )

    def device(self, name) -> DeviceProfile:
        dev_id = self.resolve(name)
        return self._derived.get(dev_id) or self.profile.device(dev_id)

    def kind(self, name) -> str:
        """The record kind of ``name`` (``cpu``, ``gpu``)."""
        return self.device(name).kind

    def accelerator(self, name) -> bool:
        """Whether ``name`` has memory of its own (its kind's ``accelerator``: a GPU)."""
        return kind_of(self.resolve(name)).accelerator

    def cores(self, name) -> int | None:
        return self.device(name).cores

    def max_batch(self, name) -> int | None:
        return self.device(name).max_batch_size

    # ---- compute -----------------------------------------------------------------------
    def _curve(self, name) -> _Curve:
        dev_id = self.resolve(name)
        curve = self._curves.get(dev_id)
        if curve is None:
            curve = self._curves[dev_id] = _Curve(self.device(dev_id).grad_seconds)
        return curve

    def grad_seconds(self, device, batch) -> float:
        """Seconds of one forward+backward of ``batch`` samples on ``device``."""
        _check_batch(batch)
        return self._curve(device)(float(batch))

    def grad_spread(self, device, batch) -> float:
        """Interquartile spread (seconds) of ``grad_seconds(device, batch)``."""
        _check_batch(batch)
        curve = self._curve(device)
        return curve.relative_spread(float(batch)) * curve(float(batch))

    def update_seconds(self, device) -> float:
        """Seconds of one optimizer update on ``device`` (0 when the profile did not measure it)."""
        return self.device(device).update_seconds or 0.0

    def climb_seconds(self, device) -> float:
        """Seconds of a perturbed step's climb on ``device`` (0 when the profile did not measure it)."""
        return self.device(device).climb_seconds or 0.0

    def auxiliary_seconds(self, device) -> float:
        """Seconds of SAMPa's auxiliary work per step on ``device`` (its y point, restore, norm and
        mix; 0 when the profile did not measure it)."""
        return self.device(device).auxiliary_seconds or 0.0

    def fixed_seconds(self, device, perturbed: bool) -> float:
        """A step's fixed costs on ``device`` beside its passes, without ℓ: as timed in AutoSAM's own
        steps when the profile has them (``hetsam/autosam/step_costs.py``), else ``u (+ c)``."""
        d = self.device(device)
        timed = d.perturbed_fixed_seconds if perturbed else d.plain_fixed_seconds
        if timed is not None:
            return timed
        return self.update_seconds(device) + (self.climb_seconds(device) if perturbed else 0.0)

    def step_seconds(self, device, perturbed: bool) -> float:
        """The fixed costs of one step on ``device`` beside its passes, plus the loop's ``ℓ``."""
        return self.fixed_seconds(device, perturbed) + self.loop_seconds

    def step_terms(self, device) -> dict[str, float | bool]:
        """The per-step terms on ``device``, in seconds: the profiler's update and climb, the fixed
        costs the model uses (``plain``, ``perturbed``; ``timed``: in AutoSAM's own steps), the loop."""
        return {"update": self.update_seconds(device), "climb": self.climb_seconds(device),
                "plain": self.fixed_seconds(device, False), "perturbed": self.fixed_seconds(device, True),
                "timed": self.device(device).plain_fixed_seconds is not None, "loop": self.loop_seconds}

    def calibrated(self, loop_seconds: float) -> CostModel:
        """The same profile with the training loop's per-step work set to ``loop_seconds``."""
        return CostModel(self.profile, loop_seconds=loop_seconds)

    # ---- copies ------------------------------------------------------------------------
    def copy_seconds(self, src, dst, nbytes) -> float:
        """``latency + nbytes / bandwidth`` between two devices; 0 on the same device."""
        if nbytes < 0:
            raise HetsamInputError(f"copy size {nbytes} bytes must be >= 0")
        a, b = self.resolve(src), self.resolve(dst)
        if a == b:
            return 0.0
        link = self._link(a, b)
        return link.latency_seconds + nbytes / link.bytes_per_second

    def has_link(self, src, dst) -> bool:
        """Whether :meth:`copy_seconds` can price a copy between the two devices."""
        a, b = self.resolve(src), self.resolve(dst)
        return a == b or self._find_link(a, b) is not None

    def _link(self, a: str, b: str):
        link = self._find_link(a, b)
        if link is None:
            raise HetsamInputError(
                f"the profile has no link between {a} and {b}; re-profile with both devices (hetsam profile --devices {a},{b})"
            )
        return link

    def _find_link(self, a: str, b: str):
        candidates = []
        for x in (a, parse_device(a).socket_id):
            for y in (b, parse_device(b).socket_id):
                candidates += [(x, y), (y, x)]
        for key in candidates:
            if key in self._links:
                return self._links[key]
        return None

    # ---- sharing -----------------------------------------------------------------------
    def shares_cores(self, a, b) -> bool:
        """Whether two devices are the same hardware (time-sliced rather than parallel)."""
        return parse_device(self.resolve(a)).overlaps(parse_device(self.resolve(b)))

    def slowdown(self, device, other, job_batch: int | None = None) -> float:
        """Factor by which ``device`` computes slower while ``other`` computes too (1.0: none known),
        with the ascent job (on either) at ``job_batch`` when the profile measured it at several
        (``hetsam.profiling.pairs.at_job_batch``; otherwise, or without it, at the profile's batch)."""
        value, points = self._pair_value(self._contention, device, other, (1.0, ()))
        return at_job_batch(points, job_batch) if points and job_batch is not None else value

    def handoff_seconds(self, descent, ascent) -> float:
        """What one step of the threaded executor costs the descent beyond its passes: with the ascent
        worker on another pool of the socket, the pair's measured hand-off; on shared cores, the
        device's time-sliced job beyond its bare pass (0: none measured); plus AutoSAM's own work
        for a step that hands over a job (``job_overhead_seconds`` of the descent device)."""
        job = self.device(descent).job_overhead_seconds or 0.0
        if self.shares_cores(descent, ascent):
            return (self.device(ascent).sliced_handoff_seconds or 0.0) + job
        return self._pair_value(self._handoff, descent, ascent, 0.0) + job

    def job_latency_seconds(self, descent, ascent) -> float:
        """How much later than its pass the result of a job on the worker's pool reaches the descent,
        beyond the hand-off that its step already pays: the pair's measured round trip (staging, the
        worker's wake-up and load, the return) less the hand-off (0: shared cores, or not measured).
        It lies on the job's path, so it costs time only where the descent waits for the job."""
        if self.shares_cores(descent, ascent):
            return 0.0
        return self._pair_value(self._latency, descent, ascent, 0.0)

    def _pair_value(self, table: dict, device, other, default: float) -> float:
        a, b = self.resolve(device), self.resolve(other)
        if (a, b) in table:
            return table[(a, b)]
        # pools of the same sizes on the same socket behave alike, whatever their positions
        da, db = parse_device(a), parse_device(b)
        for (x, y), value in table.items():
            dx, dy = parse_device(x), parse_device(y)
            if (dx.socket_id, dy.socket_id) == (da.socket_id, db.socket_id) and (self.cores(x), self.cores(y)) == (self.cores(a), self.cores(b)):
                return value
        return default

    # ---- derived pools ---------------------------------------------------------------------
    def _derive_pool(self, pool_id: str) -> None:
        if pool_id in self._derived:
            return
        pool = parse_device(pool_id)
        k = len(pool.positions or ())
        socket = [d for d in self.profile.devices if parse_device(d.id).socket_id == pool.socket_id]
        same = [d for d in socket if d.cores == k]
        if same:
            base = same[0]
            table = base.grad_seconds
            how = f"same core count as measured {base.id}"
        else:
            by_cores = sorted(socket, key=lambda d: d.cores or 0)
            socket_max = max((d.cores or 0) for d in socket)
            if k > socket_max:
                raise HetsamInputError(f"pool {pool_id} asks for {k} cores but socket {pool.socket_id} has {socket_max} in the profile")
            table, how = _amdahl_table(by_cores, k)
            base = by_cores[-1]
        self._derived[pool_id] = DeviceProfile(
            id=pool_id, kind=pool.kind, name=f"{base.name} ({k} of {base.cores} cores)", grad_seconds=table, cores=k,
            threads=k, memory_bytes=base.memory_bytes, spec=base.spec, max_batch_size=base.max_batch_size,
            **{key: getattr(base, key) for key in DeviceProfile.TIME_FIELDS},  # per-step costs: the base's
        )
        self.derivations[pool_id] = how


def _amdahl_table(measured: list[DeviceProfile], k: int) -> tuple[GradTable, str]:
    """Grad times for a k-core pool from measured pools of other core counts (Amdahl's law)."""
    big = measured[-1]
    small = measured[0] if len(measured) > 1 and measured[0].cores != big.cores else None
    medians, spreads = [], []
    for b, t_big, s_big in zip(big.grad_seconds.batch_sizes, big.grad_seconds.median, big.grad_seconds.spread):
        n = big.cores or 1
        f = DEFAULT_PARALLEL_FRACTION
        if small is not None:
            # solve t_small = T1((1-f)+f/m), t_big = T1((1-f)+f/n) for f at this batch size
            t_small = _Curve(small.grad_seconds)(float(b))
            m = small.cores or 1
            r = t_small / t_big
            # r = (1 - f + f/m) / (1 - f + f/n)  =>  f = (r - 1) / (r - 1 + 1/m - r/n)
            denom = (r - 1) + 1 / m - r / n
            f = min(1.0, max(0.0, (r - 1) / denom)) if denom != 0 else DEFAULT_PARALLEL_FRACTION
        t1 = t_big / ((1 - f) + f / n)
        scale = ((1 - f) + f / k) * t1 / t_big
        medians.append(t_big * scale)
        spreads.append(s_big * scale)
    how = (f"Amdahl from {small.id} and {big.id}" if small is not None else
           f"Amdahl from {big.id} with parallel fraction {DEFAULT_PARALLEL_FRACTION}")
    return GradTable(big.grad_seconds.batch_sizes, tuple(medians), tuple(spreads)), how


def _check_batch(batch) -> None:
    _checks.number(batch, "batch size", low=0.0, high=2.0**31, low_open=True)
