"""One rank of the distributed tests (``tests/test_distributed.py`` starts two of these).

Usage: ``python tests/_ddp_worker.py OUT_DIR SCENARIO [SCENARIO ...]`` with the usual
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` environment. Every scenario trains a
fresh DDP model for 20 steps on CPU (gloo, 1 intra-op thread, deterministic algorithms; ``auto``:
3 steps of plan="auto", which pins the process to its share of the cores, so it comes last) and
the rank writes what it saw to ``OUT_DIR/rank{r}.pt`` (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import os
import sys
import traceback

import torch
import torch.distributed as dist
from _alg_refs import SGD_KW, batches, loss_fn, mlp
from test_executor_threads import failing_on_worker
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

import hetsam
from hetsam import AutoSAM, Plan, WorkerFailure
from hetsam.execution.distributed import agree_plan
from hetsam.execution.threads import ThreadedExecutor

STEPS = 20
B = 16  # global batch; each of the 2 ranks gets 8 samples (pairs: both get all 16)


def shard(batch, rank, world, pairs=False):
    if pairs:
        return batch
    x, y = batch
    n = len(x) // world
    return x[rank * n:(rank + 1) * n], y[rank * n:(rank + 1) * n]


PLANS = {
    "async_lookahead": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4, "ascent_batches": "lookahead"}),
    "async_independent": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4, "ascent_batches": "independent"}),
    "sampa_local": Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
    "sampa_pairs": Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
    "sampa_pairs_mismatch": Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
    "sam": Plan(strategy="sam"),
    "rst": Plan(strategy="rst", options={"sam_probability": 0.5}),
    "fault_raise": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
    "fault_degrade": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
    "unfreeze": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
}


AUTO = {"profile_budget_seconds": 1.0, "progress": False, "devices": ["cpu:0"]}


def run_auto(name: str) -> dict:
    """plan='auto' under DDP: the rank context exists at construction; every rank pins its own
    share of the node's cores, then runs rank 0's plan."""
    import warnings

    if name == "overlap_warning":  # a given plan pinning both ranks' pools to the same cores
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt = AutoSAM(DistributedDataParallel(mlp()), loss_fn, plan=Plan(strategy="async_sam", descent_device="cpu:0[0]",
                                                                             ascent_device="cpu:0[1]"), **SGD_KW)
            opt.close()
        return {"warnings": [str(w.message) for w in caught]}
    if name == "auto_pairs_refused":
        try:
            AutoSAM(DistributedDataParallel(mlp()), loss_fn, plan="auto", sampa_pairs=True, **SGD_KW)
        except hetsam.HetsamInputError as exc:
            return {"refused": str(exc)}
        return {"refused": None}
    before = sorted(os.sched_getaffinity(0))
    opt = AutoSAM(DistributedDataParallel(mlp()), loss_fn, plan="auto", planner_options=AUTO, log=lambda line: None,
                  **SGD_KW)
    ctx = opt.distributed
    out = {"affinity_before": before, "affinity": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
           "shard": (ctx.data_rank, ctx.data_world), "layout": (ctx.layout.local_rank, ctx.layout.local_world)}
    data = [shard(b, dist.get_rank(), dist.get_world_size()) for b in batches(4, b=B)]
    with opt:
        out["losses"] = [opt.step(b, upcoming=data[t + 1:t + 2]) for t, b in enumerate(data[:3])]
        out["plan"] = opt.plan.to_json()
        out["shard_after"] = (opt.distributed.data_rank, opt.distributed.data_world)
        out["stats"] = opt.stats()
    out["params"] = torch.cat([p.detach().reshape(-1) for p in opt.model.module.parameters()])
    return out


def run(scenario: str, rank: int, world: int) -> dict:
    name, _, executor = scenario.partition(":")  # e.g. "async_lookahead:inline"
    if name in ("overlap_warning", "auto_pairs_refused", "auto"):
        return run_auto(name)
    if name == "agree_plan":  # each rank proposes its own plan; all must run rank 0's
        mine = Plan(strategy="async_sam", options={"ascent_batch_size": 4 + rank, "staleness": 1 + rank})
        return {"plan": agree_plan(DistributedDataParallel(mlp()), mine).to_json()}
    plan = PLANS[name]
    pairs = name.startswith("sampa_pairs")
    model = DistributedDataParallel(mlp(bn=True))
    counter = [0]

    def counting_hook(state, bucket):  # DDP's own all-reduces, one per bucket
        counter[0] += 1
        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_hook)
    loss = loss_fn
    kw = {}
    if name.startswith("fault"):
        executor = "threads"
        kw["on_worker_failure"] = name.split("_")[1]
        if rank == 1:
            loss = failing_on_worker(4)
    ex = ThreadedExecutor(share="concurrent") if executor in ("threads", "") else "inline"
    first = list(model.module.parameters())[:2]
    if name == "unfreeze":  # DDP reduces every parameter; AutoSAM starts without the first layer
        kw["params"] = list(model.module.parameters())[2:]
    opt = AutoSAM(model, loss, torch.optim.SGD, rho=0.05, plan=plan, executor=ex,
                  sampa_pairs=None if pairs else False if name.startswith("sampa") else None, **kw, **SGD_KW)
    data = batches(STEPS + 1, b=B)
    if name == "sampa_pairs_mismatch":
        data = [shard(b, rank, world) for b in data]  # each rank a different shard: refused
    else:
        data = [shard(b, rank, world, pairs) for b in data]
    out = {"losses": [], "failures": []}
    t = 0
    with opt:
        while t < STEPS:
            if name == "unfreeze" and t == STEPS // 2:
                out["first_before"] = torch.cat([p.detach().reshape(-1) for p in first])
                opt.add_param_group({"params": first, "lr": 0.05})
            try:
                out["losses"].append(opt.step(data[t], upcoming=data[t + 1:t + 2]))
                t += 1
            except (WorkerFailure, hetsam.HetsamInputError) as exc:
                out["failures"].append({"step": t, "type": type(exc).__name__, "message": str(exc),
                                        "cause": repr(exc.__cause__)})
                if len(out["failures"]) == 2:
                    break
        out["stats"] = opt.stats()
    out["params"] = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
    out["buffers"] = [b.detach().clone() for b in model.module.buffers()]
    out["ddp_allreduces"] = counter[0]
    return out


def main() -> int:
    out_dir, scenarios = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for scenario in scenarios:
        try:
            results[scenario] = run(scenario, rank, world)
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results[scenario] = {"error": traceback.format_exc()}
            break  # the ranks may be out of step now; stop rather than hang
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    return 0


if __name__ == "__main__":
    from hetsam.execution.distributed import exit_process

    exit_process(main())  # barrier, destroy the group, leave without finalization (a gloo bug)
