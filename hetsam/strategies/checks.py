"""What ``register()`` checks of a strategy spec before the planner, the simulator or AutoSAM see it
(docs/architecture.md, "Adding a strategy"). Every check fails with one ``HetsamInputError`` line
that names the strategy, the problem and the fix.

- its name, title and summary; the Plan fields it reads (of :data:`~hetsam.strategies.spec.FIELDS`);
- its options: each an :class:`~hetsam.strategies.spec.Option` of kind int, float or str, named
  by a unique identifier that is not one of the Plan's own fields, with finite bounds low <= high
  (integers for kind int) or non-empty choices, and a default that the option itself accepts;
- a closed form: ``mixed_steps`` (its expectation from the baselines) or a ``closed_form_seconds``
  of its own (``simulation`` is abstract, so a spec without one cannot be made at all);
- its rule: ``"module:Class"`` naming a ``StrategyRule`` subclass, imported now (which imports
  torch), or with ``lazy=True`` only the module found (``importlib.util.find_spec``, which imports
  the module's parent packages) and the class resolved when a rule is first built.

The built-in strategies are checked lazily when the registry loads them (so ``import hetsam`` and
the planner never import torch); their rules are resolved by ``hetsam.testing.StrategyContract``.
"""

from __future__ import annotations

import importlib.util
import math

from hetsam.errors import HetsamInputError
from hetsam.strategies.spec import FIELDS, Option, StrategySpec

__all__ = ["PLAN_OWN", "check_spec"]

# the Plan's fields that no strategy reads as its own (FIELDS are those a strategy may read);
# an option named like any of them would be ambiguous in JSON and on the command line
PLAN_OWN = ("schema_version", "strategy", "descent_device", "batch_size", "options")


def check_spec(spec: StrategySpec, *, lazy: bool = False) -> None:
    """Refuse ``spec`` in one line unless it is complete and well-formed (module docstring)."""
    if not isinstance(spec, StrategySpec):
        raise HetsamInputError(f"register() takes a StrategySpec instance, got {type(spec).__name__}")
    name = spec.name
    if not isinstance(name, str) or not name.isidentifier() or not name.islower():
        raise HetsamInputError(f"strategy name {name!r} must be a lower-case identifier such as 'my_sam'")
    for attr in ("title", "summary"):
        if not isinstance(getattr(spec, attr), str) or not getattr(spec, attr).strip():
            raise HetsamInputError(f"strategy {name!r} has no {attr}; set {attr} = '...' on its StrategySpec")
    unknown = [f for f in spec.fields if f not in FIELDS]
    if unknown:
        raise HetsamInputError(f"strategy {name!r} reads unknown Plan field(s) {unknown}; Plan fields: {', '.join(FIELDS)}")
    _check_options(spec)
    if not spec.mixed_steps and type(spec).closed_form_seconds is StrategySpec.closed_form_seconds:
        raise HetsamInputError(f"strategy {name!r} has no closed form; define closed_form_seconds(ctx, plan), "
                               "or set mixed_steps = True for SGD and SAM steps mixed")
    _check_rule(spec, lazy)


def _check_options(spec: StrategySpec) -> None:
    name, seen = spec.name, set()
    if not isinstance(spec.options, tuple):
        raise HetsamInputError(f"strategy {name!r}: options must be a tuple of Option, got {type(spec.options).__name__}")
    for opt in spec.options:
        if not isinstance(opt, Option):
            raise HetsamInputError(f"strategy {name!r}: options holds {type(opt).__name__}; declare each as "
                                   "hetsam.strategies.Option(name, kind, default, low, high, help)")
        where = f"strategy {name!r} option {opt.name!r}"
        if not isinstance(opt.name, str) or not opt.name.isidentifier():
            raise HetsamInputError(f"{where}: its name must be an identifier such as 'k'")
        if opt.name in seen:
            raise HetsamInputError(f"{where} is declared twice; give each option its own name")
        if opt.name in PLAN_OWN or opt.name in FIELDS:
            raise HetsamInputError(f"{where} has the name of a Plan field; rename the option")
        seen.add(opt.name)
        _check_range(opt, where)
        try:
            opt.check(opt.default, f"{name}.options")
        except HetsamInputError as exc:
            raise HetsamInputError(f"{where}: its default is not a value it accepts ({exc})") from None


def _check_range(opt: Option, where: str) -> None:
    if opt.kind is str:
        choices = getattr(opt, "choices", ())  # an Option of kind str lists its values
        if not choices or not all(isinstance(c, str) for c in choices):
            raise HetsamInputError(f"{where}: kind str needs choices, a non-empty tuple of strings")
        return
    if opt.kind not in (int, float):
        raise HetsamInputError(f"{where}: kind must be int, float or str, got {opt.kind!r}")
    bounds = (opt.low, opt.high)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bounds):
        raise HetsamInputError(f"{where}: low and high must be finite numbers, got {opt.low!r} and {opt.high!r}")
    if opt.low > opt.high:
        raise HetsamInputError(f"{where}: low={opt.low:g} exceeds high={opt.high:g}; swap them")
    if opt.kind is int and not all(float(v).is_integer() for v in bounds):
        raise HetsamInputError(f"{where}: an int option needs whole-number bounds, got {opt.low!r} and {opt.high!r}")


def _check_rule(spec: StrategySpec, lazy: bool) -> None:
    rule = spec.rule
    module, sep, cls = rule.partition(":") if isinstance(rule, str) else ("", "", "")
    if not sep or not cls.isidentifier() or not all(p.isidentifier() for p in module.split(".")):
        raise HetsamInputError(f"strategy {spec.name!r}: rule={rule!r} is not 'module:Class' "
                               "(e.g. 'my_package.my_rule:MyRule')")
    if not lazy:
        spec.rule_class()  # imports the module; one line unless it holds a StrategyRule subclass
        return
    try:
        found = importlib.util.find_spec(module)
    except ImportError as exc:  # a parent package is missing
        found, why = None, f" ({exc})"
    else:
        why = ""
    if found is None:
        raise HetsamInputError(f"strategy {spec.name!r}: the module {module!r} of its rule cannot be found{why}; "
                               "fix rule = 'module:Class' or put the module on the import path")
