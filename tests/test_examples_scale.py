"""examples/scale_study.py in a reduced form, on reference machines spec-scaled from a synthetic measurement."""

import importlib.util
import json
import math
from pathlib import Path

from hetsam.cost.specscale import reference_machines
from hetsam.planning.search import plan
from hetsam.profiling.schema import Profile

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LADDER = [8, 16, 32, 64, 128]


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measured():
    """A ResNet-20-sized 'measured' 2-core CPU profile with a workload, as the reference generator expects."""
    def dev(dev_id, cores, per_sample):
        med = [0.004 + per_sample * b for b in LADDER]
        return {"id": dev_id, "kind": "cpu", "name": dev_id, "cores": cores, "threads": cores, "update_seconds": 0.0008,
                "grad_seconds": {"batch_sizes": LADDER, "median": med, "spread": [0.05 * m for m in med]}}
    return Profile.from_dict({
        "schema_version": 1,
        "model": {"name": "resnet20", "parameters": 272474, "parameter_bytes": 1089896, "flops_per_sample": 4.1e7},
        "batch_size": 128, "devices": [dev("cpu:0", 2, 0.0009), dev("cpu:0[0]", 1, 0.0016)],
        "links": [{"src": "cpu:0", "dst": "cpu:0", "bytes_per_second": 1e10, "latency_seconds": 1e-6}],
        "provenance": {"kind": "measured", "workload": {"train_flops_per_sample": 1.23e8, "bytes_per_sample": 2.5e7,
                                                        "bytes_per_step": 5e6, "kernels_per_step": 420}},
    })


def test_scale_study_reduced(tmp_path, capsys):
    machines = reference_machines(_measured())
    paths = {}
    for stem in ("h100-xeon", "2xa100"):
        paths[stem] = tmp_path / f"{stem}.json"
        machines[stem].save(paths[stem])
    study = load_example("scale_study")
    out = tmp_path / "scale.json"
    assert study.main(["--machine", f"{paths['h100-xeon']}:8:2", "--machine", f"{paths['2xa100']}:1",
                       "--nodes", "1", "8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert [(r["machine"], r["nodes"], r["ranks"]) for r in rows] == [
        ("h100-xeon", 1, 8), ("h100-xeon", 8, 64), ("2xa100", 1, 1), ("2xa100", 8, 8)]
    for r in rows:
        assert r["machine"] in printed
        assert math.isfinite(r["overhead_vs_sgd"]) and r["iteration_seconds"] > 0
        assert r["overhead_vs_sgd"] == r["iteration_seconds"] / r["sgd_seconds"] - 1.0
        assert r["sam_overhead_vs_sgd"] > r["overhead_vs_sgd"]  # the chosen plan beats plain SAM
    # 8 ranks per node on two 56-core sockets: each rank's ascent pool has 14 cores at most
    for r in rows[:2]:
        if r["ascent"] and r["ascent"].startswith("cpu"):
            assert r["ascent"] in {f"cpu:0[0-{k - 1}]" for k in range(1, 15)}
    # one rank on one node is the single-node planner's choice
    single = plan(str(paths["2xa100"]))
    assert rows[2]["plan"] == single.plan.to_dict()
    assert rows[2]["allreduce_exposed_seconds"] == 0.0 and rows[3]["allreduce_exposed_seconds"] > 0.0
    # more nodes never make data-parallel SGD faster
    assert rows[1]["sgd_seconds"] >= rows[0]["sgd_seconds"] and rows[3]["sgd_seconds"] >= rows[2]["sgd_seconds"]


def test_scale_study_bad_machine(capsys):
    study = load_example("scale_study")
    assert study.main(["--machine", "h100-xeon", "--nodes", "1"]) == 2
    assert "PROFILE:G" in capsys.readouterr().err
