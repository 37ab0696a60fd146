import dataclasses
import json
import warnings

import pytest

from hetsam import HetsamInputError, Plan
from hetsam.hardware.names import format_cpulist, parse_cpulist, parse_device

ASYNC = {"ascent_batch_size": 16, "staleness": 2, "ascent_batches": "independent"}


@pytest.mark.parametrize("plan", [
    Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64, options=ASYNC),
    Plan("async_sam"), Plan("rst", options={"sam_probability": 0.25}), Plan("sampa", "cpu", "cpu", options={"sampa_lambda": 0.7}),
    Plan("interval", options={"k": 3}), Plan("late_phase"), Plan("msam", options={"rho": 1.0}), Plan("sgd"), Plan("sam"),
])
def test_plan_json_round_trip(plan):
    assert Plan.from_json(plan.to_json()) == plan and Plan.from_dict(plan.to_dict()) == plan
    data = json.loads(plan.to_json())
    assert data["schema_version"] == 2 and "predicted" not in data
    assert set(data) <= {"schema_version", "strategy", "descent_device", "ascent_device", "batch_size", "options"}
    assert data.get("options", {}) == {o.name: plan.option(o.name) for o in plan.spec.options}


def test_an_sgd_plan_carries_no_setting_of_another_strategy():
    data = Plan("sgd").to_dict()
    assert "options" not in data and not {"staleness", "sampa_lambda", "ascent_batch_size"} & set(data)
    assert Plan("sam").to_dict().get("options") is None
    with pytest.raises(HetsamInputError, match=r"strategy 'sgd' has no option 'sampa_lambda' \(its options: none\)"):
        Plan("sgd", options={"sampa_lambda": 0.9})
    with pytest.raises(HetsamInputError, match="its options: ascent_batch_size, staleness, ascent_batches"):
        Plan("async_sam", options={"sam_probability": 0.5})


def test_every_option_is_present_at_its_default_and_read_through_the_plan():
    p = Plan("async_sam")
    assert p.options == {"ascent_batch_size": None, "staleness": 1, "ascent_batches": "lookahead"}
    assert p.option("staleness") == 1 and p.spec.staleness(p) == 1 and p.spec.ascent_batch_size(p, 64) == 64
    assert Plan("rst").option("sam_probability") == 0.5 and Plan("sampa").option("sampa_lambda") == 0.2
    assert Plan("async_sam", options={"staleness": 1}) == p and hash(Plan("async_sam", options={"staleness": 1})) == hash(p)
    assert Plan("sgd").option("staleness", None) is None
    with pytest.raises(HetsamInputError, match="strategy 'sgd' has no option 'staleness'"):
        Plan("sgd").option("staleness")
    with pytest.raises(AttributeError, match=r"plan.option\('staleness'\)"):
        p.staleness  # noqa: B018  (schema 1's field)


def test_plan_is_frozen_and_replace_validates_again():
    p = Plan("async_sam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.strategy = "bogus"
    with pytest.raises(HetsamInputError, match="staleness"):
        dataclasses.replace(p, options={"staleness": -5})
    assert dataclasses.replace(p, options={**p.options, "staleness": 2}).option("staleness") == 2
    object.__setattr__(p, "strategy", "bogus")  # behind the frozen dataclass's back
    with pytest.raises(HetsamInputError, match="bogus"):
        p.validate()


OLD = {"strategy": "async_sam", "descent_device": "cuda:0", "ascent_device": "cpu:0", "batch_size": 128,
       "ascent_batch_size": 24, "staleness": 1, "ascent_batches": "lookahead", "sam_probability": None,
       "sampa_lambda": 0.2}


def test_old_unversioned_plan_files_still_load_and_drop_the_prediction():
    p = Plan.from_json(json.dumps({**OLD, "predicted": {"iteration_seconds": 0.0075}}))
    assert p == Plan("async_sam", "cuda:0", "cpu:0", 128, options={"ascent_batch_size": 24})
    with pytest.raises(HetsamInputError, match="schema_version 7"):
        Plan.from_dict({"schema_version": 7, "strategy": "sgd"})


def test_version_1_plans_load_to_the_same_plan():
    v1 = {"schema_version": 1, **OLD, "staleness": 2, "ascent_batches": "independent"}
    p = Plan.from_dict(v1)
    assert p == Plan("async_sam", "cuda:0", "cpu:0", 128, options={"ascent_batch_size": 24, "staleness": 2,
                                                                   "ascent_batches": "independent"})
    assert Plan.from_json(p.to_json()) == p and p.to_dict()["schema_version"] == 2
    defaults = {k: OLD[k] for k in ("ascent_batch_size", "staleness", "ascent_batches", "sam_probability", "sampa_lambda")}
    defaults["ascent_batch_size"] = None
    for name, options in (("rst", {"sam_probability": 0.5}), ("sampa", {"sampa_lambda": 0.2}), ("sgd", {}), ("sam", {})):
        assert Plan.from_dict({"schema_version": 1, "strategy": name, **defaults}) == Plan(name, options=options)
    assert Plan.from_dict({"schema_version": 1, "strategy": "rst", **defaults, "sam_probability": 0.3}).option(
        "sam_probability") == 0.3
    assert Plan.from_dict({"schema_version": 1, "strategy": "msam", **defaults, "options": {"rho": 1.0}}) == \
        Plan("msam", options={"rho": 1.0})


@pytest.mark.parametrize("field, value", [("staleness", 2), ("sampa_lambda", 0.9), ("ascent_batch_size", 8),
                                          ("ascent_batches", "independent"), ("sam_probability", 0.3)])
def test_a_version_1_setting_the_strategy_does_not_have_is_refused_unless_default(field, value):
    with pytest.raises(HetsamInputError, match=f"{field}=.* is not a setting of strategy 'sgd'") as info:
        Plan.from_dict({"schema_version": 1, "strategy": "sgd", field: value})
    assert "\n" not in str(info.value)
    with pytest.raises(HetsamInputError, match="in 'options' since schema_version 2"):
        Plan.from_dict({"schema_version": 2, "strategy": "async_sam", field: value})


def test_schema_1_keywords_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="options=") as caught:
        p = Plan("async_sam", batch_size=64, ascent_batch_size=16, staleness=2)
    assert len(caught) == 1 and p.options == {"ascent_batch_size": 16, "staleness": 2, "ascent_batches": "lookahead"}
    with pytest.warns(FutureWarning):
        assert Plan("sgd", sampa_lambda=0.2) == Plan("sgd")  # schema 1's default: dropped
    with pytest.raises(HetsamInputError, match="sampa_lambda=0.9 is not a setting of strategy 'sgd'"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Plan("sgd", sampa_lambda=0.9)


def test_pool_names_are_canonical():
    assert Plan("sgd", descent_device="cpu:0[1,1]").descent_device == "cpu:0[1]"
    assert Plan("sgd", descent_device="cpu:0[3,1-2]").descent_device == "cpu:0[1-3]"


def test_plan_defaults():
    p = Plan("sgd")
    assert (p.descent_device, p.ascent_device, p.batch_size, p.options) == ("cpu", None, None, {})
    assert [f.name for f in dataclasses.fields(p)] == ["strategy", "descent_device", "ascent_device", "batch_size", "options"]


@pytest.mark.parametrize("kwargs, word", [
    (dict(strategy="adam"), "strategy"),
    (dict(strategy="async_sam", batch_size=8, options={"ascent_batch_size": 16}), "'ascent_batch_size'.=16 exceeds"),
    (dict(strategy="async_sam", options={"staleness": -1}), "'staleness'.=-1"),
    (dict(strategy="async_sam", options={"staleness": 17}), "'staleness'.=17"),
    (dict(strategy="rst", options={"sam_probability": 1.5}), "'sam_probability'.=1.5"),
    (dict(strategy="rst", options={"sam_probability": None}), "'sam_probability'.=None"),
    (dict(strategy="sampa", options={"sampa_lambda": -0.1}), "'sampa_lambda'.=-0.1"),
    (dict(strategy="sgd", batch_size=0), "batch_size=0"),
    (dict(strategy="sgd", descent_device="tpu"), "tpu"),
    (dict(strategy="async_sam", options={"ascent_batches": "random"}), "random"),
    (dict(strategy="async_sam", options={"colour": 1}), "no option 'colour'"),
    (dict(strategy="sgd", colour=1), "unknown field"),
])
def test_plan_validation_names_the_value(kwargs, word):
    with pytest.raises(ValueError, match=word.replace("[", r"\[")) as info:
        Plan(**kwargs)
    assert "\n" not in str(info.value)


def test_plan_from_json_rejects_unknown_and_missing():
    with pytest.raises(HetsamInputError, match="colour"):
        Plan.from_json('{"strategy": "sgd", "colour": 1}')
    with pytest.raises(HetsamInputError, match="strategy"):
        Plan.from_json('{"batch_size": 4}')
    with pytest.raises(HetsamInputError, match="JSON"):
        Plan.from_json('{"strategy": ')


def test_device_names():
    assert str(parse_device("cpu:0[0-3,8]")) == "cpu:0[0-3,8]"
    assert parse_device("cpu").canonical() == parse_device("cpu:0")
    assert not parse_device("cpu:0[0]").overlaps(parse_device("cpu:0[1]"))
    assert parse_device("cpu:0").overlaps(parse_device("cpu:0[1]"))
    assert not parse_device("cpu:0").overlaps(parse_device("cuda:0"))
    assert parse_cpulist("0-2,8") == (0, 1, 2, 8) and format_cpulist((8, 0, 1, 2)) == "0-2,8"
    with pytest.raises(HetsamInputError, match="cuda:0\\[1\\]"):
        parse_device("cuda:0[1]")
