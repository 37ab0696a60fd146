"""The threaded executor: bit-for-bit equal to the inline reference, thread binding, faults."""

import gc
import os
import threading
import time
import warnings

import pytest
import torch
from _alg_refs import SGD_KW, batches, flat, loss_fn, mlp

from hetsam import AutoSAM, Plan, WorkerFailure
from hetsam.execution.executor import InlineExecutor
from hetsam.execution.factory import make_executor
from hetsam.execution.threads import ThreadedExecutor

STEPS = 32
PLANS = {
    "async_lookahead_tau1": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 8}),
    "async_lookahead_tau2": Plan(strategy="async_sam", options={"staleness": 2, "ascent_batch_size": 8}),
    "async_independent_tau1": Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": 8, "ascent_batches": "independent"}),
    "async_independent_tau2": Plan(strategy="async_sam", options={"staleness": 2, "ascent_batch_size": 8, "ascent_batches": "independent"}),
    "sampa_0": Plan(strategy="sampa", options={"sampa_lambda": 0.0}),
    "sampa_0.2": Plan(strategy="sampa", options={"sampa_lambda": 0.2}),
}
CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs two usable CPUs for two disjoint one-core pools")



def hetsam_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hetsam-ascent")]


def train(plan, executor, *, bn, steps=STEPS, loss=loss_fn, **kw):
    """Train a fresh copy of the same model; returns (parameters, losses, stats)."""
    model = mlp(bn=bn)
    losses = []
    with AutoSAM(model, loss, plan=plan, executor=executor, **SGD_KW, **kw) as opt:
        for batch in opt.prefetch(batches(steps)):
            losses.append(opt.step(batch))
        stats = opt.stats()
    return flat(model), losses, stats


@pytest.mark.parametrize("bn", [True, False], ids=["batchnorm", "plain"])
@pytest.mark.parametrize("name", list(PLANS))
def test_worker_is_bit_for_bit_equal_to_inline(deterministic, name, bn):
    ref, ref_losses, _ = train(PLANS[name], "inline", bn=bn)
    got, losses, stats = train(PLANS[name], ThreadedExecutor(share="concurrent"), bn=bn)
    assert stats["executor"]["mode"] == "worker"  # a worker thread beside the descent
    assert stats["executor"]["jobs"] == STEPS - (PLANS[name].option("staleness") if name.startswith("async") else 0)
    assert losses == ref_losses
    assert torch.equal(got, ref)


@two_cpus
@pytest.mark.parametrize("name", ["async_lookahead_tau1", "sampa_0.2"])
def test_disjoint_pools_pin_each_role_and_match_inline(deterministic, name):
    """Descent on cpu:0[0], ascent on cpu:0[1]: each pass runs on its pool's core with one thread."""
    import dataclasses

    plan = dataclasses.replace(PLANS[name], descent_device="cpu:0[0]", ascent_device="cpu:0[1]")
    main = threading.main_thread()
    seen = {"descent": set(), "ascent": set()}

    def recording_loss(model, batch):
        role = "descent" if threading.current_thread() is main else "ascent"
        seen[role].add((threading.current_thread().name, tuple(sorted(os.sched_getaffinity(0))), torch.get_num_threads()))
        return loss_fn(model, batch)

    before = (os.sched_getaffinity(0), torch.get_num_threads())
    ref, _, _ = train(plan, "inline", bn=True, loss=recording_loss)
    seen["descent"].clear()
    got, _, stats = train(plan, "threads", bn=True, loss=recording_loss)
    assert stats["executor"]["mode"] == "worker"
    assert torch.equal(got, ref)
    assert seen["descent"] == {("MainThread", (CPUS[0],), 1)}
    assert seen["ascent"] == {("hetsam-ascent-cpu:0[1]", (CPUS[1],), 1)}
    assert (os.sched_getaffinity(0), torch.get_num_threads()) == before  # the caller's binding is restored


def test_shared_device_time_sliced_on_the_calling_thread(deterministic):
    plan = PLANS["async_lookahead_tau1"]  # both roles on "cpu"
    ref, _, _ = train(plan, "inline", bn=True)
    started = len(hetsam_threads())
    model = mlp(bn=True)
    with AutoSAM(model, loss_fn, plan=plan, executor=ThreadedExecutor(share="time-slice"), **SGD_KW) as opt:
        assert opt.executor.describe()["mode"] == "time-sliced"
        assert opt.executor.worker_thread is None and len(hetsam_threads()) == started
        for batch in opt.prefetch(batches(STEPS)):
            opt.step(batch)
        stats = opt.stats()["executor"]
    assert torch.equal(flat(model), ref)
    assert stats["wait_seconds"] == 0.0 and stats["inline_seconds"] > 0  # the caller computes, it never idles


@pytest.mark.parametrize("name", ["async_lookahead_tau2", "sampa_0.2"])
def test_shared_device_measures_both_arrangements_then_keeps_one(deterministic, name):
    """The default share='auto' alternates time-sliced and concurrent blocks on the first
    steps, keeps the faster (time-sliced unless concurrent wins by > 3%), releases the other,
    and computes exactly the inline reference's numbers throughout."""
    steps = 48
    ref, ref_losses, _ = train(PLANS[name], "inline", bn=True, steps=steps)
    started = len(hetsam_threads())
    model = mlp(bn=True)
    losses = []
    with AutoSAM(model, loss_fn, plan=PLANS[name], **SGD_KW) as opt:  # executor="threads" is the default
        ex = opt.executor
        assert ex.name == "threads" and ex.describe()["mode"] == "measuring" and len(hetsam_threads()) == started + 1
        for batch in opt.prefetch(batches(steps)):
            losses.append(opt.step(batch))
        info = ex.describe()
        choice = info["share_choice"]
        assert info["mode"] == {"time-sliced": "time-sliced", "concurrent": "worker"}[choice["chosen"]]
        t, c = choice["time-sliced_step_seconds"], choice["concurrent_step_seconds"]
        assert choice["chosen"] == ("concurrent" if c < 0.97 * t else "time-sliced")
        if choice["chosen"] == "time-sliced":
            assert ex.worker_thread is None and len(hetsam_threads()) == started
        else:
            assert ex.worker_thread.is_alive() and ex.held_tensors()  # the time-sliced replica is gone
        lag = PLANS[name].option("staleness") if name.startswith("async") else 0  # jobs never waited for
        assert info["inline_seconds"] > 0 and steps - lag <= info["jobs"] <= steps
    assert losses == ref_losses and torch.equal(flat(model), ref)
    assert len(hetsam_threads()) == started


def test_descent_waits_are_counted_when_the_ascent_is_slower():
    """An ascent that sleeps 20 ms while the descent takes about a millisecond: most steps wait."""
    main = threading.main_thread()

    def slow_ascent(model, batch):
        if threading.current_thread() is not main:
            time.sleep(0.02)
        return loss_fn(model, batch)

    _, _, stats = train(PLANS["async_lookahead_tau1"], ThreadedExecutor(share="concurrent"), bn=False, steps=10,
                        loss=slow_ascent)
    ex = stats["executor"]
    assert ex["waits"] >= 5 and ex["wait_seconds"] >= 5 * 0.015
    assert ex["job_seconds"] >= 9 * 0.02 and ex["inline_seconds"] == 0.0


def test_staging_slots_stay_within_tau_and_are_accounted():
    plan = Plan(strategy="async_sam", options={"staleness": 2, "ascent_batch_size": 8})
    model = mlp()
    with AutoSAM(model, loss_fn, plan=plan, executor=ThreadedExecutor(share="concurrent"), **SGD_KW) as opt:
        for batch in opt.prefetch(batches(12)):
            opt.step(batch)
        slots = opt.executor.describe()["staging_slots"]
        held = opt.extra_tensors()
    n = sum(1 for _ in model.parameters())
    assert 1 <= slots <= plan.option("staleness")
    assert len(held) >= (1 + slots) * n  # the replica and every staging slot


# ---- faults -------------------------------------------------------------------------------
def failing_on_worker(at_call: int, exc_type=ValueError):
    """A loss that raises on the worker thread at its ``at_call``-th call there."""
    main = threading.main_thread()
    calls = {"n": 0}

    def loss(model, batch):
        if threading.current_thread() is not main:
            calls["n"] += 1
            if calls["n"] == at_call:
                raise exc_type("ascent boom")
        return loss_fn(model, batch)

    return loss


# an ascent_timeout that turns a hang into a WorkerFailure naming it, which the tests below reject:
# a guard against hangs, never a claim about speed
HANG = 120.0


def test_worker_exception_reraises_at_the_next_step_with_its_cause():
    before = len(hetsam_threads())
    opt = AutoSAM(mlp(), failing_on_worker(3), plan=PLANS["async_lookahead_tau1"],
                  executor=ThreadedExecutor(share="concurrent"), ascent_timeout=HANG, **SGD_KW)
    data = batches(10)
    with pytest.raises(WorkerFailure) as info:
        for i, batch in enumerate(data):
            opt.step(batch, upcoming=data[i + 1:i + 2])
    assert isinstance(info.value.__cause__, ValueError) and "ascent boom" in str(info.value.__cause__)
    assert i == 3  # job 3 (submitted at step 2) failed; step 3 is the one that needs it
    with pytest.raises(WorkerFailure) as again:  # and again: the worker is gone, never a hang
        opt.step(data[4], upcoming=data[5:6])
    assert "ascent_timeout" not in str(again.value)
    opt.close()
    assert len(hetsam_threads()) == before


def test_degrade_carries_on_on_the_descent_device_and_loses_no_step(deterministic):
    plan = PLANS["async_lookahead_tau2"]
    ref, ref_losses, _ = train(plan, "inline", bn=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, losses, stats = train(plan, ThreadedExecutor(share="concurrent"), bn=True, loss=failing_on_worker(4),
                                   on_worker_failure="degrade")
    assert stats["executor"]["mode"] == "degraded"
    assert stats["steps"] == STEPS and stats["unperturbed_steps"] == plan.option("staleness")
    # the descent device's replica uses the same thread count as the worker's here, so even
    # the recomputed ascent gradients are bit-identical to the reference
    assert losses == ref_losses and torch.equal(got, ref)
    assert sum("on_worker_failure='degrade'" in str(w.message) for w in caught) == 1


def test_dead_worker_never_hangs_the_caller():
    from hetsam.execution.threads.worker import _STOP

    with AutoSAM(mlp(), loss_fn, plan=PLANS["async_independent_tau1"], executor=ThreadedExecutor(share="concurrent"),
                 ascent_timeout=HANG, **SGD_KW) as opt:
        data = batches(4)
        opt.step(data[0])
        opt.executor._worker.jobs.put(_STOP)  # the worker thread ends with the next job still queued
        opt.executor.worker_thread.join(HANG)
        with pytest.raises(WorkerFailure, match="ended"):  # a hang would name ascent_timeout instead
            opt.step(data[1])
            opt.step(data[2])


@pytest.mark.parametrize("how", ["close", "context", "gc"])
def test_worker_is_joined_before_close_returns(how):
    before = len(hetsam_threads())
    opt = AutoSAM(mlp(), loss_fn, plan=PLANS["sampa_0.2"], executor=ThreadedExecutor(share="concurrent"), **SGD_KW)
    thread = opt.executor.worker_thread
    assert thread.is_alive() and len(hetsam_threads()) == before + 1
    for batch in batches(3):
        opt.step(batch)
    if how == "close":
        opt.close()
    elif how == "context":
        with opt:
            opt.step(batches(1)[0])
    else:
        del opt
        gc.collect()
    assert not thread.is_alive()  # joined by close(), the with block's end or the collector: no join here
    assert len(hetsam_threads()) == before


def test_keyboard_interrupt_during_a_step_leaves_no_thread():
    before = len(hetsam_threads())
    main = threading.main_thread()
    calls = {"n": 0}

    def interrupted(model, batch):
        if threading.current_thread() is main:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return loss_fn(model, batch)

    opt = AutoSAM(mlp(), interrupted, plan=PLANS["async_lookahead_tau1"], executor=ThreadedExecutor(share="concurrent"),
                  **SGD_KW)
    thread = opt.executor.worker_thread
    with pytest.raises(KeyboardInterrupt):
        for batch in opt.prefetch(batches(6)):
            opt.step(batch)
    assert not thread.is_alive() and len(hetsam_threads()) == before
    with pytest.raises(RuntimeError, match="close"):
        opt.step(batches(1)[0])


def test_options_are_validated():
    with pytest.raises(ValueError, match="on_worker_failure"):
        AutoSAM(mlp(), loss_fn, plan="sampa", on_worker_failure="ignore", lr=0.1)
    with pytest.raises(ValueError, match="share"):
        ThreadedExecutor(share="sometimes")
    assert make_executor("threads", on_worker_failure="degrade").on_worker_failure == "degrade"
    assert isinstance(make_executor("inline"), InlineExecutor)


def test_a_pool_that_does_not_exist_is_a_clear_error():
    plan = Plan(strategy="async_sam", descent_device="cpu:0[0]", ascent_device=f"cpu:0[{len(CPUS)}]", options={"ascent_batch_size": 8})
    with pytest.raises(ValueError, match="do not exist"):
        AutoSAM(mlp(), loss_fn, plan=plan, lr=0.1)


# ---- GPU paths (written and guarded; skipped without CUDA) -----------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("descent, ascent", [("cuda:0", "cpu"), ("cpu", "cuda:0")])
def test_cuda_worker_matches_inline(descent, ascent):
    plan = Plan(strategy="async_sam", descent_device=descent, ascent_device=ascent, options={"staleness": 1, "ascent_batch_size": 8})
    device = torch.device("cuda" if descent.startswith("cuda") else "cpu")
    runs = []
    for ex in ("inline", "threads"):
        model = mlp(bn=True).to(device)
        with AutoSAM(model, loss_fn, plan=plan, executor=ex, **SGD_KW) as opt:
            for batch in opt.prefetch([tuple(t.to(device) for t in b) for b in batches(STEPS)]):
                opt.step(batch)
            if ex == "threads":
                assert opt.executor.describe()["mode"] == "worker"
        runs.append(flat(model).cpu())
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_shared_device_is_time_sliced():
    plan = Plan(strategy="sampa", descent_device="cuda:0", ascent_device="cuda:0")
    with AutoSAM(mlp().cuda(), loss_fn, plan=plan, executor=ThreadedExecutor(share="time-slice"), **SGD_KW) as opt:
        assert opt.executor.describe()["mode"] == "time-sliced"
        for batch in batches(3):
            opt.step(tuple(t.cuda() for t in batch))


def test_park_ends_the_thread_and_the_next_job_restarts_it(deterministic):
    plan = PLANS["async_lookahead_tau2"]
    ref, ref_losses, _ = train(plan, "inline", bn=True)
    before = len(hetsam_threads())
    model = mlp(bn=True)
    losses = []
    with AutoSAM(model, loss_fn, plan=plan, executor=ThreadedExecutor(share="concurrent"), **SGD_KW) as opt:
        for i, batch in enumerate(opt.prefetch(batches(STEPS))):
            losses.append(opt.step(batch))
            if i % 5 == 4:
                first = opt.executor.worker_thread
                opt.executor.park()  # with a job outstanding (tau = 2): it finishes first
                assert not first.is_alive() and len(hetsam_threads()) == before
        assert opt.executor.describe()["staging_slots"] <= plan.option("staleness")
    assert losses == ref_losses and torch.equal(flat(model), ref)


def test_threads_is_found_by_name_without_importing_it_first():
    import subprocess
    import sys

    code = "from hetsam.execution.factory import make_executor\nprint(type(make_executor('threads')).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ThreadedExecutor"


def _train_toggling(executor, toggle_at):
    """AsyncSAM τ=1 on the BatchNorm MLP; from step ``toggle_at`` on, the BatchNorm layer is in eval mode."""
    model = mlp(bn=True)
    with AutoSAM(model, loss_fn, plan=PLANS["async_lookahead_tau1"], executor=executor, **SGD_KW) as opt:
        for t, batch in enumerate(opt.prefetch(batches(12))):
            if t == toggle_at:
                model[1].eval()
                job = opt._parts.runtime.job(0, "ascent", batch, accumulate=1)
                assert job.training == tuple(m.training for m in model.modules())  # the jobs see the switch
            opt.step(batch)
    return flat(model)


def test_a_layer_switched_to_eval_mid_run_reaches_the_ascent_jobs(deterministic):
    """Jobs carry every module's train/eval flag as of their step (the module tree is cached, the flags are not)."""
    plain = _train_toggling("inline", toggle_at=None)
    ref = _train_toggling("inline", toggle_at=6)
    got = _train_toggling(ThreadedExecutor(share="concurrent"), toggle_at=6)
    assert torch.equal(got, ref)
    assert not torch.equal(ref, plain)  # the switch changed the run
