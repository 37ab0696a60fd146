"""The planner's options are declared once (``hetsam.planning.options.OPTIONS``): ``plan()``'s
keywords, ``PlannerOptions``'s fields and ``hetsam plan``'s flags have the declared names and
defaults, and each refuses the same out-of-bounds values in one line."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields

import pytest

from hetsam import HetsamInputError
from hetsam.cli import main
from hetsam.cli.plan import add_arguments
from hetsam.planning.options import AUTOSAM, CLI, OPTIONS, PLAN, PlannerOptions
from hetsam.planning.search import check_arguments, plan

PROFILE = "cpu-2core-resnet20"


def _flags() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def test_plan_keywords_fields_and_flags_are_the_declared_ones_with_the_declared_defaults():
    params = inspect.signature(plan).parameters
    declared = {w: {o.name: o.default for o in OPTIONS if w in o.where} for w in (PLAN, AUTOSAM, CLI)}
    assert {n: params[n].default for n in declared[PLAN] if n in params} == declared[PLAN]
    assert {f.name: f.default for f in fields(PlannerOptions)} == declared[AUTOSAM]
    flags = vars(_flags())
    assert {n: flags[n] for n in declared[CLI] if n in flags} == declared[CLI]
    assert len(declared[PLAN]) >= 9 and len(declared[CLI]) >= 9 and len(declared[AUTOSAM]) >= 15


def _out_of_bounds():
    """(option, a value just outside its bounds) for every bounded number."""
    for o in OPTIONS:
        if o.kind not in ("int", "float"):
            continue
        step = 1 if o.kind == "int" else 1e-9
        if o.low is not None:
            yield pytest.param(o, o.low if o.low_open else o.low - step, id=f"{o.name}-low")
        if o.high is not None:
            yield pytest.param(o, o.high + max(step, abs(o.high) * 1e-9), id=f"{o.name}-high")


@pytest.mark.parametrize("o, bad", list(_out_of_bounds()))
def test_every_entry_point_refuses_the_same_out_of_bounds_value(o, bad, capsys):
    if PLAN in o.where:
        with pytest.raises(HetsamInputError, match=rf"^{o.name}="):
            check_arguments(**{o.name: bad})
    if AUTOSAM in o.where:
        with pytest.raises(HetsamInputError, match=rf"^planner_options\['{o.name}'\]="):
            PlannerOptions(**{o.name: bad})
    if CLI in o.where:
        value = str(int(bad)) if o.kind == "int" else repr(float(bad))
        assert main(["plan", "--profile", PROFILE, f"--{o.name.replace('_', '-')}", value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "must be" in err, err
    # and the declared default is accepted everywhere
    if PLAN in o.where:
        check_arguments(**{o.name: o.default})
    if AUTOSAM in o.where:
        assert getattr(PlannerOptions(**{o.name: o.default}), o.name) == o.default


@pytest.mark.parametrize("value, match", [
    ("rst", "must be a list of strategy names"),
    ([], "is empty"),
    (["rst", "nope"], "'nope'"),
    ([1], "must be a list of strategy names"),
])
def test_strategies_are_checked_alike_by_plan_and_planner_options(value, match):
    with pytest.raises(HetsamInputError, match=match):
        check_arguments(strategies=value)
    with pytest.raises(HetsamInputError, match=match):
        PlannerOptions(strategies=value)


def test_choices_and_families_are_checked_alike():
    for name, bad in (("objective", "best"), ("base_optimizer", "lion")):
        with pytest.raises(HetsamInputError, match=rf"^{name}="):
            check_arguments(**{name: bad})
        with pytest.raises(HetsamInputError, match=rf"^planner_options\['{name}'\]="):
            PlannerOptions(**{name: bad})
    # a family's other names are accepted by both (AdamW is Adam's family)
    assert check_arguments(base_optimizer="AdamW")[2] == "adam"
    assert PlannerOptions(base_optimizer="AdamW").base_optimizer == "AdamW"
    with pytest.raises(HetsamInputError, match=r"^unknown option\(s\) nope"):
        check_arguments(nope=1)
