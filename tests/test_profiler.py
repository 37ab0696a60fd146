"""The profiler, for real, on this machine's CPU (tiny models, small ladders)."""

import os
import threading
import time

import pytest
import torch
from torch import nn

from hetsam.errors import HetsamInputError
from hetsam.hardware.detect import split_device_list
from hetsam.profiling.measure import default_ladder, profile, workload
from hetsam.profiling.models import MLP, REFERENCE_MODELS, ResNet20, cross_entropy_loss
from hetsam.profiling.schema import load_profile

CORES = len(os.sched_getaffinity(0))
QUICK = dict(warmup=1, repeats=3, progress=False)


def tiny_batch(n, d=20, classes=3):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_default_ladder_and_device_lists():
    assert default_ladder(64) == [8, 16, 32, 64]
    assert default_ladder(128) == [16, 32, 64, 128]
    assert default_ladder(100) == [16, 32, 64, 100]
    assert default_ladder(6) == [1, 2, 4, 6]
    assert default_ladder(1) == [1]
    assert split_device_list("cpu:0, cpu:0[0-3,8],cuda:1") == ["cpu:0", "cpu:0[0-3,8]", "cuda:1"]


def test_reference_models():
    # ResNet-20 (He et al. 2016, Table 6): 0.27M parameters; count them independently:
    # convs 3x3 without bias + BN (2 per channel) + fc, option-A shortcuts add none.
    convs = 3 * 16 * 9 + 6 * 16 * 16 * 9 + (16 * 32 + 5 * 32 * 32) * 9 + (32 * 64 + 5 * 64 * 64) * 9
    bns = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert sum(p.numel() for p in ResNet20().parameters()) == convs + bns + 64 * 10 + 10 == 269_722
    ref = REFERENCE_MODELS["resnet20"]
    x, y = ref.sample_batch(4)
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert ref.loss_fn(ref.build(), (x, y)).dim() == 0
    assert sum(p.numel() for p in MLP().parameters()) == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


def test_reference_transformer():
    # counted independently: embeddings and positions, per layer two LayerNorms, the attention's
    # in/out projections and the feed-forward, then the final LayerNorm and the head
    w, ff, vocab, length, layers = 64, 256, 1000, 32, 2
    per_layer = 2 * 2 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * ff + ff) + (ff * w + w)
    expected = vocab * w + length * w + layers * per_layer + 2 * w + w * 10 + 10
    ref = REFERENCE_MODELS["transformer"]
    model = ref.build()
    assert sum(p.numel() for p in model.parameters()) == expected == 166_794
    x, y = ref.sample_batch(4)
    assert x.shape == (4, 32) and x.dtype == torch.long and int(x.max()) < vocab and y.shape == (4,)
    loss = ref.loss_fn(model, (x, y))
    loss.backward()
    assert loss.dim() == 0 and all(p.grad is not None for p in model.parameters())
    # no dropout: two passes on one batch give the same loss
    assert torch.equal(ref.loss_fn(model, (x, y)), ref.loss_fn(model, (x, y)))


def test_profile_tiny_mlp_roundtrip(tmp_path):
    model = MLP(20, (16,), 3)
    prof = profile(model, cross_entropy_loss, tiny_batch(16), batch_sizes=[4, 8, 16], name="tiny", **QUICK)
    path = tmp_path / "tiny.json"
    prof.save(path)
    back = load_profile(path)
    assert back.to_dict() == prof.to_dict()

    expected_ids = ["cpu:0", "cpu:0[0]"] if CORES >= 2 else ["cpu:0"]
    assert list(back.device_ids) == expected_ids
    params = 20 * 16 + 16 + 16 * 3 + 3
    assert back.model.parameters == params and back.model.parameter_bytes == 4 * params
    # forward FLOPs of two linear layers: 2 * (in*out) per sample per layer
    assert back.model.flops_per_sample == 2 * (20 * 16 + 16 * 3)
    for d in back.devices:
        g = d.grad_seconds
        assert g.batch_sizes == (4, 8, 16) and g.repeats == 3
        assert all(m > 0 for m in g.median) and all(s >= 0 for s in g.spread)
        assert d.update_seconds is not None and d.update_seconds > 0
        assert d.max_batch_size is None
    assert back.device("cpu:0").cores == min(CORES, back.device("cpu:0").cores)
    assert [(l.src, l.dst) for l in back.links] == [("cpu:0", "cpu:0")]
    assert back.links[0].bytes_per_second > 0
    if CORES >= 2:
        (c,) = back.contention
        assert c.devices == ("cpu:0[0]", "cpu:0[1]") and all(s >= 1.0 for s in c.slowdown)
        # fitted with the job at B/4 and at B (hetsam.profiling.pairs): the last point is the slowdown itself
        assert [m for m, _ in c.by_job_batch] == [4, 16] and c.by_job_batch[-1][1] == c.slowdown
        assert all(1.0 <= x <= 8.0 for _, s in c.by_job_batch for x in s)
    prov = back.provenance
    assert prov["kind"] == "measured" and prov["torch"] == torch.__version__ and prov["budget"] == "none"
    # training FLOPs: forward + the backward matmuls (grad of both weights, grad input of layer 2 only)
    assert prov["workload"]["train_flops_per_sample"] == 2 * (20 * 16 + 16 * 3) + 2 * (20 * 16 + 16 * 3 + 16 * 3)


def test_the_ladder_is_timed_in_many_short_turns_each_after_an_untimed_pass(monkeypatch):
    # hetsam.profiling.rounds: a shared VM's speed moves from turn to turn, so the repeats are spread
    # over many rounds; a turn's first pass (cold, in a fresh thread) is never one of the timed ones
    from hetsam.profiling import rounds
    from hetsam.profiling.ladder import TimedReplica

    calls, timing = [], threading.local()
    step, time_step, turn = TimedReplica.step, TimedReplica.time_step, rounds._Session.timed_round

    def spy_step(self, n):
        calls.append(("timed" if getattr(timing, "on", False) else "untimed", n))
        return step(self, n)

    def spy_time_step(self, n):
        timing.on = True
        try:
            return time_step(self, n)
        finally:
            timing.on = False

    def spy_turn(self, *args, **kwargs):
        calls.append(("turn", None))
        return turn(self, *args, **kwargs)

    monkeypatch.setattr(TimedReplica, "step", spy_step)
    monkeypatch.setattr(TimedReplica, "time_step", spy_time_step)
    monkeypatch.setattr(rounds._Session, "timed_round", spy_turn)
    prof = profile(MLP(20, (16,), 3), cross_entropy_loss, tiny_batch(8), ["cpu:0"], batch_sizes=[4, 8], warmup=1,
                   repeats=24, contention=False, links=False, progress=False)
    n_rounds = prof.provenance["ratio_repeatability"]["rounds"]
    assert n_rounds == min(rounds.ROUNDS, 24) > 4
    reps = 24 // n_rounds
    turns = [i for i, c in enumerate(calls) if c[0] == "turn"]
    assert len(turns) == n_rounds
    for k, i in enumerate(turns):
        order = [4, 8] if k % 2 == 0 else [8, 4]  # alternating order, A B ... B A
        expected = [("untimed", 4)] + [("timed", b) for b in order for _ in range(reps)]
        assert calls[i + 1:i + 1 + len(expected)] == expected
    assert prof.device("cpu:0").grad_seconds.repeats == 24


@pytest.mark.skipif(CORES < 2, reason="two pools need two cores")
def test_contention_times_the_descents_whole_side_of_a_step(monkeypatch):
    # the climb, the pass inside it, the restore and the update, as AsyncSAM's step on a pool does
    # them while the job runs (hetsam.profiling.contention): the memory-bound climb and update are slowed too
    from hetsam.profiling.ladder import DescentWork

    calls = []
    climb, update = DescentWork.climb, DescentWork.update

    def spy_climb(self, ghat, around=None):
        calls.append("climb+pass" if around is not None else "climb")
        return climb(self, ghat) if around is None else climb(self, ghat, around)

    def spy_update(self, grads):
        calls.append("update")
        return update(self, grads)

    monkeypatch.setattr(DescentWork, "climb", spy_climb)
    monkeypatch.setattr(DescentWork, "update", spy_update)
    model = MLP(20, (16,), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = profile(model, cross_entropy_loss, tiny_batch(16), ["cpu:0[0]", "cpu:0[1]"], batch_sizes=[8, 16],
                   links=False, **QUICK)
    (c,) = prof.contention
    assert all(1.0 <= s <= 8.0 for s in c.slowdown) and c.handoff_seconds >= 0 and c.round_trip_seconds >= 0
    sides = [i for i, name in enumerate(calls) if name == "climb+pass"]
    assert len(sides) >= 2 * 6 * 2  # job at B/4 and B: six rounds each, with the descent alone and both together
    assert all(calls[i + 1] == "update" for i in sides)  # each climb (and its pass) then its update
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched


def test_callers_model_and_threads_untouched():
    model = nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    affinity = os.sched_getaffinity(threading.get_native_id())
    profile(model, cross_entropy_loss, tiny_batch(8), batch_sizes=[4, 8], links=False, **QUICK)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert torch.get_num_threads() == threads
    assert os.sched_getaffinity(threading.get_native_id()) == affinity


class _Recorder(nn.Module):
    """Records, on each forward, the calling thread's affinity and intra-op thread count."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 3)
        self.seen = set()

    def forward(self, x):
        self.seen.add((frozenset(os.sched_getaffinity(threading.get_native_id())), torch.get_num_threads()))
        return self.lin(x)


@pytest.mark.skipif(CORES < 2, reason="needs two usable cores for a one-core pool")
def test_pool_runs_pinned_with_its_own_thread_count(monkeypatch):
    import hetsam.profiling.ladder as ladder_mod
    import hetsam.profiling.measure as prof_mod

    seen = {}
    real = ladder_mod.TimedReplica.__init__

    def spy(self, model, loss_fn, batch, target):
        real(self, model, loss_fn, batch, target)
        seen[target.id] = self.replica.module  # the replica this device times

    monkeypatch.setattr(ladder_mod.TimedReplica, "__init__", spy)
    cpus = sorted(os.sched_getaffinity(0))
    profile(_Recorder(), cross_entropy_loss, tiny_batch(4), ["cpu:0", "cpu:0[1]"], batch_sizes=[4],
            contention=False, links=False, **QUICK)
    assert seen["cpu:0[1]"].seen == {(frozenset({cpus[1]}), 1)}
    assert {n for _, n in seen["cpu:0"].seen} == {min(CORES, prof_mod.detect(gpus=False).devices[0].cores)}


class _OOMAbove(nn.Module):
    def __init__(self, limit):
        super().__init__()
        self.lin = nn.Linear(20, 3)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"fake: {x.shape[0]} samples do not fit")
        return self.lin(x)


def test_oom_backs_off_and_records_max_batch():
    prof = profile(_OOMAbove(8), cross_entropy_loss, tiny_batch(32), ["cpu:0"], batch_sizes=[2, 4, 8, 16, 32],
                   contention=False, **QUICK)
    (dev,) = prof.devices
    assert dev.grad_seconds.batch_sizes == (2, 4, 8)
    assert dev.max_batch_size == 8
    assert "did not fit" in prof.provenance["notes"]
    with pytest.raises(HetsamInputError, match="fits on none"):
        profile(_OOMAbove(1), cross_entropy_loss, tiny_batch(8), ["cpu:0"], batch_sizes=[4, 8], contention=False, **QUICK)


class _Sleepy(nn.Module):
    """A model whose forward takes a known 20 ms, so the budget arithmetic is deterministic."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(20, 3)

    calls = 0  # forward passes, counted: the budget is checked by work, not by a clock

    def forward(self, x):
        type(self).calls += 1
        time.sleep(0.02)
        return self.lin(x)


def test_budget_is_respected_and_cuts_are_noted():
    # unbudgeted, the 4 points take about 90 passes; every pass sleeps at least 20 ms, so a 0.5 s
    # budget holds at most 25 of them (fewer on a busy machine) and the first point is always measured
    _Sleepy.calls = 0
    prof = profile(_Sleepy(), cross_entropy_loss, tiny_batch(8), ["cpu:0"], batch_sizes=[1, 2, 4, 8],
                   budget_seconds=0.5, contention=False, links=False, progress=False)
    assert 0 < _Sleepy.calls <= 40, _Sleepy.calls
    (dev,) = prof.devices
    assert dev.grad_seconds.batch_sizes[0] == 1  # at least one point is always measured
    assert prof.provenance["budget"].startswith("0.5 s") and "time budget" in prof.provenance["budget"]


def test_bad_arguments():
    model, batch = MLP(20, (8,), 3), tiny_batch(8)
    for kwargs, match in (
        (dict(batch_sizes=[4, 16]), "larger than the sample batch"),
        (dict(batch_sizes=[8, 4]), "ascending"),
        (dict(budget_seconds=-1), "budget_seconds"),
        (dict(repeats=0), "repeats"),
    ):
        with pytest.raises(HetsamInputError, match=match):
            profile(model, cross_entropy_loss, batch, ["cpu:0"], progress=False, **kwargs)
    with pytest.raises(HetsamInputError, match="not usable"):
        profile(model, cross_entropy_loss, batch, ["cpu:7"], progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(HetsamInputError, match="not here"):
            profile(model, cross_entropy_loss, batch, ["cuda:0"], progress=False)


def test_workload_counts_bytes_linearly():
    work = workload(MLP(20, (16,), 3), cross_entropy_loss, tiny_batch(8))
    assert work["kernels_per_step"] > 0
    assert work["bytes_per_sample"] > 0
    # the parameters (and their gradients) are touched once per step, whatever the batch
    assert work["bytes_per_step"] >= 4 * (20 * 16 + 16 * 3)


@pytest.mark.cuda
def test_profile_on_gpu():
    prof = profile(MLP(20, (16,), 3), cross_entropy_loss, tiny_batch(16), ["cpu:0", "cuda:0"], batch_sizes=[8, 16],
                   contention=False, **QUICK)
    assert prof.device("cuda:0").kind == "gpu"
    assert {(l.src, l.dst) for l in prof.links} >= {("cpu:0", "cuda:0"), ("cuda:0", "cpu:0")}


@pytest.mark.parametrize("d,j,s_a,s_b", [(0.100, 0.050, 1.2, 1.5), (0.050, 0.100, 1.5, 1.2), (0.080, 0.080, 1.1, 1.3),
                                        (0.200, 0.020, 1.0, 1.0)])
def test_contention_fit_inverts_the_simulators_model(d, j, s_a, s_b):
    # the simulator's own event loop (an independent reference) runs a descent pass and an ascent job
    # side by side; the profiler's fit must recover the slowdowns it was given from the end times, and
    # the forward model (examples/bench_contention.py predicts with it) must give those end times
    from hetsam.profiling.pairs import fit_slowdowns, lockstep_seconds
    from hetsam.simulator.engine import Engine

    eng = Engine()
    a, b = eng.resource("a"), eng.resource("b")
    eng.contend(a, b, s_a, s_b)
    ta, tb = eng.add("descent", "grad", a, d, 0), eng.add("job", "grad", b, j, 0)
    eng.run()
    fa, fb = fit_slowdowns(d, j, ta.end, tb.end)
    assert fa == pytest.approx(s_a, rel=1e-9) and fb == pytest.approx(s_b, rel=1e-9)
    assert lockstep_seconds(d, j, s_a, s_b) == pytest.approx((ta.end, tb.end), rel=1e-9)


def test_contention_fit_is_bounded():
    from hetsam.profiling.pairs import MAX_SLOWDOWN, fit_slowdowns

    assert fit_slowdowns(0.1, 0.05, 0.09, 0.04) == (1.0, 1.0)  # faster together: noise, no speed-up recorded
    assert fit_slowdowns(0.1, 0.05, 0.5, 0.06) == (MAX_SLOWDOWN, 1.2)  # D' > J' + D: no finite fit
