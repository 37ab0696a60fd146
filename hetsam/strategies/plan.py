"""`Plan`: what runs where, with which numbers. The decision only: frozen, versioned JSON, no torch.

A plan is produced by the planner (or written by hand) and consumed by the executor, the
simulator and ``AutoSAM``. It lives beside the strategies it names, below the simulator and the
planner that both read it (its public path is still ``hetsam.planning.plan``). What the planner
or the simulator *predicts* for it is a separate :class:`~hetsam.planning.prediction.Prediction`;
what actually *ran* (fallbacks, a realised probability, re-plans) is reported by
``AutoSAM.stats()``. Neither is ever written into a Plan.

JSON: ``{"schema_version": 2, "strategy": ..., "descent_device": ..., "ascent_device": ...,
"batch_size": ..., "options": {...}}``: a strategy's settings are its ``options``. Files of schema 1
(the settings were fields: ``ascent_batch_size``, ``staleness``, ``ascent_batches``,
``sam_probability``, ``sampa_lambda``) and older ones (no ``schema_version``, perhaps a
``predicted`` object, dropped) still load: each setting becomes the strategy's option of the same
name, one the strategy does not have is dropped at schema 1's default and refused otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hetsam import defaults
from hetsam.errors import HetsamInputError
from hetsam.hardware.names import canonical_name

__all__ = ["Plan", "ASCENT_POLICIES", "SCHEMA_VERSION"]

SCHEMA_VERSION = 2
ASCENT_POLICIES = ("lookahead", "independent")  # AsyncSAM's batch policies (its spec's option `ascent_batches`)
# schema 1's strategy settings, Plan fields then, and their defaults: each is an option of its strategy now
_V1_FIELDS = {"ascent_batch_size": None, "staleness": 1, "ascent_batches": "lookahead", "sam_probability": None,
              "sampa_lambda": 0.2}


@dataclass(frozen=True, init=False)
class Plan:
    """A training plan (frozen: change it with ``dataclasses.replace``, which validates again).

    Attributes:
        strategy: a registered strategy (``hetsam.strategies.names()``: ``"sgd"``, ``"sam"``,
            ``"async_sam"``, ``"sampa"``, ``"rst"``, ...).
        descent_device: where the update (descent) gradient runs.
        ascent_device: where the perturbation (ascent) gradient runs; ``None`` means the
            descent device. For SAMPa it is the device that computes g_y'.
        batch_size: b, the descent batch; ``None`` means "whatever the user passes".
        options: the strategy's own settings, as its spec declares and bounds them
            (``hetsam.strategies.get(name).options``), every one present (absent ones at their
            defaults): AsyncSAM's ``ascent_batch_size`` (b'), ``staleness`` (τ) and
            ``ascent_batches``, RST's ``sam_probability`` (p), SAMPa's ``sampa_lambda`` (λ),
            interval's ``k``, late-phase's ``start``, MSAM's ``rho``. An option of another
            strategy is refused. ``plan.option(name)`` reads one.

    The keywords of schema 1 (``Plan("async_sam", ascent_batch_size=16)``) still work, with a
    FutureWarning: each becomes the option of the same name.
    """

    strategy: str
    descent_device: str = "cpu"
    ascent_device: str | None = None
    batch_size: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, strategy: str, descent_device: str = "cpu", ascent_device: str | None = None,
                 batch_size: int | None = None, options: Mapping[str, Any] | None = None, **settings: Any):
        from hetsam import _checks  # here, not at the top: `import hetsam` stays cheap
        from hetsam.strategies.registry import get

        spec = get(strategy)
        set_ = object.__setattr__
        set_(self, "strategy", strategy)
        set_(self, "descent_device", canonical_name(descent_device, "Plan.descent_device"))
        set_(self, "ascent_device", None if ascent_device is None else canonical_name(ascent_device, "Plan.ascent_device"))
        set_(self, "batch_size", _checks.optional(_checks.integer, batch_size, "Plan.batch_size", low=1,
                                                  high=defaults.BATCH_LIMIT))
        if options is not None and not isinstance(options, (dict, _Options)):
            raise HetsamInputError(f"Plan.options must be a mapping of option names to values, got {type(options).__name__}")
        given = dict(options or {})
        if settings:
            _deprecated(settings)
            given.update(_settings_of_v1(spec, settings, "Plan"))
        set_(self, "options", _Options(spec.check_options(given)))
        spec.check(self)

    def __getattr__(self, name: str):  # only for names that are not attributes
        if name in _V1_FIELDS:
            raise AttributeError(f"Plan has no field {name!r}: a strategy's settings are its options; "
                                 f"use plan.option({name!r})")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def validate(self) -> Plan:
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

    def option(self, name: str, *default: Any) -> Any:
        """The value of the strategy's option ``name``; for a name the strategy does not declare,
        ``default`` when given, else a one-line error naming its options."""
        if name in self.options:
            return self.options[name]
        if default:
            return default[0]
        have = ", ".join(self.options) or "none"
        raise HetsamInputError(f"strategy {self.strategy!r} has no option {name!r} (its options: {have})")

    def describe(self) -> str:
        """One line, for logs."""
        return self.spec.describe(self)

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {"schema_version": SCHEMA_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}
        if self.options:
            d["options"] = dict(self.options)
        else:
            del d["options"]  # SGD and SAM have none
        return d

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        """A plan of schema 2, or of schema 1 or before (no ``schema_version``, perhaps a
        ``predicted`` object, dropped): their strategy settings become options (module docstring)."""
        if not isinstance(data, dict):
            raise HetsamInputError("a plan must be a JSON object")
        data = dict(data)
        version = data.pop("schema_version", 0)
        if version == 0:
            data.pop("predicted", None)  # written before plans were versioned: the prediction lived inside
        elif version not in (1, SCHEMA_VERSION) or isinstance(version, bool):
            raise HetsamInputError(f"plan schema_version {version!r} is not supported (this hetsam reads 0 to "
                                   f"{SCHEMA_VERSION}); write the plan again with this version's 'hetsam plan --out'")
        legacy = {k: data.pop(k) for k in _V1_FIELDS if k in data} if version != SCHEMA_VERSION else {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            shown = ", ".join(json.dumps(str(u))[1:-1][:40] for u in unknown[:8])  # escaped: one line
            moved = " (strategy settings are in 'options' since schema_version 2)" if set(unknown) & set(_V1_FIELDS) else ""
            raise HetsamInputError(f"plan has unknown field(s) {shown}; known fields: {', '.join(sorted(known))}{moved}")
        if "strategy" not in data:
            raise HetsamInputError("plan is missing the field 'strategy'")
        if legacy:
            from hetsam.strategies.registry import get

            options = data.get("options")
            if options is not None and not isinstance(options, dict):
                raise HetsamInputError(f"Plan.options must be a mapping of option names to values, got "
                                       f"{type(options).__name__}")
            data["options"] = {**_settings_of_v1(get(data["strategy"]), legacy, f"plan (schema {version})"),
                               **(options or {})}
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        from hetsam.io import loads

        return cls.from_dict(loads(text, "plan"))

    @classmethod
    def load(cls, path) -> Plan:
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


def _deprecated(settings: dict) -> None:
    import warnings

    unknown = sorted(k for k in settings if k not in _V1_FIELDS)
    if unknown:
        raise HetsamInputError(f"Plan() got unknown field(s) {', '.join(repr(k)[:40] for k in unknown[:8])}; its "
                               "fields: strategy, descent_device, ascent_device, batch_size, options")
    given = ", ".join(f"{k!r}: {v!r}" for k, v in settings.items())
    warnings.warn(f"Plan({', '.join(f'{k}=' for k in settings)}...) is deprecated: a strategy's settings are its "
                  f"options, Plan(..., options={{{given}}})", FutureWarning, stacklevel=4)


def _settings_of_v1(spec, given: dict, where: str) -> dict:
    """Schema 1's strategy settings as ``spec``'s options: None where the option takes no None is
    its default (RST's p); a setting the strategy does not have is dropped at schema 1's default,
    refused otherwise (one line)."""
    from hetsam import _checks

    declared = {o.name: o for o in spec.options}
    out = {}
    for name, value in given.items():
        if name in declared:
            if value is not None or declared[name].optional:
                out[name] = value
        elif not _same(value, _V1_FIELDS[name]):
            have = ", ".join(declared) or "none"
            raise HetsamInputError(f"{where}: {name}={_checks._show(value)} is not a setting of strategy "
                                   f"{spec.name!r} (its options: {have}); remove it")
    return out


def _same(value: Any, default: Any) -> bool:
    return type(value) in (type(default), int, float) and not isinstance(value, bool) and value == default \
        if default is not None else value is None
