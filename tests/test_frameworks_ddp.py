"""AutoSAM data-parallel through the frameworks: Lightning's ``strategy="ddp"`` and the Hugging Face
Trainer under torchrun, 2 processes each, gloo on CPU, bounded in time.

Each framework is launched once (``tests/_lightning_ddp_worker.py``, ``tests/_hf_ddp_worker.py``) and
runs several strategies; every rank then runs the raw DDP loop (``AutoSAM(DDP(model))``, the
arrangement of ``examples/ddp.py``) on the very batches the framework gave it. The arithmetic is the
same (Lightning divides the closure's loss by ``accumulate_grad_batches`` = 1, an exact no-op; the
Trainer's loss is the model's own, without ``num_items_in_batch``), so the parameters must be
bit-identical: across the ranks, and with the raw loop.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
TIMEOUT = 240  # seconds for one launch of 2 processes; a hang fails the test instead of CI

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")]

LIGHTNING = ["sam", "async_sam", "rst", "msam", "manual", "sampa", "bf16", "accumulate", "resume"]
HF = ["sam", "async_sam", "rst", "msam", "sampa", "async_sam_bf16_k2", "resume", "auto"]  # auto last: it pins each process to its cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str], out: Path, names: list[str]) -> list[dict]:
    """Run ``cmd`` (which starts 2 ranks) in its own session; kill them all on a timeout."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               HETSAM_CACHE_DIR=str(out / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")])))
    env.pop("LOCAL_RANK", None)  # Lightning starts the second process itself when this is unset
    proc = subprocess.Popen(cmd + [str(out), *names], env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log = proc.communicate(timeout=TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks and any launcher child
        proc.communicate()
        pytest.fail(f"{Path(cmd[-1]).name} did not finish within {TIMEOUT} s (a hang)")
    assert proc.returncode == 0, log[-4000:]
    results = []
    for r in range(2):
        path = out / f"rank{r}.pt"
        assert path.exists(), f"rank {r} wrote no results:\n{log[-4000:]}"
        res = torch.load(path, weights_only=True)
        for name, got in res.items():
            assert "error" not in got, f"rank {r}, {name}:\n{got['error']}"
        assert set(res) == set(names), f"rank {r} stopped early:\n{log[-4000:]}"
        results.append(res)
    return results


@pytest.fixture(scope="module")
def lightning(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_ddp")
    return launch([sys.executable, str(TESTS / "_lightning_ddp_worker.py")], out, LIGHTNING)


@pytest.fixture(scope="module")
def lightning_spawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_spawn")
    return launch([sys.executable, str(TESTS / "_lightning_ddp_worker.py")], out, ["spawn"])


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           str(TESTS / "_hf_ddp_worker.py")]
    return launch(cmd, out, HF)


def _check_equal_to_raw_ddp(results, name):
    a, b = results[0][name], results[1][name]
    assert a["steps"] == b["steps"] > 0
    assert not torch.equal(a["first_batch"], b["first_batch"])  # each rank trained on its own shard
    assert torch.equal(a["params"], b["params"])  # the descent was all-reduced
    assert torch.equal(a["params"], a["ref_params"]) and torch.equal(b["params"], b["ref_params"])
    da, db = a["stats"]["distributed"], b["stats"]["distributed"]
    assert da["world"] == 2 and db["rank"] == 1
    assert (da["local_rank"], da["local_world"]) == (0, 2) and (db["local_rank"], db["local_world"]) == (1, 2)


@pytest.mark.parametrize("name", ["sam", "async_sam", "rst", "msam"])
def test_lightning_ddp_equals_the_raw_ddp_loop(lightning, name):
    _check_equal_to_raw_ddp(lightning, name)
    if name == "async_sam":
        assert lightning[0][name]["stats"]["lookahead_jobs"] > 0


def test_lightning_ddp_spawn_equals_the_raw_ddp_loop(lightning_spawn):
    _check_equal_to_raw_ddp(lightning_spawn, "spawn")
    assert lightning_spawn[0]["spawn"]["stats"]["lookahead_jobs"] > 0


def test_lightning_ddp_refuses_what_it_cannot_all_reduce(lightning):
    for r in range(2):
        assert "manual optimization under strategy='ddp'" in lightning[r]["manual"]["refused"]
        assert "strategy 'sampa'" in lightning[r]["sampa"]["refused"]
        for flag in ("bf16", "accumulate"):  # collected steps would take the descent outside Lightning's DDP
            assert "under strategy='ddp'" in lightning[r][flag]["refused"], lightning[r][flag]["refused"]


@pytest.mark.parametrize("name", ["sam", "async_sam", "rst", "msam", "sampa", "async_sam_bf16_k2"])
def test_trainer_under_torchrun_equals_the_raw_ddp_loop(trainer, name):
    _check_equal_to_raw_ddp(trainer, name)
    assert trainer[0][name]["wrapped"] == "DistributedDataParallel"  # the descent went through the Trainer's DDP


@pytest.mark.parametrize("framework", ["lightning", "trainer"])
def test_per_rank_checkpoints_resume_exactly(request, framework):
    results = request.getfixturevalue(framework)
    for r in range(2):
        got = results[r]["resume"]
        assert got["steps"] > 0 and torch.equal(got["resumed"], got["whole"])
    if framework == "lightning":
        assert results[0]["resume"]["rank_states"] == 2
    else:
        assert results[0]["resume"]["files"] == ["autosam_rank0-of-2.pt", "autosam_rank1-of-2.pt"]


def test_trainer_plan_auto_is_one_plan_on_each_ranks_own_cores(trainer):
    _check_equal_to_raw_ddp(trainer, "auto")
    a, b = trainer[0]["auto"], trainer[1]["auto"]
    assert a["plan"] == b["plan"]
    assert not set(a["affinity"]) & set(b["affinity"])


def test_accelerate_example_under_torchrun_keeps_ranks_identical(tmp_path):
    # examples/accelerate_train.py in two gloo processes, with accelerate's bf16 and accumulation flags
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           str(ROOT / "examples" / "accelerate_train.py"), "--strategy", "async_sam", "--steps", "4", "--precision", "bf16",
           "--accumulate", "2"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-4000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["world_size"] == 2 and line["steps"] == 4 and line["ranks_identical"] is True
    assert line["lookahead_jobs"] > 0 and math.isfinite(line["loss"])
