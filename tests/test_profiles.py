import json

import pytest
from _profiles import synthetic_profile_dict

from hetsam import HetsamInputError
from hetsam.profiling.schema import Profile, load_profile


def test_round_trip(tmp_path):
    p = Profile.from_dict(synthetic_profile_dict())
    path = tmp_path / "p.json"
    p.save(path)
    q = load_profile(path)
    assert q == p
    assert json.loads(path.read_text())["schema_version"] == 1


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.pop("devices"), ["missing", "devices"]),
    (lambda d: d.update(colour="red"), ["unknown", "colour"]),
    (lambda d: d["devices"][0].update(speed=3), ["devices[0]", "speed"]),
    (lambda d: d["devices"][0]["grad_seconds"]["median"].pop(), ["devices[0].grad_seconds.median", "3 values"]),
    (lambda d: d["devices"][0]["grad_seconds"].update(batch_sizes=[8, 8, 32, 64]), ["ascending"]),
    (lambda d: d["devices"][1].update(cores=3), ["devices[1].cores", "pool"]),
    (lambda d: d["devices"][0]["grad_seconds"]["median"].__setitem__(1, -1.0), ["median[1]", "> 0"]),
    (lambda d: d["devices"][0].update(id="tpu:0"), ["devices[0].id"]),
    (lambda d: d["devices"][2].update(kind="cpu"), ["devices[2].kind"]),
    (lambda d: d["links"][0].update(dst="cuda:7"), ["links[0].dst", "cuda:7"]),
    (lambda d: d.update(schema_version=2), ["schema_version"]),
    (lambda d: d["provenance"].update(kind="guessed"), ["provenance.kind"]),
    (lambda d: d["devices"].append(dict(d["devices"][0])), ["more than once"]),
])
def test_validation_names_the_field(mutate, words):
    data = synthetic_profile_dict()
    mutate(data)
    with pytest.raises(HetsamInputError) as info:
        Profile.from_dict(data, where="p.json")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("p.json:")
    for w in words:
        assert w in msg


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 1,')
    with pytest.raises(HetsamInputError, match="not valid JSON"):
        load_profile(path)


def test_missing_file_and_unknown_name():
    with pytest.raises(HetsamInputError, match="no profile"):
        load_profile("no-such-machine")
