"""Research: does a cheap probe of perturbation alignment predict a strategy's share of SAM's gain?

The AsyncSAM paper motivates stale ascents with the cosine similarity of successive gradients. If
that similarity predicted how much of SAM's gain a cheaper perturbation keeps, the planner could
probe the user's own model for a few steps instead of relying on a table from small tasks.

Along an SGD run of the benchmark's models (``examples/_tasks.py``, the same schedule), at every
``--every``-th step t this measures, against SAM's fresh direction ``g(θ_t; B_t)``, the cosine of
each candidate's perturbation direction:

- AsyncSAM b', τ (lookahead): ``g(θ_{t−τ}; B_t[:b'])``, the stale, smaller-batch gradient;
- SAMPa: ``g(θ_{t−1}; B_{t−1})``, the previous step's gradient (its auxiliary sequence stays
  within a step of θ: an approximation);
- MSAM: ``−m_t``, the SGD momentum it perturbs along;
- RST p, interval k, late-phase start: the fresh direction on their SAM steps and none on the
  others, so their expected alignment is their share of SAM steps.

A configuration's *alignment* is the mean cosine times its share of perturbed steps. The script
then reads the measured shares of a time-to-accuracy run (``--shares-from tta.json``) and prints
the Pearson and Spearman correlations across the configurations both cover. The results file
(read and checked before anything trains: ``examples/_results.py``) and ``--json`` are refused in
one line with exit status 2 when they are not usable.

    python examples/alignment_probe.py --shares-from tta.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import OneLineParser, check_outputs, load_results  # noqa: E402
from _tasks import Task, finite, load_task, loss_fn, model_for, train_labels  # noqa: E402

from hetsam import HetsamInputError  # noqa: E402

BATCH = 64
ASYNC = [(8, 1), (16, 1), (32, 1), (64, 1), (16, 2), (16, 4)]  # (b', τ)


def grad(model, params_values, batch) -> torch.Tensor:
    """g(θ; B) at the given parameter values, flattened."""
    with torch.no_grad():
        for p, v in zip(model.parameters(), params_values):
            p.copy_(v)
    model.zero_grad()
    loss_fn(model, batch).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def probe(task, seed: int, epochs: int, every: int) -> dict[str, list[float]]:
    """Cosines per configuration along an SGD run (module docstring)."""
    x_tr, y_tr = task[0], task[1]
    torch.manual_seed(seed)
    model = model_for(task.name, x_tr)
    scratch = model_for(task.name, x_tr)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    order = torch.Generator().manual_seed(seed)
    total = epochs * math.ceil(len(x_tr) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history = collections.deque(maxlen=max(t for _, t in ASYNC) + 1)  # θ_{t−τ}
    out: dict[str, list[float]] = collections.defaultdict(list)
    prev = None  # (θ_{t−1}, B_{t−1})
    t = 0
    for _ in range(epochs):
        for idx in torch.randperm(len(x_tr), generator=order).split(BATCH):
            batch = (x_tr[idx], y_tr[idx])
            theta = [p.detach().clone() for p in model.parameters()]
            history.append(theta)
            if t % every == 0 and t > max(tau for _, tau in ASYNC):
                fresh = grad(scratch, theta, batch)
                for bp, tau in ASYNC:
                    stale = history[-1 - tau]
                    out[f"async b'={bp} tau={tau}"].append(cos(grad(scratch, stale, (batch[0][:bp], batch[1][:bp])), fresh))
                out["sampa"].append(cos(grad(scratch, prev[0], prev[1]), fresh))
                m = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in model.parameters()])
                out["msam"].append(cos(-m, fresh))  # the direction does not depend on MSAM's radius
            prev = (theta, batch)
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()
            sched.step()
            t += 1
    return out


def measured_shares(path: str) -> dict[str, float]:
    """Config -> share, averaged over the tasks of a time-to-accuracy run (checked on reading)."""
    from time_to_accuracy import summarize

    data = load_results(path)
    shares = collections.defaultdict(list)
    for task in data["tasks"].values():
        for row in summarize(task):  # recomputed from the raw runs
            plan = task["plans"][row["strategy"]]
            key = _key(plan)
            if key is not None and math.isfinite(row["share"]):
                shares[key].append(row["share"])
    return {k: statistics.mean(v) for k, v in shares.items()}


def _key(plan: dict) -> str | None:
    from hetsam import Plan

    name, opts = plan["strategy"], Plan.from_dict(plan).options  # a results file's plan, of any schema
    if name == "async_sam":
        return f"async b'={opts['ascent_batch_size']} tau={opts['staleness']}"
    if name == "rst":
        return f"rst p={opts['sam_probability']}"
    if name == "interval":
        return f"interval k={opts.get('k')}"
    if name == "late_phase":
        return f"late_phase start={opts.get('start')}"
    if name == "msam":
        return f"msam rho={opts.get('rho', 0.3)}"
    if name == "sampa":
        return name
    return None


def pearson(xs, ys) -> float:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy) if sx and sy else float("nan")


def spearman(xs, ys) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = rank
        return r

    return pearson(ranks(xs), ranks(ys))


def main(argv=None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="digits,mnist1d")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=10, help="probe every N-th step")
    ap.add_argument("--shares-from", default=None, help="a time_to_accuracy.py --json file with measured shares")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not (1 <= args.seeds <= 1000 and 1 <= args.epochs <= 10_000 and 1 <= args.every <= 10**6):
        ap.error("out of bounds: --seeds 1 to 1000, --epochs 1 to 10000, --every 1 to 1000000")
    if any(t not in ("digits", "mnist1d") for t in args.tasks.split(",")):
        ap.error("--tasks: digits and/or mnist1d")
    try:
        check_outputs(json=args.json)
        shares = measured_shares(args.shares_from) if args.shares_from else {}  # before the probe, not after
        data = {name: load_task(name, 0.4) for name in args.tasks.split(",")}
        for name, (x_tr, *_) in data.items():
            steps = args.epochs * math.ceil(len(x_tr) / BATCH)
            first = max(tau for _, tau in ASYNC) + 1
            if steps <= first or (steps - 1) // args.every * args.every <= first - 1:
                raise HetsamInputError(f"--every {args.every} probes no step of {name}'s {steps} steps (the first "
                                       f"probe is at step {first} or later); give a smaller --every or more --epochs")
    except HetsamInputError as exc:
        print(f"alignment_probe: {exc}", file=sys.stderr)
        return 2
    return run(args, data, shares)


def run(args, data: dict, shares: dict[str, float]) -> int:
    torch.set_num_threads(1)
    cosines: dict[str, list[float]] = collections.defaultdict(list)
    for name, (x_tr, y_tr, *rest) in data.items():
        for seed in range(args.seeds):
            y = train_labels(name, y_tr, 0.4, seed)
            for k, v in probe(Task(name, (x_tr, y, *rest)), seed, args.epochs, args.every).items():
                cosines[k] += v
    alignment = {k: statistics.mean(v) for k, v in cosines.items()}
    for rho in (0.3, 1.0):
        alignment[f"msam rho={rho}"] = alignment["msam"]
    del alignment["msam"]
    proxy = {k: (int(k.split("'=")[1].split()[0]) / BATCH if k.startswith("async") else 1.0) for k in alignment}
    for p in (0.1, 0.25, 0.5):
        alignment[f"rst p={p}"] = proxy[f"rst p={p}"] = p  # the fresh direction on a share p of the steps
    for k in (2, 5, 10):
        alignment[f"interval k={k}"] = proxy[f"interval k={k}"] = 1 / k
    for start in (0.5, 0.75, 0.9):
        alignment[f"late_phase start={start}"] = proxy[f"late_phase start={start}"] = 1 - start
    print(f"{'configuration':28s} {'alignment':>9s} {'measured share':>15s}")
    for k, a in sorted(alignment.items()):
        s = shares.get(k)
        print(f"{k:28s} {a:9.3f} {'-' if s is None else f'{s:.0%}':>15s}")
    both = [k for k in alignment if k in shares]
    result = {"alignment": alignment, "proxy": proxy, "shares": shares}
    if args.shares_from and len(both) < 3:
        print(f"\n{len(both)} configuration(s) have both an alignment and a measured share in {args.shares_from} "
              "(a share needs SAM to beat SGD there): a correlation needs 3")
    if len(both) >= 3:
        ys = [shares[k] for k in both]
        xs, px = [alignment[k] for k in both], [proxy[k] for k in both]
        result.update(pearson=pearson(xs, ys), spearman=spearman(xs, ys), n=len(both),
                      proxy_pearson=pearson(px, ys), proxy_spearman=spearman(px, ys))
        print(f"\nacross {len(both)} configurations: Pearson r = {result['pearson']:.2f}, "
              f"Spearman rho = {result['spearman']:.2f}; the proxy (b'/b, p, 1/k, 1 - start; 1 for MSAM and "
              f"SAMPa): Pearson r = {result['proxy_pearson']:.2f}, Spearman rho = {result['proxy_spearman']:.2f}")
        probed = [k for k in both if k.startswith(("async", "msam", "sampa"))]
        if len(probed) >= 3:
            xs, ys = [alignment[k] for k in probed], [shares[k] for k in probed]
            result.update(pearson_probed=pearson(xs, ys), spearman_probed=spearman(xs, ys), n_probed=len(probed))
            print(f"only the probed ones ({len(probed)}: AsyncSAM, SAMPa, MSAM): Pearson r = "
                  f"{result['pearson_probed']:.2f}, Spearman rho = {result['spearman_probed']:.2f}")
    if args.json:
        from hetsam.io import write_text

        write_text(args.json, json.dumps(finite(result), indent=1, allow_nan=False), "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
