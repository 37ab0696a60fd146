"""AutoSAM's fixed per-step cost beyond its passes, against a raw loop doing the same passes.

For each arrangement (sgd, sam, rst p=0.5, async_sam time-sliced on ``cpu`` and on two one-core
pools, sampa on the two pools) it times n AutoSAM steps (``executor`` as named) and n steps of a
raw torch loop, alternately (A B A B ...) in ``--rounds`` rounds in one process, and reports the
medians per step, their ratio and their difference (the fixed cost). The raw loops:

* ``sgd``: ``zero_grad; loss_fn(model, batch).backward(); sgd.step()``;
* ``sam``: the ascent pass, e = ρ g/‖g‖ (one ``_foreach_norm``), θ += e, the descent pass, θ −= e,
  ``sgd.step()`` (same passes as AutoSAM's SAM, without its backup copy, BatchNorm freezing and
  non-finite check);
* ``rst``: the SAM loop on as many of the n steps as the AutoSAM segment's coin chose, SGD on the rest;
* ``async_sam`` time-sliced: the SAM loop (both passes on the one thread: what AsyncSAM does there);
* on two pools (``async_sam``, ``sampa``): the descent side alone, one pass + θ ± e + step (the
  critical path if the ascent overlaps perfectly), so the difference also holds any hand-off wait.

``--profile NAME`` prints cProfile's top functions (by own time) for that arrangement instead.
The machine may be shared: compare medians, and read the spread (``q1``/``q3``) beside them.

    python examples/bench_step_overhead.py --model mlp --batch-size 64 --rounds 15
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time

import torch

import hetsam
from hetsam.profiling.models import reference_model

RHO = 0.05
POOLS = ("cpu:0[0]", "cpu:0[1]")


def arrangements(two_cores: bool) -> list[tuple[str, dict, str]]:
    """(name, Plan keywords, raw loop) of every arrangement this machine can run."""
    rows = [("sgd", dict(strategy="sgd"), "sgd"),
            ("sam", dict(strategy="sam"), "sam"),
            ("rst p=0.5", dict(strategy="rst", options={"sam_probability": 0.5}), "rst"),
            ("async_sam cpu (sliced)", dict(strategy="async_sam", descent_device="cpu", ascent_device="cpu"), "sam")]
    if two_cores:
        rows += [("async_sam 2 pools", dict(strategy="async_sam", descent_device=POOLS[0], ascent_device=POOLS[1]), "descent"),
                 ("sampa 2 pools", dict(strategy="sampa", descent_device=POOLS[0], ascent_device=POOLS[1]), "sgd1")]
    return rows


class Raw:
    """The raw loops (module docstring) on a model and SGD of their own."""

    def __init__(self, ref, batch):
        torch.manual_seed(0)
        self.model, self.loss_fn, self.batch = ref.build(), ref.loss_fn, batch
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.sgd = torch.optim.SGD(self.params, lr=0.01, momentum=0.9)

    def pass_(self):
        self.sgd.zero_grad(set_to_none=True)
        self.loss_fn(self.model, self.batch).backward()

    def sgd_step(self):
        self.pass_()
        self.sgd.step()

    @torch.no_grad()
    def perturbation(self):
        g = [p.grad for p in self.params]
        norm = torch.stack(torch._foreach_norm(g)).norm()
        return torch._foreach_mul(g, RHO / (float(norm) + 1e-12))

    def sam_step(self):
        self.pass_()
        e = self.perturbation()
        with torch.no_grad():
            torch._foreach_add_(self.params, e)
        self.pass_()
        with torch.no_grad():
            torch._foreach_sub_(self.params, e)
        self.sgd.step()

    def descent_step(self):
        """One pass at θ + e (e from the last step's gradient) and the update: AsyncSAM's descent side."""
        e = self.perturbation() if self.params[0].grad is not None else None
        if e is not None:
            with torch.no_grad():
                torch._foreach_add_(self.params, e)
        self.pass_()
        if e is not None:
            with torch.no_grad():
                torch._foreach_sub_(self.params, e)
        self.sgd.step()

    def run(self, kind: str, n: int, sam_steps: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            if kind == "sam" or (kind == "rst" and i < sam_steps):
                self.sam_step()
            elif kind == "descent":
                self.descent_step()
            else:  # sgd, sgd1 (SAMPa's descent side: one pass and the update), rst's SGD steps
                self.sgd_step()
        return (time.perf_counter() - start) / n


def make_opt(ref, plan_kwargs, executor):
    torch.manual_seed(0)
    model = ref.build()
    return hetsam.AutoSAM(model, ref.loss_fn, torch.optim.SGD, rho=RHO, plan=hetsam.Plan(**plan_kwargs),
                          executor=executor, lr=0.01, momentum=0.9, log=lambda line: None)


def sam_count(opt) -> int:
    trials = getattr(opt._parts.rule, "trials", None)
    return trials.sam_steps if trials is not None else 0


def timed_steps(opt, batch, n: int) -> tuple[float, int]:
    """Seconds per step over n AutoSAM steps, and how many of them were RST's SAM steps."""
    before = sam_count(opt)
    start = time.perf_counter()
    for _ in range(n):
        loss = opt.step(batch, upcoming=[batch])
    float(loss)  # the last step's work is done (one sync, as a loop that logs its loss has)
    return (time.perf_counter() - start) / n, sam_count(opt) - before


def measure(args) -> dict:
    ref = reference_model(args.model)
    batch = ref.sample_batch(args.batch_size)
    two = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2
    rows = [r for r in arrangements(two) if args.only is None or r[0] in args.only]
    results = []
    for name, plan_kwargs, raw_kind in rows:
        raw, opt = Raw(ref, batch), make_opt(ref, plan_kwargs, args.executor)
        try:
            timed_steps(opt, batch, args.warmup)  # first-step work (plan line, worker start, allocator)
            raw.run(raw_kind, args.warmup, args.warmup // 2)
            auto_t, raw_t = [], []
            for _ in range(args.rounds):  # A B A B ...: both see the same machine state
                a, k = timed_steps(opt, batch, args.steps)
                auto_t.append(a)
                raw_t.append(raw.run(raw_kind, args.steps, k))
        finally:
            opt.close()
        results.append(row(name, raw_kind, auto_t, raw_t))
    return {"model": args.model, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "executor": args.executor, "rounds": args.rounds, "steps": args.steps, "rows": results}


def row(name, raw_kind, auto_t, raw_t) -> dict:
    def q(xs, i):
        return statistics.quantiles(xs, n=4)[i] * 1e3 if len(xs) > 1 else xs[0] * 1e3

    diffs = [a - r for a, r in zip(auto_t, raw_t)]  # per round: the two segments ran back to back
    return {"arrangement": name, "raw": raw_kind,
            "autosam_ms": statistics.median(auto_t) * 1e3, "raw_ms": statistics.median(raw_t) * 1e3,
            "ratio": statistics.median(a / r for a, r in zip(auto_t, raw_t)),
            "overhead_ms": statistics.median(diffs) * 1e3, "overhead_q1_ms": q(diffs, 0), "overhead_q3_ms": q(diffs, 2)}


def print_table(data: dict) -> None:
    print(f"{data['model']} b={data['batch_size']} threads={data['threads']} executor={data['executor']} "
          f"({data['rounds']} rounds x {data['steps']} steps; medians per step)")
    print(f"{'arrangement':<24}{'raw':>9}{'AutoSAM ms':>12}{'raw ms':>9}{'ratio':>7}{'extra ms':>10}{'  [q1, q3]':>16}")
    for r in data["rows"]:
        print(f"{r['arrangement']:<24}{r['raw']:>9}{r['autosam_ms']:>12.3f}{r['raw_ms']:>9.3f}{r['ratio']:>7.2f}"
              f"{r['overhead_ms']:>10.3f}  [{r['overhead_q1_ms']:.3f}, {r['overhead_q3_ms']:.3f}]")


def profile(args) -> str:
    """cProfile of ``--steps`` x ``--rounds`` AutoSAM steps of one arrangement: top functions by own time."""
    ref = reference_model(args.model)
    batch = ref.sample_batch(args.batch_size)
    two = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2
    match = [r for r in arrangements(two) if r[0] == args.profile]
    if not match:
        raise SystemExit(f"--profile {args.profile!r}: choose one of {', '.join(r[0] for r in arrangements(two))}")
    opt = make_opt(ref, match[0][1], args.executor)
    try:
        timed_steps(opt, batch, args.warmup)
        n = args.steps * args.rounds
        prof = cProfile.Profile()
        prof.enable()
        timed_steps(opt, batch, n)
        prof.disable()
    finally:
        opt.close()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    print(f"{args.profile}: {n} steps; divide the times by {n} for per step", file=out)
    stats.sort_stats("tottime").print_stats(args.top)
    return out.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", help="a reference model (hetsam.profiling.models)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (medians over them)")
    parser.add_argument("--steps", type=int, default=20, help="steps per segment")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads of the calling thread (0: as is)")
    parser.add_argument("--executor", default="threads", choices=("threads", "inline"))
    parser.add_argument("--only", nargs="*", default=None, help="arrangement names to run (default: all)")
    parser.add_argument("--profile", default=None, help="print cProfile's top functions for this arrangement instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line after the table")
    args = parser.parse_args(argv)
    for flag in ("batch_size", "rounds", "steps", "warmup"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print(profile(args))
        return 0
    data = measure(args)
    print_table(data)
    if args.json:
        print(json.dumps(data))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
