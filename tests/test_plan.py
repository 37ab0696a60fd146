import pytest

from hetsam import HetsamInputError, Plan
from hetsam.hardware.names import format_cpulist, parse_cpulist, parse_device


def test_plan_json_round_trip():
    p = Plan("async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]", batch_size=64,
             ascent_batch_size=16, staleness=2, ascent_batches="independent", predicted={"iteration_seconds": 0.2})
    assert Plan.from_json(p.to_json()) == p


def test_plan_defaults():
    p = Plan("sgd")
    assert (p.descent_device, p.ascent_device, p.staleness, p.ascent_batches, p.sampa_lambda) == ("cpu", None, 1, "lookahead", 0.2)
    assert p.predicted == {} and p.batch_size is None and p.ascent_batch_size is None and p.sam_probability is None


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
