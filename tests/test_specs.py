"""Spec scaling (roofline) and the bundled reference profiles."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hetsam.cost.model import CostModel
from hetsam.cost.specscale import (
    REFERENCE_MACHINES,
    assumptions,
    get_spec,
    spec_scale,
    spec_table,
    what_if,
)
from hetsam.errors import HetsamInputError
from hetsam.profiling.schema import Profile, load_profile, reference_profile_names
from tests._profiles import synthetic_profile_dict

ROOT = Path(__file__).resolve().parent.parent
TABLE = json.loads((ROOT / "hetsam" / "data" / "device_specs.json").read_text())


def measured():
    """A synthetic 'measured' profile with a workload (the synthetic fixture has none)."""
    data = synthetic_profile_dict()
    data["devices"] = [d for d in data["devices"] if d["kind"] == "cpu"]
    data["links"] = [l for l in data["links"] if l["dst"] != "cuda:0"]
    data["provenance"] = {"kind": "measured", "machine": "test", "workload": {
        "train_flops_per_sample": 2.4e8, "bytes_per_sample": 1.4e7, "bytes_per_step": 3e6, "kernels_per_step": 190}}
    return Profile.from_dict(data)


SRC = {"cpu:0": "EPYC-Zen5-2vCPU", "cpu:0[0]": "EPYC-Zen5-2vCPU"}


def test_table_rows_cite_sources_and_are_consistent():
    for key, row in TABLE["devices"].items():
        assert len(row["source"]) > 40, key
        if row["kind"] == "cpu":
            types = row.get("core_types") or [{"count": row["cores"], "base_ghz": row["base_ghz"], "flops_per_cycle": row["flops_per_cycle"]}]
            # peak = sum over cores of base clock x FP32 FLOP per cycle
            assert row["peak_fp32_flops"] == pytest.approx(sum(t["count"] * t["base_ghz"] * 1e9 * t["flops_per_cycle"] for t in types), rel=1e-6), key
            assert sum(t["count"] for t in types) == row["cores"]
    wanted = ["A6000", "RTX4060-Laptop", "A100-40GB-SXM", "A100-80GB-SXM", "H100-SXM", "EPYC-7452", "i9-13900HX", "i7-12650H", "Xeon-8480+"]
    assert set(wanted) <= set(spec_table())
    assert get_spec("h100").key == "H100-SXM" and get_spec("a100").key == "A100-80GB-SXM"
    with pytest.raises(HetsamInputError, match="unknown device spec"):
        get_spec("TPUv5")


def test_faster_target_is_faster():
    prof = measured()
    xeon = CostModel(spec_scale(prof, {"cpu:0": "Xeon-8480+"}, source_specs=SRC))
    epyc = CostModel(spec_scale(prof, {"cpu:0": "EPYC-7452"}, source_specs=SRC))
    gpus = {k: CostModel(spec_scale(prof, {"cuda:0": k}, source_specs=SRC)) for k in ("RTX4060-Laptop", "A6000", "H100-SXM")}
    for b in (8, 16, 32, 64):
        assert xeon.grad_seconds("cpu:0", b) < epyc.grad_seconds("cpu:0", b)
        h100, a6000, rtx = (gpus[k].grad_seconds("cuda:0", b) for k in ("H100-SXM", "A6000", "RTX4060-Laptop"))
        assert h100 <= a6000 < rtx
        # a 32-core server socket beats the 2-core machine it was scaled from
        assert epyc.grad_seconds("cpu:0", b) < CostModel(prof).grad_seconds("cpu:0", b)


def test_cpu_ratio_follows_the_roofline_equation():
    """t_t = t_s (w P_s/P_t + (1-w) W_s/W_t), written out from the table's numbers."""
    prof = measured()
    scaled = spec_scale(prof, {"cpu:0[0]": "EPYC-7452"}, source_specs=SRC)
    c = assumptions()
    p_s = TABLE["devices"]["EPYC-Zen5-2vCPU"]["base_ghz"] * 1e9 * 64  # one Zen 5 core
    p_t = 2.35e9 * 32  # one Zen 2 core; Amdahl efficiency of one core is 1
    w_s = 30e9 * min(1, 1 / (c["cpu_bandwidth_saturation"] * 2))
    w_t = 204.8e9 * min(1, 1 / (c["cpu_bandwidth_saturation"] * 32))
    src = prof.device("cpu:0[0]").grad_seconds
    for b, t_s, t_new in zip(src.batch_sizes, src.median, scaled.device("cpu:0[0]").grad_seconds.median):
        compute, memory = 2.4e8 * b / p_s, (3e6 + 1.4e7 * b) / w_s
        w = compute / (compute + memory)
        assert t_new == pytest.approx(t_s * (w * p_s / p_t + (1 - w) * w_s / w_t), rel=1e-9)


def test_gpu_explicit_roofline_equation_and_provenance():
    prof = measured()
    scaled = spec_scale(prof, {"cuda:0": "A6000", "cpu:0": "EPYC-7452"}, source_specs=SRC, name="test box")
    c = assumptions()
    gpu = scaled.device("cuda:0")
    for b, t in zip(gpu.grad_seconds.batch_sizes, gpu.grad_seconds.median):
        device = (190 * c["gpu_seconds_per_kernel"] + 2.4e8 * b / (38.7e12 * c["gpu_compute_efficiency"])
                  + (3e6 + 1.4e7 * b) / (768e9 * c["gpu_memory_efficiency"]))
        assert t == pytest.approx(max(190 * c["host_seconds_per_kernel"], device), rel=1e-9)
    prov = scaled.provenance
    assert prov["kind"] == "spec-scaled" and "A6000" in prov["specs"] and "EPYC-7452" in prov["specs"]
    assert "explicit roofline" in prov["scaled"] and "gpu_compute_efficiency" in prov["assumptions"]
    assert prov["machine"] == "test box"
    assert gpu.spec == "A6000" and gpu.memory_bytes == 48 * 2**30
    links = {(l.src, l.dst): l for l in scaled.links}
    assert links[("cpu:0", "cuda:0")].bytes_per_second == 25e9 and ("cpu:0", "cpu:0") in links


def test_what_if_swaps_a_gpu():
    base = spec_scale(measured(), {"cuda:0": "A6000", "cuda:1": "A6000", "cpu:0": "EPYC-7452"}, source_specs=SRC)
    swapped = what_if(base, {"cuda:0": "H100"})
    c = assumptions()
    old, new = base.device("cuda:0").grad_seconds, swapped.device("cuda:0").grad_seconds
    for b, t_old, t_new in zip(old.batch_sizes, old.median, new.median):
        compute, memory = 2.4e8 * b / 38.7e12, (3e6 + 1.4e7 * b) / 768e9
        w = compute / (compute + memory)
        expected = max(t_old * (w * 38.7e12 / 67e12 + (1 - w) * 768e9 / 3.35e12), 190 * c["host_seconds_per_kernel"])
        assert t_new == pytest.approx(expected, rel=1e-9)
        assert t_new <= t_old
    assert swapped.device("cuda:1") == base.device("cuda:1")
    links = {(l.src, l.dst): l for l in swapped.links}
    assert links[("cpu:0", "cuda:0")].bytes_per_second == 50e9  # PCIe 5 now
    assert links[("cuda:0", "cuda:1")].bytes_per_second == 25e9  # no shared NVLink: through the host
    assert swapped.provenance["what_if"] == "cuda:0=H100-SXM"
    with pytest.raises(HetsamInputError, match="is a gpu device"):
        what_if(base, {"cuda:0": "EPYC-7452"})


def test_what_if_on_a_measured_cpu_profile_adds_a_gpu():
    out = what_if(measured(), {"cuda:0": "RTX4060"})
    assert set(out.device_ids) == {"cpu:0", "cpu:0[0]", "cuda:0"}
    assert CostModel(out).copy_seconds("cpu:0", "cuda:0", 4000) > 0
    assert "(added)" in out.provenance["scaled"]


@pytest.mark.parametrize("name", sorted(REFERENCE_MACHINES) + ["cpu-2core-resnet20"])
def test_reference_profiles_load_and_validate(name):
    assert name in reference_profile_names()
    prof = load_profile(name)
    model = CostModel(prof)
    for dev in prof.device_ids:
        ts = [model.grad_seconds(dev, b) for b in (8, 16, 32, 64, 128)]
        assert all(t > 0 for t in ts) and ts == sorted(ts)
    expected_kind = "measured" if name.startswith("cpu-") else "spec-scaled"
    assert prof.provenance["kind"] == expected_kind


def test_asyncsam_anchor_epyc_about_5x_slower_than_a6000():
    """AsyncSAM paper, section 4.3: ResNet-20/CIFAR-10 ascent on the EPYC 7452 is roughly 5x slower than the A6000 descent."""
    model = CostModel(load_profile("a6000-epyc7452"))
    ratio = model.grad_seconds("cpu:0", 128) / model.grad_seconds("cuda:0", 128)
    assert 3.0 < ratio < 8.0


def test_reference_profiles_are_up_to_date():
    res = subprocess.run([sys.executable, "examples/make_reference_profiles.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_source_spec_found_by_reported_name():
    """A measured GPU named as torch reports it scales by ratio from itself, not by explicit roofline."""
    data = synthetic_profile_dict()
    data["devices"][2]["name"] = "NVIDIA RTX A6000"
    data["provenance"] = {"kind": "measured", "workload": {"train_flops_per_sample": 2.4e8, "bytes_per_sample": 1.4e7,
                                                           "bytes_per_step": 3e6, "kernels_per_step": 190}}
    out = what_if(Profile.from_dict(data), {"cuda:0": "H100"})
    assert "ratio from cuda:0 (A6000)" in out.provenance["scaled"]


def test_parameter_sized_step_costs_scale_with_the_update():
    # the climb, SAMPa's auxiliary work and the time-sliced hand-off keep their measured ratio to the update
    data = measured().to_dict()
    for dev in data["devices"]:
        dev.update(update_seconds=0.002, climb_seconds=0.003, auxiliary_seconds=0.006, sliced_handoff_seconds=0.001)
    scaled = spec_scale(Profile.from_dict(data), {"cpu:0": "Xeon-8480+"}, source_specs=SRC)
    (dev,) = [d for d in scaled.devices if d.id == "cpu:0"]
    assert dev.update_seconds > 0
    for key, ratio in (("climb_seconds", 1.5), ("auxiliary_seconds", 3.0), ("sliced_handoff_seconds", 0.5)):
        assert getattr(dev, key) == pytest.approx(ratio * dev.update_seconds, rel=1e-12), key
    bare = spec_scale(measured(), {"cpu:0": "Xeon-8480+"}, source_specs=SRC)  # not measured: not invented
    assert all(getattr(d, k) is None for d in bare.devices for k in ("auxiliary_seconds", "sliced_handoff_seconds"))
