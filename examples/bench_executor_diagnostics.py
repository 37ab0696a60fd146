"""Why the arrangements of ``hetsam bench`` run as fast as they do: three side-by-side checks.

    python examples/bench_executor_diagnostics.py [--model resnet20] [--batch-size 64] [--rounds 5] [--steps 6]

Checks 2 and 3 run with freed memory retained (as ``hetsam bench`` does), so page faults do
not blur them.

1. **Page faults.** ``forward+backward`` at b with glibc's default allocator and with freed
   memory retained (:func:`hetsam.execution.allocator.apply_policy`), each in a fresh process: the
   step time and the minor page faults per step (``getrusage``).
2. **Thread scaling.** ``forward+backward`` at b and at b/4 on both cores (one thread team of
   two) and on one core (one thread), side by side: the time-sliced arrangement pays
   t_2(b) + t_2(b/4), the two-pool one max(t_1(b), t_1(b/4)) times contention.
3. **The GIL and contention.** The descent at b on core 0 alone, then while a worker *thread*
   of the same process runs b/4 on core 1 (what the threaded executor does), then while a
   separate *process* does: the thread-minus-process difference is what sharing one
   interpreter (the GIL) costs; the process-minus-alone difference is the hardware's.

Rounds interleave the variants (A B C ... A B C ...); medians of the round medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

_CHILD = """
import os, resource, sys, time, statistics, torch
mode, model, b, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["HETSAM_MALLOC"] = "retain" if mode == "retain" else "system"
from hetsam.execution.allocator import apply_policy
from hetsam.profiling.models import reference_model
apply_policy()
if mode == "loop":  # a competing process: forward+backward on one core until killed
    os.sched_setaffinity(0, [int(sys.argv[5])]); torch.set_num_threads(1)
ref = reference_model(model); m = ref.build(); batch = ref.sample_batch(b)
def step():
    m.zero_grad(set_to_none=True); ref.loss_fn(m, batch).backward()
for _ in range(2):
    step()
if mode == "loop":
    print("ready", flush=True)
    while True:
        step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; ts = []
for _ in range(steps):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print(statistics.median(ts), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps)
"""


def _child(*args) -> list[float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def page_faults(model: str, b: int, rounds: int, steps: int) -> None:
    res = {"system": [], "retain": []}
    for _ in range(rounds):
        for mode in res:
            res[mode].append(_child(mode, model, b, steps))
    print(f"1. page faults, {model} forward+backward at b={b}, fresh process per measurement, 2 threads")
    for mode, rows in res.items():
        t = statistics.median(r[0] for r in rows)
        f = statistics.median(r[1] for r in rows)
        print(f"   {mode:7s} allocator: {t * 1e3:7.1f} ms/step, {f:8.0f} minor faults/step")


def _timer(model: str, b: int, threads: int, cpus=None):
    import torch

    from hetsam.profiling.models import reference_model

    ref = reference_model(model)
    m, batch = ref.build(), ref.sample_batch(b)

    def run(n: int) -> float:
        old = os.sched_getaffinity(0)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)
        try:
            ts = []
            for _ in range(n):
                t = time.perf_counter()
                m.zero_grad(set_to_none=True)
                ref.loss_fn(m, batch).backward()
                ts.append(time.perf_counter() - t)
            return statistics.median(ts)
        finally:
            os.sched_setaffinity(0, old)

    return run


def scaling(model: str, b: int, rounds: int, steps: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    bp = max(1, b // 4)
    variants = {f"{n} thread(s), b={size}": _timer(model, size, n, cpus[:n]) for n in (len(cpus), 1) for size in (b, bp)}
    res = {k: [] for k in variants}
    for fn in variants.values():
        fn(2)  # warm-up
    for _ in range(rounds):
        for k, fn in variants.items():
            res[k].append(fn(steps))
    print(f"2. thread scaling, {model} forward+backward (median of {rounds} round medians)")
    for k, v in res.items():
        print(f"   {k:22s} {statistics.median(v) * 1e3:7.1f} ms")
    n = len(cpus)
    t = {k: statistics.median(v) for k, v in res.items()}
    print(f"   time-sliced pays t_{n}(b) + t_{n}(b/4) = {(t[f'{n} thread(s), b={b}'] + t[f'{n} thread(s), b={bp}']) * 1e3:.1f} ms; "
          f"two pools pay max(t_1(b), t_1(b/4)) = {max(t[f'1 thread(s), b={b}'], t[f'1 thread(s), b={bp}']) * 1e3:.1f} ms "
          "before contention")


def gil(model: str, b: int, rounds: int, steps: int) -> None:
    import torch

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("3. skipped: needs two CPUs")
        return
    bp = max(1, b // 4)
    descent = _timer(model, b, 1, [cpus[0]])
    descent(2)

    def worker_thread():
        from hetsam.profiling.models import reference_model

        stop = threading.Event()
        ref = reference_model(model)

        def loop():
            os.sched_setaffinity(0, [cpus[1]])
            torch.get_num_threads()
            torch.set_num_threads(1)
            m, batch = ref.build(), ref.sample_batch(bp)
            while not stop.is_set():
                m.zero_grad(set_to_none=True)
                ref.loss_fn(m, batch).backward()

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        time.sleep(0.5)
        return lambda: (stop.set(), th.join())

    def worker_process():
        argv = [sys.executable, "-c", _CHILD, "loop", model, str(bp), "0", str(cpus[1])]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()  # imports and warm-up done
        return lambda: (p.kill(), p.wait())

    res = {"alone": [], "with a worker thread": [], "with a worker process": []}
    for _ in range(rounds):
        res["alone"].append(descent(steps))
        for name, start in (("with a worker thread", worker_thread), ("with a worker process", worker_process)):
            stop = start()
            try:
                res[name].append(descent(steps))
            finally:
                stop()
    print(f"3. descent at b={b} on core {cpus[0]} (1 thread) while b'={bp} runs on core {cpus[1]}")
    alone = statistics.median(res["alone"])
    for k, v in res.items():
        m = statistics.median(v)
        print(f"   {k:22s} {m * 1e3:7.1f} ms  ({m / alone:.3f}x alone)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", choices=("faults", "scaling", "gil"))
    args = ap.parse_args()
    from hetsam.execution.allocator import apply_policy

    print(f"(checks 2 and 3 run with freed memory retained, as hetsam bench does: {apply_policy()})")
    for name, fn in (("faults", page_faults), ("scaling", scaling), ("gil", gil)):
        if args.only in (None, name):
            fn(args.model, args.batch_size, args.rounds, args.steps)


if __name__ == "__main__":
    main()
