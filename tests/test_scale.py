"""Simulator and planner at scale: N nodes x G ranks with DDP's bucketed ring all-reduce.

Expected values are written out here from the equations of ``hetsam/network.py`` and
``simulator/model.py`` (ring all-reduce, bucket recursion, max of n lognormals), with the
profile's own numbers; never taken from the code under test.
"""

import json
import math
import random
import statistics

import pytest

from hetsam import HetsamInputError, Plan
from hetsam.cli.main import main
from hetsam.cost.cluster import Cluster
from hetsam.cost.jitter import MaxDraw, lognormal_sigma, slowest_median
from hetsam.cost.model import CostModel
from hetsam.cost.network import ring_allreduce_seconds
from hetsam.planning.search import plan
from hetsam.profiling.schema import Profile
from hetsam.simulator import simulate

MIB = 1024 * 1024
LADDER = [8, 16, 32, 64, 128]
B = 128


def _dev(dev_id, kind, a, c, spread=0.0, **extra):
    med = [a + c * b for b in LADDER]
    d = {"id": dev_id, "kind": kind, "name": dev_id,
         "grad_seconds": {"batch_sizes": LADDER, "median": med, "spread": [spread * m for m in med]}}
    d.update(extra)
    return d


def profile(param_bytes=10 * MIB, gpus=1, spec="H100-SXM", spread=0.0, second_gpu_slower=1.0, links=None):
    """One node: `gpus` GPUs (t = 2 ms + 0.1 ms/sample), a 56-core socket (5x slower per sample)."""
    devs = []
    for i in range(gpus):
        f = second_gpu_slower if i else 1.0
        extra = {"update_seconds": 0.0003}
        if spec:
            extra["spec"] = spec
        devs.append(_dev(f"cuda:{i}", "gpu", 0.002 * f, 0.0001 * f, spread, **extra))
    devs.append(_dev("cpu:0", "cpu", 0.004, 0.0005, spread, cores=56, update_seconds=0.001))
    devs.append(_dev("cpu:0[0]", "cpu", 0.02, 0.01, spread, cores=1))
    if links is None:
        links = [{"src": "cpu:0", "dst": f"cuda:{i}", "bytes_per_second": 10e9, "latency_seconds": 1e-5} for i in range(gpus)]
        links.append({"src": "cpu:0", "dst": "cpu:0", "bytes_per_second": 20e9, "latency_seconds": 1e-6})
        links += [{"src": "cuda:0", "dst": f"cuda:{i}", "bytes_per_second": 50e9, "latency_seconds": 5e-6} for i in range(1, gpus)]
    return CostModel(Profile.from_dict({
        "schema_version": 1, "model": {"name": "toy", "parameters": param_bytes // 4, "parameter_bytes": param_bytes},
        "batch_size": B, "devices": devs, "links": links, "provenance": {"kind": "synthetic"},
    }))


# explicit network numbers, so that the expected values do not depend on the tables
NET = {"intra_node_bandwidth": 100e9, "intra_node_latency": 2e-6, "inter_node_bandwidth": 20e9, "inter_node_latency": 7e-6}


def ring(nbytes, n, bw, lat):
    """2(n-1)/n * S/B + 2(n-1) * alpha, written out."""
    return 2 * (n - 1) / n * nbytes / bw + 2 * (n - 1) * lat


def ddp_step(t, u, sizes, n, bw, lat, beta=2 / 3, partner=None):
    """max(t, e_K) + u with r_k = (1-beta) t + beta t S_k/P and e_k = max(r_k, e_{k-1}) + a_k."""
    total = sum(sizes)
    e, acc = 0.0, 0
    for s in sizes:
        acc += s
        r = (1 - beta) * t + beta * t * acc / total
        if partner is not None:
            r = max(r, (1 - beta) * partner + beta * partner * acc / total)
        e = max(r, e) + ring(s, n, bw, lat)
    return max(t, e, partner or 0.0) + u


def exact(p, cm, n=60, **kw):
    return simulate(p, cm, iterations=n, jitter=False, steady_state=False, **kw)


T_GPU = 0.002 + 0.0001 * B  # cuda:0 at b = 128
U_GPU = 0.0003


# ---- the all-reduce model against its closed form ----------------------------------------------
def test_ring_formula():
    assert ring_allreduce_seconds(5e6, 1, 1e9, 1e-5) == 0.0
    for n in (2, 8, 512):
        assert ring_allreduce_seconds(5e6, n, 1e9, 1e-5) == pytest.approx(ring(5e6, n, 1e9, 1e-5), rel=1e-15)


def test_one_bucket_is_exactly_compute_plus_the_ring():
    """One bucket cannot overlap: step = t_D + T(P, n) + u, on the bottleneck link (N > 1, G > 1)."""
    cm = profile()
    P = cm.parameter_bytes
    big = {"bucket_cap_mb": 1000.0, "first_bucket_mb": 1000.0}
    r = exact(Plan("sgd", "cuda:0", batch_size=B), cm, nodes=2, devices_per_node=4, **NET, **big)
    a = ring(P, 8, min(100e9, 20e9), max(2e-6, 7e-6))
    assert r.iteration_seconds["mean"] == pytest.approx(T_GPU + a + U_GPU, rel=1e-12)
    assert r.allreduce_exposed_per_iteration == pytest.approx(a, rel=1e-12)
    assert r.cluster["bucket_bytes"] == [P]
    # one node: the intra-node link alone
    r1 = exact(Plan("sgd", "cuda:0", batch_size=B), cm, nodes=1, devices_per_node=4, **NET, **big)
    assert r1.iteration_seconds["mean"] == pytest.approx(T_GPU + ring(P, 4, 100e9, 2e-6) + U_GPU, rel=1e-12)
    # one rank per node: the inter-node network alone
    r2 = exact(Plan("sgd", "cuda:0", batch_size=B), cm, nodes=3, devices_per_node=1, **NET, **big)
    assert r2.iteration_seconds["mean"] == pytest.approx(T_GPU + ring(P, 3, 20e9, 7e-6) + U_GPU, rel=1e-12)


@pytest.mark.parametrize("inter_bw", [1e9, 20e9, 1e12])  # network-bound, in between, compute-bound
def test_buckets_overlap_the_backward_exactly(inter_bw):
    cm = profile(param_bytes=10 * MIB)
    net = dict(NET, inter_node_bandwidth=inter_bw)
    sizes = [1 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, 2 * MIB, 1 * MIB]  # first 1 MiB, then 2 MiB buckets
    r = exact(Plan("sgd", "cuda:0", batch_size=B), cm, nodes=4, devices_per_node=2, bucket_cap_mb=2.0, **net)
    assert r.cluster["bucket_bytes"] == sizes
    bw, lat = min(100e9, inter_bw), 7e-6
    expected = ddp_step(T_GPU, U_GPU, sizes, 8, bw, lat)
    assert r.iteration_seconds["mean"] == pytest.approx(expected, rel=1e-12)
    # overlapping is never worse than reducing after the backward, never better than free
    assert T_GPU + U_GPU + ring(sizes[-1], 8, bw, lat) <= expected + 1e-15
    assert expected <= T_GPU + U_GPU + sum(ring(s, 8, bw, lat) for s in sizes) + 1e-15


def test_default_buckets_are_ddps():
    cm = profile(param_bytes=60 * MIB + 123)
    r = exact(Plan("sgd", "cuda:0", batch_size=B), cm, n=5, nodes=2, devices_per_node=8, **NET)
    assert r.cluster["bucket_bytes"] == [1 * MIB, 25 * MIB, 25 * MIB, 9 * MIB + 123]


def test_sam_adds_its_ascent_without_an_allreduce():
    cm = profile()
    r = exact(Plan("sam", "cuda:0", batch_size=B), cm, nodes=8, devices_per_node=8, **NET)
    sizes = [1 * MIB] + [9 * MIB]
    assert r.iteration_seconds["mean"] == pytest.approx(T_GPU + ddp_step(T_GPU, U_GPU, sizes, 64, 20e9, 7e-6), rel=1e-12)


@pytest.mark.parametrize("bp", [8, 128])  # hidden ascent, and an ascent slower than a step
def test_async_sam_period_at_scale(bp):
    """tau = 1: period = max(S, t_A, c_DA, c_AD, (c_DA + t_A + c_AD + S) / 2) with S the DDP step."""
    cm = profile()
    pool = "cpu:0[0-6]"  # 56 cores, 8 ranks on one socket: 7 cores each
    r = exact(Plan("async_sam", "cuda:0", pool, batch_size=B, options={"ascent_batch_size": bp}), cm, n=200, nodes=4,
              devices_per_node=8, **NET)
    S = ddp_step(T_GPU, U_GPU, [1 * MIB, 9 * MIB], 32, 20e9, 7e-6)
    t_a = cm.grad_seconds(pool, bp)
    c = 1e-5 + cm.parameter_bytes / 10e9
    period = max(S, t_a, c, c, (c + t_a + c + S) / 2)
    # steady state: the mean over the last 100 steps
    assert r.iteration_seconds["p50"] == pytest.approx(period, rel=1e-9)
    assert r.cluster["rank_cpu_pool"] == {"socket": "cpu:0", "cores": 7}
    assert not [n for n in r.notes if "owns" in n]


def test_sampa_pairs_combine_with_one_allreduce_over_2n_ranks():
    """The pair rule all-reduces [g_x | g_y'] (2P bytes) once, after both passes."""
    cm = profile(gpus=2, second_gpu_slower=1.3)
    r = exact(Plan("sampa", "cuda:0", "cuda:1", batch_size=B), cm, nodes=4, devices_per_node=1, **NET)
    t_a = 1.3 * T_GPU
    expected = max(T_GPU, t_a) + ring(2 * 10 * MIB, 8, 20e9, 7e-6) + U_GPU
    assert r.iteration_seconds["mean"] == pytest.approx(expected, rel=1e-12)
    assert r.cluster["allreduce_ranks"] == 8 and r.cluster["sampa_pairs"]
    assert set(r.link_utilisation) == {"network"}  # no D<->A copies: the all-reduce combines
    assert r.descent_wait_per_iteration == pytest.approx(t_a - T_GPU, rel=1e-9)


# ---- one rank reduces to the single-node simulation ------------------------------------------------
@pytest.mark.parametrize("p", [
    Plan("sgd", "cuda:0", batch_size=B), Plan("sam", "cuda:0", batch_size=B),
    Plan("rst", "cuda:0", batch_size=B, options={"sam_probability": 0.3}),
    Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 48}),
    Plan("sampa", "cuda:0", "cuda:1", batch_size=B),
])
def test_one_rank_is_the_single_node_simulation(p):
    cm = profile(gpus=2, spread=0.1)
    base = simulate(p, cm, iterations=300, seed=5).to_dict()
    one = simulate(p, cm, iterations=300, seed=5, nodes=1, devices_per_node=1, **NET).to_dict()
    for d in (base, one):
        d.pop("engine")
    assert one == base
    assert one["cluster"] is None


# ---- more nodes never help; determinism ---------------------------------------------------------------
@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("p", [
    Plan("sgd", "cuda:0", batch_size=B), Plan("sam", "cuda:0", batch_size=B),
    Plan("rst", "cuda:0", batch_size=B, options={"sam_probability": 0.5}),
    Plan("async_sam", "cuda:0", "cpu:0[0-27]", batch_size=B, options={"ascent_batch_size": 32}),
    Plan("sampa", "cuda:0", "cuda:1", batch_size=B),
])
def test_more_nodes_never_speed_up_a_step(p, jitter):
    cm = profile(gpus=4, spread=0.1)
    means = [simulate(p, cm, iterations=150, seed=1, jitter=jitter, steady_state=False, nodes=n, devices_per_node=2,
                      **NET).iteration_seconds["mean"] for n in (1, 2, 8, 64, 512)]
    assert all(a <= b * (1 + 1e-12) for a, b in zip(means, means[1:])), means
    assert means[-1] > means[0]


def test_deterministic_for_a_seed():
    cm = profile(spread=0.1)
    p = Plan("async_sam", "cuda:0", "cpu:0[0-6]", batch_size=B, options={"ascent_batch_size": 16})
    a = simulate(p, cm, iterations=500, seed=3, nodes=16, devices_per_node=8, **NET).to_dict()
    b = simulate(p, cm, iterations=500, seed=3, nodes=16, devices_per_node=8, **NET).to_dict()
    c = simulate(p, cm, iterations=500, seed=4, nodes=16, devices_per_node=8, **NET).to_dict()
    for d in (a, b, c):
        d.pop("engine")
    assert a == b
    assert a["iteration_seconds"] != c["iteration_seconds"]


# ---- the slowest of n ranks ----------------------------------------------------------------------
def test_max_of_n_lognormals_has_the_right_distribution():
    m, iqr, n = 0.01, 0.002, 16
    sigma = math.asinh(iqr / (2 * m)) / statistics.NormalDist().inv_cdf(0.75)
    draw = MaxDraw(m, iqr, random.Random(7), n)
    xs = sorted(draw() for _ in range(20000))
    # P(max <= x) = Phi(ln(x/m)/sigma)^n
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        x = xs[int(q * len(xs))]
        assert statistics.NormalDist().cdf(math.log(x / m) / sigma) ** n == pytest.approx(q, abs=0.015)
    # brute force: the max of n independent lognormal draws
    rng = random.Random(11)
    brute = sorted(max(m * math.exp(sigma * rng.gauss(0, 1)) for _ in range(n)) for _ in range(20000))
    assert statistics.median(xs) == pytest.approx(statistics.median(brute), rel=0.01)
    assert slowest_median(m, iqr, n) == pytest.approx(statistics.median(brute), rel=0.01)
    assert lognormal_sigma(m, iqr) == pytest.approx(sigma)


def test_max_of_n_is_stable_for_huge_n():
    draw = MaxDraw(1.0, 0.1, random.Random(0), 10**9)
    xs = [draw() for _ in range(2000)]
    assert all(math.isfinite(x) and x > 1.0 for x in xs)


# ---- where the network numbers come from ------------------------------------------------------------
def test_defaults_from_the_spec_and_network_tables():
    from hetsam.cost.specscale import get_spec

    h100 = get_spec("H100-SXM")
    cm = profile()
    one_node = Cluster(cm, 1, 8)
    assert one_node.ring_link("cuda:0").bytes_per_second == h100.peer_link["bytes_per_second"]
    many = Cluster(cm, 4, 8)
    link = many.ring_link("cuda:0")
    assert link.bytes_per_second == min(h100.peer_link["bytes_per_second"], 8 * 48e9)  # 8 NDR adapters per node
    assert link.latency_seconds == max(h100.peer_link["latency_seconds"], 5e-6)
    assert Cluster(cm, 4, 1).ring_link("cuda:0").bytes_per_second == 48e9  # one GPU, one adapter per node
    # an A6000's NVLink bridge joins two cards: four per node talk through PCIe
    a6000 = get_spec("A6000")
    four = Cluster(profile(spec="A6000"), 1, 4).ring_link("cuda:0")
    assert (four.bytes_per_second, four.latency_seconds) == (a6000.host_link["bytes_per_second"],
                                                            2 * a6000.host_link["latency_seconds"])
    # no spec: the profile's links (GPU-host, latency twice), and the default node's 100 GbE
    plain = profile(spec=None)
    assert Cluster(plain, 1, 2).ring_link("cuda:0").bytes_per_second == 10e9
    assert Cluster(plain, 2, 1).ring_link("cuda:0").bytes_per_second == 11.5e9
    # overrides win
    assert Cluster(cm, 4, 8, inter_node_bandwidth=1e9).ring_link("cuda:0").bytes_per_second == 1e9
    latency_only = Cluster(cm, 4, 8, inter_node_latency=1e-6).inter_link("cuda:0")
    assert (latency_only.bytes_per_second, latency_only.latency_seconds) == (8 * 48e9, 1e-6)
    # nothing known: a clear error naming the option
    bare = profile(spec=None, links=[])
    with pytest.raises(HetsamInputError, match="intra_node_bandwidth"):
        simulate(Plan("sgd", "cuda:0", batch_size=B), bare, iterations=5, devices_per_node=2)
    assert simulate(Plan("sgd", "cuda:0", batch_size=B), bare, iterations=5, devices_per_node=2,
                    intra_node_bandwidth=1e9).cluster["ring_link"]["bytes_per_second"] == 1e9


def test_rank_ownership():
    cm = profile(gpus=2)
    assert Cluster(cm, 1, 8).rank_cores() == ("cpu:0", 7)
    assert Cluster(cm, 1, 8, sockets_per_node=2).rank_cores() == ("cpu:0", 14)  # 2 x 56 cores / 8 GPUs
    assert Cluster(cm, 1, 8, sockets_per_node=2).rank_pool() == "cpu:0[0-13]"
    assert Cluster(cm, 1, 1).rank_pool() == "cpu:0"
    assert Cluster(cm, 2, 1).spare_gpus() and not Cluster(cm, 2, 2).spare_gpus()
    r = simulate(Plan("async_sam", "cuda:0", "cpu:0", batch_size=B, options={"ascent_batch_size": 16}), cm, iterations=50,
                 nodes=2, devices_per_node=8, **NET)
    assert any("owns 7" in n for n in r.notes)


@pytest.mark.parametrize("kwargs", [
    {"nodes": 0}, {"devices_per_node": 0}, {"nodes": 2.5}, {"inter_node_bandwidth": -1.0},
    {"intra_node_bandwidth": 0.0}, {"inter_node_latency": -1e-6}, {"inter_node_bandwidth": float("nan")},
    {"sockets_per_node": 0}, {"bucket_cap_mb": 0}, {"backward_fraction": 1.5}, {"no_such_option": 1},
])
def test_bad_cluster_arguments(kwargs):
    cm = profile()
    args = {"nodes": 2, "devices_per_node": 2, **kwargs}
    with pytest.raises(HetsamInputError):
        simulate(Plan("sgd", "cuda:0", batch_size=B), cm, iterations=10, **args)
    with pytest.raises(HetsamInputError):
        plan(cm, simulate=False, **args)


# ---- the planner at scale ------------------------------------------------------------------------
def test_planner_with_one_rank_is_the_single_node_planner():
    cm = profile(gpus=2, spread=0.05)
    a = plan(cm)
    b = plan(cm, nodes=1, devices_per_node=1, **NET)
    assert a.plan.to_dict() == b.plan.to_dict()
    assert [c.plan.to_dict() for c in a.candidates] == [c.plan.to_dict() for c in b.candidates]
    assert b.cluster is None


def test_planner_at_scale_prices_sgd_with_the_allreduce():
    cm = profile()
    r = plan(cm, nodes=64, devices_per_node=8, simulate=False, **NET)
    assert r.sgd_seconds == pytest.approx(ddp_step(T_GPU, U_GPU, [1 * MIB, 9 * MIB], 512, 20e9, 7e-6), rel=1e-12)
    assert r.prediction.ranks == 512 and r.cluster["ranks"] == 512


@pytest.mark.parametrize("max_staleness,min_fraction", [(1, 0.125), (2, 0.25), (1, 0.5)])
def test_planner_at_scale_respects_constraints_and_rank_ownership(max_staleness, min_fraction):
    cm = profile(spread=0.05)
    r = plan(cm, nodes=64, devices_per_node=8, sockets_per_node=2, max_staleness=max_staleness,
             min_ascent_fraction=min_fraction, **NET)
    for c in r.candidates:
        p = c.plan
        if p.strategy == "async_sam":
            assert p.option("staleness") <= max_staleness
            assert p.spec.ascent_batch_size(p, B) >= math.ceil(min_fraction * B)
        if p.strategy in ("async_sam", "sampa") and p.effective_ascent_device != p.descent_device:
            assert cm.kind(p.effective_ascent_device) == "cpu"  # the node's one GPU trains
            assert cm.cores(p.effective_ascent_device) <= 14  # 2 x 56 cores / 8 ranks
        if cm.kind(p.descent_device) == "cpu":
            assert cm.cores(p.descent_device) <= 14
    if r.plan.strategy != "sgd":
        assert r.prediction.overhead_vs_sgd >= -0.02  # SAM never much faster than SGD at the same scale


def test_planner_at_scale_gives_gpus_to_ranks():
    cm = profile(gpus=2)
    pairs = {(c.plan.descent_device, c.plan.effective_ascent_device) for c in plan(cm, nodes=4, simulate=False).candidates}
    assert ("cuda:0", "cuda:1") in pairs  # one rank per node: the second GPU is spare
    pairs = {(c.plan.descent_device, c.plan.effective_ascent_device)
             for c in plan(cm, nodes=4, devices_per_node=2, simulate=False).candidates}
    assert ("cuda:0", "cuda:1") not in pairs and ("cuda:1", "cuda:0") not in pairs
    with pytest.raises(HetsamInputError, match="per rank"):
        plan(cm, nodes=4, devices_per_node=8, reserve_cores=8, simulate=False)


# ---- the command line -------------------------------------------------------------------------------
@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / "node.json"
    path.write_text(json.dumps(profile(spread=0.05).profile.to_dict()))
    return str(path)


def test_cli_answers_async_sam_on_64_nodes(profile_path, capsys):
    assert main(["simulate", "--profile", profile_path, "--strategy", "async_sam", "--nodes", "64",
                 "--devices-per-node", "8", "--sockets-per-node", "2", "--ascent-batch-size", "32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cluster"]["ranks"] == 512 and data["plan"]["ascent_device"] == "cpu:0[0-13]"
    assert main(["plan", "--profile", profile_path, "--nodes", "64", "--devices-per-node", "8",
                 "--inter-node-bandwidth", "400", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cluster"]["ring_link"]["bytes_per_second"] == 400e9
    assert data["prediction"]["ranks"] == 512 and "overhead_vs_sgd" in data["prediction"]
    assert main(["plan", "--profile", profile_path, "--nodes", "8", "--devices-per-node", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 node(s) x 8 rank(s) = 64 ranks" in out and "chosen:" in out


@pytest.mark.parametrize("command", ["simulate", "plan"])
@pytest.mark.parametrize("bad", [["--nodes", "0"], ["--devices-per-node", "0"], ["--inter-node-bandwidth", "-1"],
                                 ["--intra-node-bandwidth", "0"], ["--sockets-per-node", "0"],
                                 ["--inter-node-latency-us", "-2"], ["--bucket-cap-mb", "0"]])
def test_cli_bad_cluster_input_exits_2(profile_path, capsys, command, bad):
    extra = ["--strategy", "sgd"] if command == "simulate" else []
    assert main([command, "--profile", profile_path, *extra, "--nodes", "2", *bad]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and bad[0] in err


def test_cli_at_scale_never_imports_torch(profile_path):
    import subprocess
    import sys

    code = ("import sys, io, contextlib\nfrom hetsam.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['plan', '--profile', {profile_path!r}, '--nodes', '64', '--devices-per-node', '8', '--json']) == 0\n"
            f"    assert main(['simulate', '--profile', {profile_path!r}, '--strategy', 'async_sam', '--nodes', '64',"
            " '--devices-per-node', '8', '--ascent-batch-size', '16', '--json']) == 0\n"
            "print('torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
