"""`Plan`: what runs where, with which numbers. The decision only: frozen, versioned JSON, no torch.

A plan is produced by the planner (or written by hand) and consumed by the executor, the
simulator and ``AutoSAM``. It lives beside the strategies it names, below the simulator and the
planner that both read it (its public path is still ``hetsam.planning.plan``). What the planner
or the simulator *predicts* for it is a separate :class:`~hetsam.planning.prediction.Prediction`;
what actually *ran* (fallbacks, a realised probability, re-plans) is reported by
``AutoSAM.stats()``. Neither is ever written into a Plan.

JSON: ``{"schema_version": 1, "strategy": ..., ...}``. Files written before the version existed
(no ``schema_version``, perhaps a ``predicted`` object) still load; the prediction is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from hetsam import defaults
from hetsam.errors import HetsamInputError
from hetsam.hardware.names import canonical_name

__all__ = ["Plan", "ASCENT_POLICIES", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
ASCENT_POLICIES = ("lookahead", "independent")
_MAX_BATCH = 2**31 - 1  # no batch of more samples than this is ever planned or run


@dataclass(frozen=True)
class Plan:
    """A training plan (frozen: change it with ``dataclasses.replace``, which validates again).

    Attributes:
        strategy: a registered strategy (``hetsam.strategies.names()``: ``"sgd"``, ``"sam"``,
            ``"async_sam"``, ``"sampa"``, ``"rst"``, ...).
        descent_device: where the update (descent) gradient runs.
        ascent_device: where the perturbation (ascent) gradient runs; ``None`` means the
            descent device. For SAMPa it is the device that computes g_y'.
        batch_size: b, the descent batch; ``None`` means "whatever the user passes".
        ascent_batch_size: b', the first b' samples of a batch used for the ascent
            (``None`` means b' = b).
        staleness: τ, exact ascent staleness of AsyncSAM in steps (at most
            ``hetsam.defaults.STALENESS_LIMIT``).
        ascent_batches: ``"lookahead"`` (perturb step t with g(θ_{t−τ}; B'_t)) or
            ``"independent"`` (the AsyncSAM paper: g(θ_s; B'_s) used at step s+τ).
        sam_probability: p of RST (a number in [0, 1]); ``None`` means 0.5.
        sampa_lambda: λ of SAMPa-λ, in [0, 1].
        options: parameters of strategies registered with options of their own (their spec
            declares and bounds them); empty for the built-ins.
    """

    strategy: str
    descent_device: str = "cpu"
    ascent_device: str | None = None
    batch_size: int | None = None
    ascent_batch_size: int | None = None
    staleness: int = 1
    ascent_batches: str = defaults.ASCENT_BATCHES
    sam_probability: float | None = None
    sampa_lambda: float = defaults.SAMPA_LAMBDA
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from hetsam import _checks  # here, not at the top: `import hetsam` stays cheap
        from hetsam.strategies.registry import get

        spec = get(self.strategy)
        set_ = object.__setattr__
        set_(self, "descent_device", canonical_name(self.descent_device, "Plan.descent_device"))
        if self.ascent_device is not None:
            set_(self, "ascent_device", canonical_name(self.ascent_device, "Plan.ascent_device"))
        _checks.optional(_checks.integer, self.batch_size, "Plan.batch_size", low=1, high=_MAX_BATCH)
        _checks.optional(_checks.integer, self.ascent_batch_size, "Plan.ascent_batch_size", low=1, high=_MAX_BATCH)
        _checks.integer(self.staleness, "Plan.staleness", low=0, high=defaults.STALENESS_LIMIT)
        if self.ascent_batch_size is not None and self.batch_size is not None and self.ascent_batch_size > self.batch_size:
            raise HetsamInputError(
                f"Plan.ascent_batch_size={self.ascent_batch_size} exceeds batch_size={self.batch_size}; "
                "the ascent uses the first b' samples of a batch, so b' <= b"
            )
        _checks.choice(self.ascent_batches, "Plan.ascent_batches", ASCENT_POLICIES)
        if self.sam_probability is not None:
            set_(self, "sam_probability", _checks.number(self.sam_probability, "Plan.sam_probability", low=0, high=1))
        set_(self, "sampa_lambda", _checks.number(self.sampa_lambda, "Plan.sampa_lambda", low=0, high=1))
        set_(self, "options", _Options(_options(spec, self.options)))
        spec.check(self)

    def validate(self) -> "Plan":
        """Check the plan again (a plan changed behind the frozen dataclass's back is refused)."""
        Plan(**{f.name: getattr(self, f.name) for f in fields(self)})
        return self

    # ---- derived views -------------------------------------------------------------------
    @property
    def effective_ascent_device(self) -> str:
        return self.ascent_device if self.ascent_device is not None else self.descent_device

    @property
    def spec(self):
        """The strategy's :class:`~hetsam.strategies.spec.StrategySpec`."""
        from hetsam.strategies.registry import get

        return get(self.strategy)

    def describe(self) -> str:
        """One line, for logs."""
        return self.spec.describe(self)

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {"schema_version": SCHEMA_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}
        if self.options:
            d["options"] = dict(self.options)
        else:
            del d["options"]  # the built-in strategies have none
        return d

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        if not isinstance(data, dict):
            raise HetsamInputError("a plan must be a JSON object")
        data = dict(data)
        version = data.pop("schema_version", 0)
        if version == 0:
            data.pop("predicted", None)  # written before plans were versioned: the prediction lived inside
        elif version != SCHEMA_VERSION:
            raise HetsamInputError(f"plan schema_version {version!r} is not supported (this hetsam reads "
                                   f"{SCHEMA_VERSION}); write the plan again with this version's 'hetsam plan --out'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            shown = ", ".join(json.dumps(str(u))[1:-1][:40] for u in unknown[:8])  # escaped: one line
            raise HetsamInputError(f"plan has unknown field(s) {shown}; known fields: {', '.join(sorted(known))}")
        if "strategy" not in data:
            raise HetsamInputError("plan is missing the field 'strategy'")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        from hetsam.io import loads

        return cls.from_dict(loads(text, "plan"))

    @classmethod
    def load(cls, path) -> "Plan":
        from hetsam.io import read_json

        data = read_json(path, "plan")
        try:
            return cls.from_dict(data)
        except HetsamInputError as exc:
            raise HetsamInputError(f"{path}: {exc}") from None

    def save(self, path) -> None:
        """Write the plan's JSON atomically (a failure leaves any previous file as it was)."""
        from hetsam.io import write_text

        write_text(path, self.to_json() + "\n")


class _Options:
    """A read-only mapping of a plan's options (hashable, copyable, equal to an equal dict).

    Not a ``collections.abc.Mapping`` subclass: defining one costs a millisecond of every
    ``import hetsam``; the mapping methods below are the ones a reader uses."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping):
        self._d = dict(d)

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key) -> bool:
        return key in self._d

    def get(self, key, default=None):
        return self._d.get(key, default)

    def keys(self):
        return self._d.keys()

    def items(self):
        return self._d.items()

    def values(self):
        return self._d.values()

    def __eq__(self, other) -> bool:
        if isinstance(other, _Options):
            return self._d == other._d
        return isinstance(other, dict) and self._d == other

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._d.items())))

    def __repr__(self) -> str:
        return repr(self._d)

    def __reduce__(self):
        return (_Options, (self._d,))


def _options(spec, given: Any) -> dict:
    if given is None:
        return {}
    if not isinstance(given, (dict, _Options)):
        raise HetsamInputError(f"Plan.options must be a mapping of option names to numbers, got {type(given).__name__}")
    declared = {o.name: o for o in spec.options}
    unknown = sorted(repr(k) for k in given if k not in declared)
    if unknown:
        have = ", ".join(declared) or "none"
        raise HetsamInputError(f"Plan.options: strategy {spec.name!r} has no option {', '.join(unknown)} (its options: {have})")
    return {k: declared[k].check(v) for k, v in sorted(given.items())}

