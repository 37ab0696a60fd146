import dataclasses
import json

import pytest

from hetsam import HetsamInputError, Plan
from hetsam.hardware.names import format_cpulist, parse_cpulist, parse_device


def test_plan_json_round_trip():
    p = Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64,
             ascent_batch_size=16, staleness=2, ascent_batches="independent")
    assert Plan.from_json(p.to_json()) == p
    assert json.loads(p.to_json())["schema_version"] == 1 and "predicted" not in p.to_json()


def test_plan_is_frozen_and_replace_validates_again():
    p = Plan("sam")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.strategy = "bogus"
    with pytest.raises(HetsamInputError, match="staleness"):
        dataclasses.replace(p, staleness=-5)
    object.__setattr__(p, "strategy", "bogus")  # behind the frozen dataclass's back
    with pytest.raises(HetsamInputError, match="bogus"):
        p.validate()


def test_old_unversioned_plan_files_still_load_and_drop_the_prediction():
    old = {"strategy": "async_sam", "descent_device": "cuda:0", "ascent_device": "cpu:0", "batch_size": 128,
           "ascent_batch_size": 24, "staleness": 1, "ascent_batches": "lookahead", "sam_probability": None,
           "sampa_lambda": 0.2, "predicted": {"iteration_seconds": 0.0075}}
    p = Plan.from_json(json.dumps(old))
    assert p == Plan("async_sam", "cuda:0", "cpu:0", 128, 24)
    with pytest.raises(HetsamInputError, match="schema_version 7"):
        Plan.from_dict({"schema_version": 7, "strategy": "sgd"})


def test_pool_names_are_canonical():
    assert Plan("sgd", descent_device="cpu:0[1,1]").descent_device == "cpu:0[1]"
    assert Plan("sgd", descent_device="cpu:0[3,1-2]").descent_device == "cpu:0[1-3]"


def test_plan_defaults():
    p = Plan("sgd")
    assert (p.descent_device, p.ascent_device, p.staleness, p.ascent_batches, p.sampa_lambda) == ("cpu", None, 1, "lookahead", 0.2)
    assert p.batch_size is None and p.ascent_batch_size is None and p.sam_probability is None and not p.options


@pytest.mark.parametrize("kwargs, word", [
    (dict(strategy="adam"), "strategy"),
    (dict(strategy="async_sam", batch_size=8, ascent_batch_size=16), "ascent_batch_size=16"),
    (dict(strategy="async_sam", staleness=-1), "staleness=-1"),
    (dict(strategy="rst", sam_probability=1.5), "sam_probability=1.5"),
    (dict(strategy="sampa", sampa_lambda=-0.1), "sampa_lambda=-0.1"),
    (dict(strategy="sgd", batch_size=0), "batch_size=0"),
    (dict(strategy="sgd", descent_device="tpu"), "tpu"),
    (dict(strategy="async_sam", ascent_batches="random"), "random"),
])
def test_plan_validation_names_the_value(kwargs, word):
    with pytest.raises(ValueError, match=word.replace("[", r"\[")):
        Plan(**kwargs)


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
