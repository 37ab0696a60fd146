"""AutoSAM under torch.distributed: 2 gloo ranks on CPU, started by the test, bounded in time.

One pair of rank processes (``tests/_ddp_worker.py``) runs every scenario, 20 steps each, and
reports parameters, losses, DDP's all-reduce count (a comm hook) and failures; the checks here
compare them across ranks, across executors, and with independent references written out in
this file or in ``_alg_refs`` (per-rank AsyncSAM and SAM, global-batch SAMPa).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _alg_refs import (
    SGD_KW,
    Scratch,
    batches,
    flat,
    loss_fn,
    mlp,
    perturbation,
    ref_sampa,
    snapshot,
)

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_ddp_worker.py"
WORLD = 2
STEPS, B, RHO = 20, 16, 0.05
TIMEOUT = 90  # seconds for the whole pair of processes; a hang fails the test instead of CI

SCENARIOS = [
    "async_lookahead:threads", "async_lookahead:inline",
    "async_independent:threads", "async_independent:inline",
    "sampa_local:threads", "sampa_local:inline",
    "sampa_pairs", "sampa_pairs_mismatch", "sam", "rst",
    "fault_raise", "fault_degrade", "agree_plan", "unfreeze:threads",
    "overlap_warning", "auto_pairs_refused", "auto",  # last: plan="auto" pins each rank's process to its cores
]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run every scenario on 2 ranks; returns [rank0 results, rank1 results]."""
    out = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    procs = []
    for rank in range(WORLD):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1", HETSAM_CACHE_DIR=str(out / "cache"),
                   PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *SCENARIOS], env=env, cwd=str(ROOT),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the rank processes did not finish within {TIMEOUT} s (a hang)")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r, res in enumerate(results):
        for name, got in res.items():
            assert "error" not in got, f"rank {r}, {name}:\n{got['error']}"
        assert set(res) == set(SCENARIOS), f"rank {r} stopped early:\n{logs[r]}"
    return results


def data(pairs: bool = False):
    """The global batches the worker uses, and rank r's shard of each."""
    full = batches(STEPS + 1, b=B)
    if pairs:
        return full, [full] * WORLD
    n = B // WORLD
    return full, [[(x[r * n:(r + 1) * n], y[r * n:(r + 1) * n]) for x, y in full] for r in range(WORLD)]


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


# ---- independent references --------------------------------------------------------------
def ref_ddp_async_sam(shards, tau, b_prime, policy, rho=RHO):
    """Data-parallel AsyncSAM with per-rank perturbation, from the equations:
    e_r = ρ ĝ_r/‖ĝ_r‖, ĝ_r = g(θ_{t−τ}; first b' of rank r's shard of B_t (lookahead) or of
    B_{t−τ} (independent)); θ_{t+1} = SGD(θ_t, mean_r g(θ_t + e_r; B^r_t))."""
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), **SGD_KW)
    scratch = Scratch(model)
    history = []
    for t in range(STEPS):
        theta = snapshot(model)
        history.append(theta)
        grads = []
        for r in range(WORLD):
            e = None
            if t >= tau:
                x, y = shards[r][t if policy == "lookahead" else t - tau]
                e = perturbation(scratch.grad(history[t - tau], (x[:b_prime], y[:b_prime])), rho)
            point = theta if e is None else [p + ei for p, ei in zip(theta, e)]
            grads.append(scratch.grad(point, shards[r][t]))
        opt.zero_grad()
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.grad = sum(g[i] for g in grads) / WORLD
        opt.step()
    return flat(model)


# ---- lock-step and identical parameters ----------------------------------------------------
@pytest.mark.parametrize("scenario", ["async_lookahead:threads", "async_independent:threads", "sampa_local:threads",
                                      "sampa_pairs", "sam", "rst", "fault_degrade"])
def test_ranks_are_bit_identical_after_20_steps(ranks, scenario):
    r0, r1 = ranks[0][scenario], ranks[1][scenario]
    assert len(r0["losses"]) == len(r1["losses"]) == STEPS
    assert torch.equal(r0["params"], r1["params"])
    if scenario == "sampa_pairs":  # rank 0's running statistics are copied to its partner
        assert all(torch.equal(a, b) for a, b in zip(r0["buffers"], r1["buffers"]))


@pytest.mark.parametrize("policy", ["async_lookahead", "async_independent", "sampa_local"])
def test_threaded_and_inline_executors_agree_per_rank(ranks, policy):
    for r in range(WORLD):
        threaded, inline = ranks[r][f"{policy}:threads"], ranks[r][f"{policy}:inline"]
        assert torch.equal(threaded["params"], inline["params"])
        assert threaded["losses"] == inline["losses"]
    assert ranks[0][f"{policy}:threads"]["stats"]["executor"]["mode"] == "worker"  # a real worker thread ran


# ---- semantics -------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["lookahead", "independent"])
def test_async_sam_is_per_rank_perturbation_with_an_averaged_descent(ranks, policy):
    _, shards = data()
    want = ref_ddp_async_sam(shards, tau=1, b_prime=4, policy=policy)
    assert rel_err(ranks[0][f"async_{policy}:threads"]["params"], want) < 1e-5


def test_sam_matches_per_rank_reference(ranks):
    _, shards = data()
    model = mlp(bn=True)
    opt = torch.optim.SGD(model.parameters(), **SGD_KW)
    scratch = Scratch(model)
    for t in range(STEPS):
        theta = snapshot(model)
        grads = []
        for r in range(WORLD):
            e = perturbation(scratch.grad(theta, shards[r][t]), RHO)  # e_r from rank r's own shard
            grads.append(scratch.grad([p + ei for p, ei in zip(theta, e)], shards[r][t]))
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.grad = sum(g[i] for g in grads) / WORLD
        opt.step()
    assert rel_err(ranks[0]["sam"]["params"], flat(model)) < 1e-5


class PerShard(torch.nn.Module):
    """The model applied to each rank's shard on its own (BatchNorm statistics per shard, as
    under DDP); the mean loss over the batch is then the mean over shards of their mean losses."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.cat([self.model(chunk) for chunk in x.chunk(WORLD)])


def test_sampa_with_averaged_g_y_is_global_batch_sampa(ranks):
    full, _ = data()
    want = flat(ref_sampa(PerShard(mlp(bn=True)), full[:STEPS], lam=0.2, rho=RHO))
    assert rel_err(ranks[0]["sampa_local:threads"]["params"], want) < 1e-5


def test_sampa_pairs_are_single_process_sampa_on_the_pairs_batches(ranks):
    full, _ = data(pairs=True)
    want = flat(ref_sampa(mlp(bn=True), full[:STEPS], lam=0.2, rho=RHO))
    got = ranks[0]["sampa_pairs"]
    assert rel_err(got["params"], want) < 1e-5
    assert got["stats"]["distributed"]["sampa_pairs"] and got["stats"]["pair_role"] == "x"
    assert ranks[1]["sampa_pairs"]["stats"]["pair_role"] == "y"


def test_sampa_pairs_bit_for_bit_against_single_process_autosam(ranks):
    from hetsam import AutoSAM, Plan

    torch.use_deterministic_algorithms(True)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = mlp(bn=True)
        full, _ = data(pairs=True)
        from _alg_refs import loss_fn

        with AutoSAM(model, loss_fn, torch.optim.SGD, rho=RHO, plan=Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
                     executor="inline", **SGD_KW) as opt:
            losses = [opt.step(b) for b in full[:STEPS]]
    finally:
        torch.set_num_threads(old)
        torch.use_deterministic_algorithms(False)
    got = ranks[0]["sampa_pairs"]
    assert torch.equal(got["params"], flat(model))
    assert got["losses"] == losses  # both return L(y_{t+1}; B_t)


def test_sampa_pairs_refuse_pairs_fed_different_batches(ranks):
    for r in range(WORLD):
        fails = ranks[r]["sampa_pairs_mismatch"]["failures"]
        assert fails and fails[0]["step"] == 0 and fails[0]["type"] == "HetsamInputError"
        assert "different batches" in fails[0]["message"]


def test_rst_takes_the_same_coin_on_every_rank(ranks):
    s0, s1 = ranks[0]["rst"]["stats"], ranks[1]["rst"]["stats"]
    assert s0["seed"] == s1["seed"] and s0["sam_steps"] == s1["sam_steps"]
    assert 0 < s0["sam_steps"] < STEPS


# ---- the ascent never reaches DDP's reducer ------------------------------------------------
@pytest.mark.parametrize("scenario,per_step", [("async_lookahead:threads", 1), ("async_lookahead:inline", 1),
                                               ("sampa_local:inline", 1), ("sam", 1), ("sampa_pairs", 0)])
def test_ascent_passes_trigger_no_ddp_allreduce(ranks, scenario, per_step):
    # the small model fits one DDP bucket: exactly one all-reduce per descent backward
    for r in range(WORLD):
        assert ranks[r][scenario]["ddp_allreduces"] == per_step * STEPS


def test_agreement_costs_one_small_allreduce_per_waiting_step(ranks):
    d = ranks[0]["async_lookahead:threads"]["stats"]["distributed"]
    assert d["agreements"] == STEPS - 1  # every step t >= τ waits for one ascent job
    d = ranks[0]["sampa_local:threads"]["stats"]["distributed"]
    assert d["agreements"] == STEPS and d["reductions"] == STEPS  # and g_y' is averaged once per step


# ---- faults --------------------------------------------------------------------------------
def test_worker_fault_on_one_rank_ends_both_ranks_in_the_same_step(ranks):
    f0, f1 = ranks[0]["fault_raise"]["failures"], ranks[1]["fault_raise"]["failures"]
    assert len(f0) == len(f1) == 2  # the first failure, then a retry that fails again, never a hang
    assert [f["step"] for f in f0] == [f["step"] for f in f1]
    assert f0[0]["step"] == 4  # rank 1's 4th job (submitted at step 3) is the one step 4 needs
    assert all(f["type"] == "WorkerFailure" for f in f0 + f1)
    assert "ascent boom" in f1[0]["cause"]
    assert "rank(s) [1]" in f0[0]["message"]


def test_worker_fault_with_degrade_carries_both_ranks_on(ranks):
    s0, s1 = ranks[0]["fault_degrade"], ranks[1]["fault_degrade"]
    assert s1["stats"]["executor"]["mode"] == "degraded" and s0["stats"]["executor"]["mode"] == "worker"
    assert s0["stats"]["distributed"]["degraded_ranks"] == s1["stats"]["distributed"]["degraded_ranks"] == (1,)
    assert not s0["failures"] and not s1["failures"]
    # the degraded rank recomputes its ascent on the descent device with the same thread count,
    # so the run is bit-identical to the one without a fault
    ref = ranks[0]["async_lookahead:threads"]
    assert torch.equal(s0["params"], ref["params"]) and s0["losses"] == ref["losses"]


# ---- the example ---------------------------------------------------------------------------
def test_ddp_example_runs_under_torchrun(tmp_path):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           str(ROOT / "examples" / "ddp.py"), "--strategy", "async_sam", "--ascent-batch-size", "8", "--steps", "12",
           "--json", str(out)]
    try:
        done = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"examples/ddp.py did not finish within {TIMEOUT} s")
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    result = json.loads(out.read_text())
    assert result["ranks"] == 2 and result["steps"] == 12 and result["ranks_bit_identical"]
    assert result["last_loss"] < result["first_loss"]
    assert result["stats"]["distributed"]["agreements"] == 11


def test_every_rank_runs_rank_0s_plan(ranks):
    from hetsam import Plan

    got = [Plan.from_json(ranks[r]["agree_plan"]["plan"]) for r in range(WORLD)]
    assert got[0] == got[1] == Plan(strategy="async_sam", options={"ascent_batch_size": 4, "staleness": 1})


def test_add_param_group_under_ddp_keeps_the_ranks_identical(ranks):
    a, b = ranks[0]["unfreeze:threads"], ranks[1]["unfreeze:threads"]
    assert torch.equal(a["params"], b["params"])
    n = a["first_before"].numel()
    assert not torch.equal(a["params"][:n], a["first_before"])  # the unfrozen layer trained after joining
    assert a["stats"]["steps"] == 20 and a["stats"]["lookahead_jobs"] > 0


def test_add_param_group_refuses_parameters_ddp_does_not_reduce(tmp_path):
    from torch.nn.parallel import DistributedDataParallel

    from hetsam import AutoSAM, HetsamInputError

    if torch.distributed.is_initialized():
        pytest.skip("a process group exists already")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = mlp()
        first = list(net.parameters())[:2]
        for p in first:
            p.requires_grad_(False)
        model = DistributedDataParallel(net)
        with AutoSAM(model, loss_fn, plan="sam", lr=0.1) as opt:
            for p in first:
                p.requires_grad_(True)
            with pytest.raises(HetsamInputError, match="never all-reduces them"):
                opt.add_param_group({"params": first})
    finally:
        torch.distributed.destroy_process_group()


# ---- plan="auto" and the node's cores --------------------------------------------------------
def test_auto_plan_is_one_plan_on_disjoint_cores(ranks):
    a, b = ranks[0]["auto"], ranks[1]["auto"]
    assert a["plan"] == b["plan"]  # rank 0's choice, identical text on both ranks
    assert a["shard"] == (0, 2) and b["shard"] == (1, 2)  # known at construction, before any step
    assert a["shard_after"] == a["shard"] and b["shard_after"] == b["shard"]
    assert a["layout"] == (0, 2) and b["layout"] == (1, 2)
    assert a["affinity"] and b["affinity"] and not set(a["affinity"]) & set(b["affinity"])
    if a["affinity_before"] == b["affinity_before"] and len(a["affinity_before"]) >= 2:  # split equally, contiguous
        n = len(a["affinity_before"]) // 2
        assert a["affinity"] == a["affinity_before"][:n] and b["affinity"] == a["affinity_before"][n:2 * n]
    assert a["threads"] <= len(a["affinity"]) and b["threads"] <= len(b["affinity"])
    assert torch.equal(a["params"], b["params"])
    assert a["stats"]["distributed"]["cpus"] == a["affinity"]


def test_auto_plan_refuses_sampa_pairs_it_cannot_promise(ranks):
    for r in range(WORLD):
        assert "sampa_pairs=True with plan='auto'" in ranks[r]["auto_pairs_refused"]["refused"]


def test_given_plan_whose_pools_meet_across_ranks_is_warned_about(ranks):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: the plan's second pool does not exist here")
    for r in range(WORLD):
        lines = [w for w in ranks[r]["overlap_warning"]["warnings"] if "both pin their CPU pools" in w]
        assert len(lines) == 1 and "ranks 0 and 1" in lines[0]


def test_an_agreed_gpu_plan_runs_on_each_ranks_own_gpu():
    """localize maps rank 0's GPU descent onto this rank's model GPU (names only: no GPU needed) and
    refuses, in one line, a spare-GPU ascent it cannot give each rank its own share of."""
    from hetsam import HetsamInputError, Plan
    from hetsam.execution.distributed.context import localize

    class Rank1:
        device = torch.device("cuda", 1)

    got = localize(Plan(strategy="async_sam", descent_device="cuda:0", ascent_device="cpu:0[0-3]"), Rank1())
    assert got.descent_device == "cuda:1" and got.ascent_device == "cpu:0[0-3]"
    assert localize(Plan(strategy="sam", descent_device="cuda:0"), Rank1()).descent_device == "cuda:1"
    with pytest.raises(HetsamInputError, match="spare GPU"):
        localize(Plan(strategy="async_sam", descent_device="cuda:0", ascent_device="cuda:2"), Rank1())

    class OnCpu:
        device = torch.device("cpu")

    plan = Plan(strategy="async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]")
    assert localize(plan, OnCpu()) is plan  # CPU pools are per rank through the affinity already
