"""register() refuses an incomplete or malformed strategy in one line, before a plan runs: abstract
methods, the Plan fields it reads, its options, its closed form and its rule (resolved now, or with
lazy=True found now and resolved when a rule is built)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from _toy_strategy import NAME, SPEC, EveryKSpec

from hetsam import HetsamInputError, Plan, strategies
from hetsam.strategies import Option, StrategySpec
from hetsam.strategies.checks import PLAN_OWN, check_spec
from hetsam.strategies.rule import StrategyRule
from hetsam.strategies.spec import FIELDS


def _variant(**attrs) -> StrategySpec:
    """The toy spec with some class attributes changed."""
    return type("Variant", (EveryKSpec,), attrs)()


def _register(spec, **kw):
    try:
        return strategies.register(spec, **kw)
    finally:
        strategies.unregister(spec.name) if isinstance(getattr(spec, "name", None), str) else None


def test_the_bases_are_abstract():
    with pytest.raises(TypeError, match="simulation"):
        type("NoIteration", (StrategySpec,), {"name": "x"})()
    with pytest.raises(TypeError, match="step"):
        type("NoStep", (StrategyRule,), {})(None)
    from hetsam.strategies.sam.rule import ScheduledSAMRule

    assert "is_sam_step" in ScheduledSAMRule.__abstractmethods__


def test_a_well_formed_spec_registers_and_resolves_its_rule():
    assert _register(_variant(name="every_k_ok")).name == "every_k_ok"
    check_spec(SPEC)  # the rule resolved too
    for spec in strategies.specs():  # the built-ins were checked lazily when loaded: resolve them now
        check_spec(spec)


@pytest.mark.parametrize("attrs, match", [
    ({"name": "Every-K"}, "lower-case identifier"),
    ({"title": ""}, "has no title"),
    ({"fields": ("ascent_device", "warp")}, "unknown Plan field"),
    ({"options": [Option("k", int, 2, 1, 9)]}, "must be a tuple of Option"),
    ({"options": ({"name": "k"},)}, "holds dict"),
    ({"options": (Option("k", int, 2, 1, 9), Option("k", int, 3, 1, 9))}, "declared twice"),
    ({"options": (Option("batch_size", int, 2, 1, 9),)}, "name of a Plan field"),
    ({"options": (Option("not a name", int, 2, 1, 9),)}, "must be an identifier"),
    ({"options": (Option("k", int, 20, 1, 9),)}, "its default is not a value it accepts"),
    ({"options": (Option("k", int, 2, 9, 1),)}, "low=9 exceeds high=1"),
    ({"options": (Option("k", int, 2, 1, 9.5),)}, "whole-number bounds"),
    ({"options": (Option("k", float, 0.5, 0, float("inf")),)}, "finite numbers"),
    ({"options": (Option("k", list, [], 0, 1),)}, "kind must be int, float or str"),
    ({"options": (Option("mode", str, "a"),)}, "kind str needs choices"),
    ({"options": (Option("mode", str, "c", choices=("a", "b")),)}, "its default is not a value it accepts"),
    ({"options": (Option("k", int, None, 1, 9),)}, "its default is not a value it accepts"),
    ({"mixed_steps": False}, "has no closed form"),
    ({"rule": "_toy_strategy.EveryKRule"}, "is not 'module:Class'"),
    ({"rule": "_toy_strategy:EveryKRul"}, "is nothing, not a StrategyRule subclass"),
    ({"rule": "_toy_strategy:EveryKSpec"}, "EveryKSpec, not a StrategyRule subclass"),
    ({"rule": "_toy_strategi:EveryKRule"}, "cannot be found"),
])
def test_register_refuses_in_one_line(attrs, match):
    spec = _variant(**attrs)
    with pytest.raises(HetsamInputError, match=match) as info:
        _register(spec)
    assert "\n" not in str(info.value)
    assert NAME not in strategies.names() or spec.name == NAME  # nothing was registered


def test_lazy_registration_finds_the_module_now_and_the_class_when_a_rule_is_built():
    with pytest.raises(HetsamInputError, match="cannot be found"):
        _register(_variant(name="every_k_lazy", rule="_toy_strategi:EveryKRule"), lazy=True)
    with pytest.raises(HetsamInputError, match="cannot be found"):
        _register(_variant(name="every_k_lazy", rule="no_such_package.rule:EveryKRule"), lazy=True)
    spec = _variant(name="every_k_lazy", rule="_toy_strategy:EveryKRul")
    strategies.register(spec, lazy=True)
    try:
        with pytest.raises(HetsamInputError, match="is nothing, not a StrategyRule subclass"):
            spec.build_rule(None)
    finally:
        strategies.unregister(spec.name)


def test_a_rule_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_rule.py").write_text("import no_such_dependency_of_hetsam_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HetsamInputError, match="cannot be imported .*no_such_dependency_of_hetsam_tests"):
        _register(_variant(name="every_k_broken", rule="broken_rule:Rule"))
    assert "every_k_broken" not in strategies.names()


def test_the_names_options_may_not_take_are_the_plans_fields():
    """PLAN_OWN and FIELDS are the Plan's fields (and its JSON's schema_version), so an option can
    never be confused with one, and no field is unknown to both."""
    assert set(PLAN_OWN) | set(FIELDS) == {f.name for f in dataclasses.fields(Plan)} | {"schema_version"}


def test_loading_the_builtins_checks_them_without_torch():
    code = ("import sys\nfrom hetsam import strategies\nstrategies.names()\n"
            "import hetsam.strategies.checks\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stdout + out.stderr


def test_hetsam_testing_is_opt_in_and_says_what_it_needs():
    """``import hetsam`` (and the registry) never import the contracts or pytest; the synthetic
    machine is torch-free; without pytest, a contract names the extra to install."""
    code = ("import sys\nimport hetsam\nfrom hetsam import strategies\nstrategies.names()\n"
            "print(sorted(m for m in ('pytest', 'hetsam.testing') if m in sys.modules))\n"
            "sys.modules['pytest'] = None\n"
            "import hetsam.testing.profiles\nprint('torch' in sys.modules)\n"
            "try:\n    from hetsam.testing import StrategyContract\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "False",
                                       'hetsam.testing needs pytest; install it with: pip install "hetsam[testing]"']
