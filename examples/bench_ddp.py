"""Step time of AutoSAM on 2 gloo ranks on this machine, next to the simulator's prediction.

    python examples/bench_ddp.py                         # ResNet-20, 32 samples per rank, 3 rounds
    python examples/bench_ddp.py --rounds 5 --json ddp-bench.json

Each configuration is one ``torchrun --nproc-per-node 2 examples/ddp.py`` run (1 intra-op
thread per rank, the descent of rank r pinned to core r); the configurations run in rounds
(A B C D, A B C D, ...) and the table gives the median over rounds of each run's median step
time (after ``--warmup`` steps). First a calibration run times gloo's all-reduce between the two
ranks (one int32 per rank, as the failure agreement sends, and parameter-sized buffers), and the
fitted ring bandwidth and latency are given to the simulator as ``intra_node_bandwidth`` and
``intra_node_latency``; the prediction with the profile's own links is printed too.

The simulator is ``hetsam.simulator.simulate(plan, profile, nodes=1, devices_per_node=2)`` with
the measured profile of this machine (``--profile``). It follows one representative rank: the
descent on one core, and whatever the plan names for the ascent as if that rank owned it. Here
the two ranks share the machine's two cores, so a rank's "spare" core is the other rank's
descent core: the prediction for an ascent worker there ignores that it contends with the other
rank (the simulator's ownership check compares core counts, so it does not flag a one-core pool
that another rank trains on), while the time-sliced plan (ascent on the rank's own
core) is what the planner picks for this machine at 2 ranks.

``agree/step`` is the time per step spent in the ascent-failure agreement (one all-reduce of 2
int32), which includes waiting for the slower rank (a wait DDP's all-reduce would otherwise
absorb); its cost is the difference between the time-sliced runs with and without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DDP = ROOT / "examples" / "ddp.py"


def configs(b_prime: int) -> list[tuple[str, list[str], dict]]:
    """(label, ddp.py arguments, simulator plan fields)."""
    own = "cpu:0[{local_rank}]"
    other = "cpu:0[{next_local_rank}]"
    return [
        ("sgd", ["--strategy", "sgd", "--descent-device", own], dict(strategy="sgd", descent_device="cpu:0[0]")),
        ("sam", ["--strategy", "sam", "--descent-device", own], dict(strategy="sam", descent_device="cpu:0[0]")),
        (f"async_sam b'={b_prime} time-sliced",
         ["--strategy", "async_sam", "--descent-device", own, "--ascent-batch-size", str(b_prime)],
         dict(strategy="async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[0]",
              options={"ascent_batch_size": b_prime})),
        (f"async_sam b'={b_prime} time-sliced, no agreement",
         ["--strategy", "async_sam", "--descent-device", own, "--ascent-batch-size", str(b_prime), "--no-fault-agreement"],
         dict(strategy="async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[0]",
              options={"ascent_batch_size": b_prime})),
        (f"async_sam b'={b_prime} worker on the other core",
         ["--strategy", "async_sam", "--descent-device", own, "--ascent-device", other, "--ascent-batch-size", str(b_prime)],
         dict(strategy="async_sam", descent_device="cpu:0[0]", ascent_device="cpu:0[1]",
              options={"ascent_batch_size": b_prime})),
    ]


def torchrun(args: list[str], timeout: float) -> float | None:
    """Run 2 ranks; returns the share of the usable CPUs that *other* processes used meanwhile
    (machine busy time minus ours, through psutil and ``RUSAGE_CHILDREN``), or None."""
    import resource

    import psutil

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *args]

    def busy() -> tuple[float, float, float]:
        t = psutil.cpu_times()
        mine = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), t.user + t.nice + t.system, mine.ru_utime + mine.ru_stime

    before = busy()
    done = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    after = busy()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wall = after[0] - before[0]
    other = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, other) / (wall * len(os.sched_getaffinity(0))) if wall > 0 else None


def wait_quiet(limit: float, threshold: float = 10.0) -> bool:
    """Wait up to ``limit`` seconds for one second in which the machine's CPUs are less than
    ``threshold`` percent busy (nothing of ours runs then); returns whether one came."""
    import psutil

    deadline = time.perf_counter() + limit
    while psutil.cpu_percent(interval=1.0) >= threshold:
        if time.perf_counter() >= deadline:
            return False
    return True


# ---- calibration (runs as a rank under torchrun) --------------------------------------------
def calibrate(path: str, parameters: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")

    def timed(t, reps):
        for _ in range(5):
            dist.all_reduce(t)
        times = []
        for _ in range(reps):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    world = dist.get_world_size()
    agree = timed(torch.zeros(world, dtype=torch.int32), 300)
    sizes = [1 << k for k in range(8, 23, 2)] + [parameters]
    seconds = {n * 4: timed(torch.zeros(n), 60 if n < 1 << 20 else 20) for n in sizes}
    if dist.get_rank() == 0:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"agreement_seconds": agree, "allreduce_seconds": seconds}, fh)
    dist.barrier()  # nobody tears the group down while another rank still uses it
    dist.destroy_process_group()


def fit_ring(seconds: dict[int, float], ranks: int = 2) -> tuple[float, float]:
    """Least-squares fit of T(S) = 2(n−1)/n · S/B + 2(n−1)·α over the measured sizes -> (B, α)."""
    import numpy as np

    s = np.array([float(k) for k in seconds])
    t = np.array(list(seconds.values()))
    a = np.stack([2 * (ranks - 1) / ranks * s, np.full_like(s, 2 * (ranks - 1))], axis=1)
    (inv_b, alpha), *_ = np.linalg.lstsq(a, t, rcond=None)
    return 1.0 / inv_b, max(float(alpha), 0.0)


# ---- the benchmark ---------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "mlp"])
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--ascent-batch-size", type=int, default=4, help="AsyncSAM's b' (the planner's choice at b=32)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default=str(ROOT / "profiles" / "cpu-2core-resnet20.json"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet-seconds", type=float, default=60.0,
                    help="before each run, wait up to this long for a quiet second (other processes idle)")
    ap.add_argument("--max-other-load", type=float, default=0.05,
                    help="measure a run again when other processes used more than this share of the CPUs")
    ap.add_argument("--retries", type=int, default=3, help="at most this many repeats of a noisy run")
    ap.add_argument("--calibrate", default=None, help=argparse.SUPPRESS)  # internal: run as a rank
    ap.add_argument("--parameters", type=int, default=269722, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.calibrate:
        calibrate(args.calibrate, args.parameters)
        # gloo may abort the interpreter's finalization (see examples/ddp.py): leave without it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    import hetsam
    from hetsam.simulator import simulate

    profile = hetsam.load_profile(args.profile)
    load = os.getloadavg()[0]
    noisy = discarded = 0
    with tempfile.TemporaryDirectory() as tmp:
        cal_path = os.path.join(tmp, "calibration.json")
        noisy += not wait_quiet(args.quiet_seconds)
        torchrun([__file__, "--calibrate", cal_path, "--parameters", str(profile.model.parameters)], 300)
        with open(cal_path, encoding="utf-8") as fh:
            cal = json.load(fh)
        bandwidth, latency = fit_ring({int(k): v for k, v in cal["allreduce_seconds"].items()})
        print(f"gloo all-reduce, 2 ranks: agreement (2 int32) {cal['agreement_seconds'] * 1e6:.0f} us; "
              f"ring fit B = {bandwidth / 1e9:.2f} GB/s, alpha = {latency * 1e6:.1f} us; "
              f"{profile.model.parameters * 4 / 1e6:.2f} MB of parameters: "
              f"{cal['allreduce_seconds'][str(profile.model.parameters * 4)] * 1e3:.2f} ms")

        table = configs(args.ascent_batch_size)
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in table}
        for r in range(args.rounds):
            for label, extra, _ in table:
                out = os.path.join(tmp, "run.json")
                for _attempt in range(args.retries + 1):  # again while other processes used the CPUs
                    noisy += not wait_quiet(args.quiet_seconds)
                    other = torchrun([str(DDP), "--model", args.model, "--batch-size", str(args.batch_size),
                                      "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", out, *extra],
                                     900)
                    if other is None or other <= args.max_other_load:
                        break
                    discarded += 1
                    print(f"round {r + 1}: {label:40s} other processes used {other:.0%} of the CPUs: again", flush=True)
                with open(out, encoding="utf-8") as fh:
                    runs[label].append(json.load(fh) | {"other_load": other})
                print(f"round {r + 1}: {label:40s} {runs[label][-1]['median_step_seconds'] * 1e3:7.1f} ms "
                      f"(others {other:.0%})", flush=True)

    rows = []
    base = None
    matches = profile.model.name == args.model
    for label, _, fields in table:
        plan = hetsam.Plan(batch_size=args.batch_size, **fields)
        default = tuned = None
        if matches:  # the profile measured this model
            default = simulate(plan, profile, nodes=1, devices_per_node=2, seed=0)
            tuned = simulate(plan, profile, nodes=1, devices_per_node=2, seed=0, intra_node_bandwidth=bandwidth,
                             intra_node_latency=latency)
        medians = [run["median_step_seconds"] for run in runs[label]]
        measured = statistics.median(medians)
        base = measured if base is None else base
        last = runs[label][-1]
        d = last["stats"].get("distributed", {})
        rows.append({
            "config": label, "measured_ms": measured * 1e3, "round_medians_ms": [m * 1e3 for m in medians],
            "vs_sgd": measured / base,
            "predicted_ms": tuned.iteration_seconds["mean"] * 1e3 if tuned else float("nan"),
            "predicted_profile_links_ms": default.iteration_seconds["mean"] * 1e3 if default else float("nan"),
            "agreement_us_per_step": 1e6 * d.get("agreement_seconds", 0.0) / max(d.get("agreements", 0), 1),
            "ranks_bit_identical": all(run["ranks_bit_identical"] for run in runs[label]),
            "other_load_per_round": [run["other_load"] for run in runs[label]],
            "notes": tuned.notes if tuned else [],
        })
    print(f"\n{args.model}, {args.batch_size} samples per rank, 2 gloo ranks x 1 core, {args.rounds} rounds "
          f"(1-min load average at start {load:.2f}; {noisy} run(s) started without a quiet second, {discarded} noisy run(s) measured again)")
    if not matches:
        print(f"(no prediction: the profile measured {profile.model.name}, not {args.model})")
    print(f"{'config':42s} {'measured':>9s} {'x SGD':>6s} {'predicted':>10s} {'(profile links)':>15s} {'agree/step':>10s}")
    for row in rows:
        print(f"{row['config']:42s} {row['measured_ms']:7.1f}ms {row['vs_sgd']:6.2f} {row['predicted_ms']:8.1f}ms "
              f"{row['predicted_profile_links_ms']:13.1f}ms {row['agreement_us_per_step']:8.0f}us")
        for note in row["notes"]:
            print(f"    note: {note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"calibration": cal, "ring_bandwidth": bandwidth, "ring_latency": latency, "rows": rows,
                       "load_average": load, "noisy_starts": noisy, "discarded_runs": discarded}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
