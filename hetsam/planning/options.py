"""The planner's options, declared once (:data:`OPTIONS`): each one's name, kind, bounds, default
(``hetsam.defaults``) and help, and where it is taken: a keyword of ``plan()``, a field of
:class:`PlannerOptions` (``AutoSAM(plan="auto", planner_options=...)``), a flag of ``hetsam plan``.

``plan()``'s keywords are checked by :func:`check` (``hetsam.planning.search.check_arguments``),
:class:`PlannerOptions` is made from the declaration and checks its fields with it, and
``hetsam plan`` adds its flags with :func:`add_flags`; ``tests/test_planner_options.py`` checks that
``plan()``'s signature and the three agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from hetsam import _checks, defaults
from hetsam.errors import HetsamInputError

__all__ = ["Option", "OPTIONS", "PlannerOptions", "check", "add_flags", "option"]

PLAN, AUTOSAM, CLI = "plan", "autosam", "cli"


def _families() -> tuple:
    from hetsam.evidence.model import FAMILIES

    return FAMILIES


def _objectives() -> tuple:
    from hetsam.planning.objective import OBJECTIVES

    return OBJECTIVES


def _planned() -> str:
    from hetsam.strategies import registry

    return ", ".join(s.name for s in registry.specs() if s.planned)


@dataclass(frozen=True)
class Option:
    """One option. ``kind``: ``int``, ``float``, ``choice`` (one of ``choices``), ``family`` (a base
    optimizer's family, or a name of one: ``hetsam.evidence.optimizer_family``), ``names``
    (registered strategies), ``bool``, or ``any`` (checked where it is used: a path, records, a
    profile). ``optional``: None is allowed too. ``where``: ``plan``, ``autosam``, ``cli``."""

    name: str
    kind: str
    default: Any
    where: tuple = (PLAN, AUTOSAM, CLI)
    help: str | Callable[[], str] = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    choices: tuple | Callable[[], tuple] = ()
    hint: str = ""
    metavar: str | None = None

    def allowed(self) -> tuple:
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any, label: str) -> Any:
        """``value`` if it is allowed (strategy names as a tuple); a one-line ``HetsamInputError``
        naming ``label`` otherwise."""
        if value is None and self.optional:
            return None
        if self.kind == "int":
            _checks.integer(value, label, low=self.low, high=self.high, hint=self.hint)
        elif self.kind == "float":
            _checks.number(value, label, low=self.low, high=self.high, low_open=self.low_open, hint=self.hint)
        elif self.kind == "choice":
            _checks.choice(value, label, self.allowed(), self.hint)
        elif self.kind == "family":
            from hetsam.evidence.model import optimizer_family

            if optimizer_family(value) is None:
                raise HetsamInputError(f"{label}={_checks._show(value)} is not a family hetsam knows; give 'sgd' "
                                       "(SGD with momentum) or 'adam' (Adam, AdamW, ...), or None for unknown")
        elif self.kind == "names":
            return _names(value, label)
        elif self.kind == "bool" and not isinstance(value, bool):
            raise HetsamInputError(f"{label}={_checks._show(value)} must be True or False")
        return value


def _names(value: Any, label: str) -> tuple[str, ...]:
    from hetsam.strategies import registry

    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise HetsamInputError(f"{label}={_checks._show(value)} must be a list of strategy names")
    if not value:
        raise HetsamInputError(f"{label} is empty: name at least one strategy, or None for every planned one")
    for name in value:
        registry.get(name)  # a clear error for an unknown name
    return tuple(value)


D = defaults
OPTIONS: tuple[Option, ...] = (
    Option("budget", "float", D.BUDGET, low=1.0, high=100.0, hint="a multiple of the SGD step time",
           help=f"allowed step time, as a multiple of SGD on the fastest device (default {D.BUDGET:g})"),
    Option("max_staleness", "int", D.MAX_STALENESS, low=1, high=D.STALENESS_LIMIT,
           help=f"largest AsyncSAM staleness tau (default {D.MAX_STALENESS}, at most {D.STALENESS_LIMIT})"),
    Option("min_ascent_fraction", "float", D.MIN_ASCENT_FRACTION, low=0.0, high=1.0, low_open=True,
           help="the floor: the smallest AsyncSAM b'/b proposed, and the smallest expected share of SAM's "
                f"gain a plan may keep (default {D.MIN_ASCENT_FRACTION:g})"),
    Option("reserve_cores", "int", D.RESERVE_CORES, low=0, high=8192,
           help="cores of socket 0 kept for the data loader (default 0)"),
    Option("ascent_batches", "choice", D.ASCENT_BATCHES, (PLAN, CLI), choices=("lookahead", "independent"),
           help="AsyncSAM batch policy"),
    Option("simulate_top", "int", D.SIMULATE_TOP, (PLAN,), low=0, high=1000),
    Option("strategies", "names", None, optional=True, metavar="A,B",
           help=lambda: f"consider only these strategies (comma-separated; default: every planned one: {_planned()})"),
    Option("shares", "any", None, metavar="FILE",
           help="your own evidence (a file hetsam.study wrote) to add to the shipped evidence; with enough "
                "seeds your task's shares dominate (README, \"Accuracy per second\")"),
    Option("objective", "choice", D.OBJECTIVE, choices=lambda: _objectives(),
           help="robust (default): the share of SAM's gain the evidence supports at 80%% (its interval's "
                "lower end); expected: the point estimate"),
    Option("base_optimizer", "family", D.BASE_OPTIMIZER, optional=True,
           help="your base optimizer's family (SGD with momentum, or Adam/AdamW): MSAM only uses radii its "
                f"evidence tested for it (default {D.BASE_OPTIMIZER})"),
    # AutoSAM's own: what to profile, and the calibration on the measured step periods
    Option("profile", "any", None, (AUTOSAM,)),
    Option("profile_budget_seconds", "float", D.PROFILE_BUDGET_SECONDS, (AUTOSAM, CLI), low=0.0, high=86400.0,
           low_open=True, optional=True,
           help=f"time budget when profiling this machine (default {D.PROFILE_BUDGET_SECONDS:g})"),
    Option("devices", "any", None, (AUTOSAM,)),
    Option("calibration_window", "int", 30, (AUTOSAM,), low=5, high=100_000),
    Option("calibration_warmup", "int", 5, (AUTOSAM,), low=0, high=100_000),
    Option("confidence", "float", 0.95, (AUTOSAM,), low=0.5, high=0.999),
    Option("max_replans", "int", 1, (AUTOSAM,), low=0, high=100),
    Option("progress", "bool", True, (AUTOSAM,)),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def option(name: str) -> Option:
    return _BY_NAME[name]


def check(values: dict, where: str = PLAN, label: Callable[[str], str] = str) -> dict:
    """Every option of ``where`` checked, with its default where ``values`` lacks it; an unknown key
    is refused. Returns the values (strategy names as a tuple)."""
    known = [o for o in OPTIONS if where in o.where]
    unknown = sorted(str(k) for k in set(values) - {o.name for o in known})
    if unknown:
        raise HetsamInputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(o.name for o in known)}")
    return {o.name: o.check(values.get(o.name, o.default), label(o.name)) for o in known}


def add_flags(parser, *names: str, help: dict | None = None) -> None:
    """``--name`` flags for the options ``names`` (their values are checked by :func:`check` when the
    command runs, so that a bad one is a one-line error); ``help`` replaces an option's help text."""
    for name in names:
        o = _BY_NAME[name]
        if CLI not in o.where:  # a programming error in a command, not user input
            raise ValueError(f"planner option {name!r} has no command-line flag")
        text = (help or {}).get(name, o.help() if callable(o.help) else o.help)
        kw: dict[str, Any] = {"default": o.default, "help": text}
        if o.kind in ("int", "float"):
            kw["type"] = int if o.kind == "int" else float
        elif o.kind == "choice":
            kw["choices"] = o.allowed()
        elif o.kind == "family":
            kw["choices"] = _families()
        if o.metavar:
            kw["metavar"] = o.metavar
        parser.add_argument("--" + name.replace("_", "-"), **kw)


_DOC = """Options of ``plan="auto"`` (``AutoSAM(..., planner_options=...)`` takes these keys).

    ``budget``, ``max_staleness``, ``min_ascent_fraction``, ``reserve_cores``, ``objective``: as
    for ``hetsam plan``; ``strategies``: the registered strategies to consider (None: every planned
    one); ``shares``: evidence of your own to add to the shipped store (a path to a file
    ``hetsam.study`` wrote, or a list of them; None: the shipped evidence only);
    ``base_optimizer``: the base optimizer family (``"sgd"``, ``"adam"``; AutoSAM fills it in from
    its base optimizer; None: unknown, so MSAM has no tested radius). ``profile``: plan on this
    profile (a path, a bundled name or a Profile) instead of measuring this machine.
    ``profile_budget_seconds``: the measuring time of the profile (None: no bound). ``devices``:
    what to profile (None: every socket, its one-core pool, every GPU).
    ``calibration_window``, ``calibration_warmup``, ``confidence``, ``max_replans``: the measured
    step periods are compared with the prediction in windows of that many steps, after that many
    steps, with a median interval at that confidence; a disagreement calibrates the loop's own
    per-step work and plans again; the new choice replaces the running plan when that no longer
    fits the calibrated budget beyond the noise, or when the new one is better by the planner's
    objective by more than a near-tie, at most ``max_replans`` times
    (``hetsam.autosam.controller``). ``progress``: a progress bar while profiling. Every field is
    declared, bounded and defaulted in ``hetsam.planning.options.OPTIONS``.
    """


def _post_init(self) -> None:
    checked = check({f.name: getattr(self, f.name) for f in fields(self)}, AUTOSAM, lambda n: f"planner_options['{n}']")
    object.__setattr__(self, "strategies", checked["strategies"])
    if self.devices is not None:
        object.__setattr__(self, "devices", tuple(self.devices))
    if self.profile is not None:
        from hetsam.profiling.schema import load_profile

        object.__setattr__(self, "profile", load_profile(self.profile))


def _from_value(cls, value) -> PlannerOptions:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise HetsamInputError(f"planner_options must be a dict or PlannerOptions, got {type(value).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in set(value) - known)
    if unknown:
        raise HetsamInputError(f"planner_options has unknown key(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
    return cls(**value)


PlannerOptions = make_dataclass(
    "PlannerOptions", [(o.name, Any, field(default=o.default)) for o in OPTIONS if AUTOSAM in o.where], frozen=True,
    namespace={"__doc__": _DOC, "__post_init__": _post_init, "from_value": classmethod(_from_value)})
PlannerOptions.__module__ = __name__
