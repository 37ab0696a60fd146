"""AutoSAM(plan="auto"): profile on first use (cached), plan, log one line (calibration: test_calibration.py)."""

import pytest
import torch
from _alg_refs import batches, loss_fn, mlp

from hetsam import AutoSAM, Plan

OPTIONS = {"profile_budget_seconds": 2.0, "progress": False, "devices": ["cpu:0", "cpu:0[0]"]}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HETSAM_CACHE_DIR", str(tmp_path / "cache"))


def test_first_step_profiles_plans_and_logs_one_line(tmp_path):
    lines = []
    torch.manual_seed(0)
    opt = AutoSAM(mlp(), loss_fn, torch.optim.SGD, planner_options=OPTIONS, log=lines.append, lr=0.05)
    assert opt.plan is None
    data = batches(6)
    with opt:
        for batch in opt.prefetch(data):
            opt.step(batch)
    assert isinstance(opt.plan, Plan) and opt.plan.descent_device.startswith("cpu")
    plan_lines = [line for line in lines if line.startswith("hetsam: plan ")]
    assert len(plan_lines) == 1 and "ms/step" in plan_lines[0] and "\n" not in plan_lines[0]
    assert any("profiled this machine" in line for line in lines)
    assert opt.stats()["steps"] == 6
    report = opt.plan_report()
    assert report["prediction"]["iteration_seconds"] > 0 and report["plan"] == opt.plan.to_dict()
    assert report["chosen_by"] == "planner" and report["share"]["share_level"] == 0.8 and report["why"]

    # the same model structure, batch shape and machine: the cached profile, no new measurement
    again = []
    with AutoSAM(mlp(), loss_fn, torch.optim.SGD, planner_options=OPTIONS, log=again.append, lr=0.05) as opt2:
        opt2.step(data[0], upcoming=data[1:2])
    assert any("using the cached profile" in line for line in again)
    assert opt2.plan.strategy == opt.plan.strategy


def test_resume_into_auto_uses_the_saved_plan_without_profiling():
    with AutoSAM(mlp(), loss_fn, plan=Plan("async_sam", options={"ascent_batch_size": 4}), executor="inline", lr=0.05) as opt:
        data = batches(3)
        for batch in opt.prefetch(data):
            opt.step(batch)
        state = opt.state_dict()
    lines = []
    with AutoSAM(mlp(), loss_fn, planner_options=OPTIONS, executor="inline", log=lines.append, lr=0.05) as fresh:
        fresh.load_state_dict(state)
        assert fresh.plan.strategy == "async_sam" and fresh.plan.option("ascent_batch_size") == 4
    assert lines == []
