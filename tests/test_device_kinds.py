"""Device kinds live in one registry (hetsam.hardware.kinds): a kind registered from a test file
is named, planned and simulated with no other module edited, and a model on a kind hetsam does
not know is refused in one line."""

from __future__ import annotations

import contextlib

import pytest
import torch
from _profiles import synthetic_profile_dict
from torch import nn

from hetsam import AutoSAM, HetsamInputError, Plan
from hetsam.autosam.controller import plan_for_model
from hetsam.cost.model import CostModel
from hetsam.hardware.detect import detect
from hetsam.hardware.kinds import (
    DeviceKind,
    kind_of,
    kinds,
    record_kinds,
    register_kind,
    torch_device_name,
    unregister_kind,
)
from hetsam.hardware.names import canonical_name, parse_device
from hetsam.planning.options import PlannerOptions
from hetsam.planning.search import plan
from hetsam.profiling.schema import Profile
from hetsam.simulator import simulate


class FakeKind(DeviceKind):
    """An accelerator timed by its profile entry alone: names, the cost model's facts, no probe."""

    name = "fake"
    record_kind = "fake"
    forms = "'fake:N'"
    accelerator = True

    def detect(self, notes, probes):
        return []


class BrokenProbeKind(FakeKind):
    name = "broken"
    record_kind = "broken"

    def detect(self, notes, probes):
        raise OSError("driver fell over")


@contextlib.contextmanager
def registered(kind):
    register_kind(kind)
    try:
        yield kind
    finally:
        unregister_kind(kind.name)


def _fake_profile() -> Profile:
    """The synthetic machine with its GPU replaced by a fake:0 that computes 4x faster than cpu:0."""
    data = synthetic_profile_dict()
    data["devices"][2] = {"id": "fake:0", "kind": "fake", "name": "Fake accelerator", "update_seconds": 0.0005,
                          "grad_seconds": {"batch_sizes": [8, 64], "median": [0.008, 0.04], "spread": [0.0, 0.0]}}
    data["links"][0] = {"src": "cpu:0", "dst": "fake:0", "bytes_per_second": 2.0e9, "latency_seconds": 1.0e-5}
    return Profile.from_dict(data)


def test_the_builtin_kinds_and_their_names():
    assert [k.name for k in kinds()][:2] == ["cpu", "cuda"] and set(record_kinds()) >= {"cpu", "gpu"}
    assert kind_of("cpu:0[1-3]").pools and not kind_of("cpu").accelerator
    assert kind_of("cuda:1").accelerator and kind_of(parse_device("cuda")).streams
    assert parse_device("cuda:2").kind == "gpu" and str(parse_device("cpu:1[3,1-2]")) == "cpu:1[1-3]"
    assert torch_device_name(torch.device("cpu")) == "cpu"
    assert torch_device_name(torch.device("cuda", 1)) == "cuda:1" and torch_device_name(torch.device("cuda")) == "cuda:0"
    with pytest.raises(HetsamInputError, match="'xpu' is unknown; hetsam knows cpu, cuda"):
        kind_of("xpu:0")


def test_a_registered_kind_is_named_and_refused_after_unregistering():
    with registered(FakeKind()):
        assert canonical_name("fake:3") == "fake:3" and parse_device("fake").canonical() == parse_device("fake:0")
        assert not parse_device("fake:0").overlaps(parse_device("fake:1"))
        assert not parse_device("fake:0").overlaps(parse_device("cpu"))
        with pytest.raises(HetsamInputError, match="fake devices have no core pools"):
            parse_device("fake:0[1]")
        with pytest.raises(HetsamInputError, match="registered already"):
            register_kind(FakeKind())
    with pytest.raises(HetsamInputError, match=r"unknown device 'fake:0': use .*'cuda:N'$"):
        parse_device("fake:0")
    with pytest.raises(HetsamInputError, match="built-in"):
        unregister_kind("cpu")


def test_a_fake_kind_is_planned_and_simulated_without_editing_hetsam():
    with registered(FakeKind()):
        profile = _fake_profile()
        cm = CostModel(profile)
        assert cm.accelerator("fake:0") and cm.kind("fake:0") == "fake" and not cm.shares_cores("cpu:0", "fake:0")

        report = plan(profile, batch_size=64, strategies=("sgd", "sam", "async_sam"))
        on_fake = [c for c in report.candidates if "fake:0" in (c.plan.descent_device, c.plan.ascent_device)]
        assert {c.plan.strategy for c in on_fake} >= {"sgd", "sam", "async_sam"}
        assert report.plan.descent_device == "fake:0"  # 4x faster than the CPU: it trains

        # SGD on fake:0 is its gradient plus its update, as its profile entry says
        sgd = simulate(Plan("sgd", "fake:0", batch_size=64), profile, iterations=50, jitter=False, steady_state=False)
        assert sgd.iteration_seconds["mean"] == pytest.approx(0.04 + 0.0005, rel=1e-6)

        # the ascent on the fake device while the CPU descends: the copies cross the cpu:0 -> fake:0 link
        pair = next(c.plan for c in report.candidates if c.plan.strategy == "async_sam"
                    and (c.plan.descent_device, c.plan.ascent_device) == ("cpu:0", "fake:0"))
        result = simulate(pair, profile, iterations=50, jitter=False, steady_state=False)
        assert result.utilisation["fake:0"] > 0 and result.utilisation["cpu:0"] > 0
        assert any("fake:0" in link for link in result.link_utilisation)


def test_a_profile_naming_an_unregistered_kind_is_refused():
    with registered(FakeKind()):
        data = _fake_profile().to_dict()
    with pytest.raises(HetsamInputError, match="fake:0"):
        Profile.from_dict(data)


def test_detection_survives_a_kind_whose_probe_fails():
    with registered(BrokenProbeKind()):
        found = detect(gpus=True, probe_torch=False)
    assert any(d.kind == "cpu" for d in found.devices)
    assert any(n.startswith("broken: could not collect (driver fell over)") for n in found.notes)


def _loss(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_a_model_on_an_unknown_kind_is_refused_in_one_line():
    model = nn.Linear(4, 2, device="meta")
    for attempt in (lambda: AutoSAM(model, _loss, plan="sam", lr=0.1),
                    lambda: AutoSAM(model, _loss, plan="auto", lr=0.1),
                    lambda: plan_for_model(model, _loss, (torch.zeros(8, 4), torch.zeros(8, 2)),
                                           PlannerOptions(profile=Profile.from_dict(synthetic_profile_dict())))):
        with pytest.raises(HetsamInputError) as info:
            attempt()
        message = str(info.value)
        assert "\n" not in message and "'meta'" in message and "it knows cpu, cuda" in message
