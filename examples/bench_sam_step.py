"""Benchmark: hetsam.SAM against a plain per-parameter-loop SAM, and each strategy's extra memory.

Run from the repository root::

    python examples/bench_sam_step.py [--batch-size 64] [--rounds 7] [--steps 3] [--threads N]

1. **Step time** on the CIFAR ResNet-20 (``hetsam.profiling.models.ResNet20``), CPU: a whole SAM step
   (two forward/backward passes + the optimizer), hetsam.SAM (foreach ops) against a plain
   per-parameter-loop SAM written here from the equations, side by side in interleaved rounds
   (A B A B ...). Also the optimizer part alone (first_step + second_step on fixed gradients),
   where the two implementations actually differ. Medians and interquartile spread.
2. **Peak extra memory**, in parameter copies, of each AutoSAM strategy (inline executor) and of
   the two SAM implementations, measured with a TorchDispatchMode that follows every tensor
   storage an op creates or touches until it is freed (``PeakBytes``): peak live bytes of a step minus
   the peak of plain SGD on the same model and batch, divided by the parameters' bytes. Transient
   temporaries count too. A second column lists the parameter-sized tensors the strategy keeps
   between steps (``AutoSAM.extra_tensors()``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from hetsam import SAM, AutoSAM, Plan
from hetsam.profiling.models import ResNet20, cross_entropy_loss


class LoopSAM:
    """SAM the plain way (a Python loop over parameters): e = ρ g / ‖g‖, θ ← θ + e, then back."""

    def __init__(self, params, base, rho=0.05, **kw):
        self.params = list(params)
        self.base = base(self.params, **kw)
        self.rho = rho
        self.old = {}

    @torch.no_grad()
    def first_step(self):
        norm = torch.norm(torch.stack([p.grad.norm(2) for p in self.params if p.grad is not None]), 2)
        scale = self.rho / (norm + 1e-12)
        for p in self.params:
            if p.grad is None:
                continue
            self.old[p] = p.detach().clone()
            p.add_(p.grad * scale)
        self.zero_grad()

    @torch.no_grad()
    def second_step(self):
        for p, old in self.old.items():
            p.copy_(old)
        self.base.step()
        self.zero_grad()

    def zero_grad(self):
        self.base.zero_grad()


def sam_step(model, opt, batch):
    cross_entropy_loss(model, batch).backward()
    opt.first_step() if isinstance(opt, LoopSAM) else opt.first_step(zero_grad=True)
    cross_entropy_loss(model, batch).backward()
    opt.second_step() if isinstance(opt, LoopSAM) else opt.second_step(zero_grad=True)


def quartiles(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[1], q[2]


def bench_step(batch_size: int, rounds: int, steps: int, opt_reps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch_size,), generator=gen))
    torch.manual_seed(0)
    base_model = ResNet20()
    arms = {}
    for name, cls in (("hetsam.SAM", SAM), ("loop SAM", LoopSAM)):
        model = copy.deepcopy(base_model)
        arms[name] = (model, cls(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, weight_decay=5e-4))
    for model, opt in arms.values():  # warm-up
        sam_step(model, opt, batch)

    full = {name: [] for name in arms}
    only = {name: [] for name in arms}
    for _ in range(rounds):
        for name, (model, opt) in arms.items():  # A B A B ...
            for _ in range(steps):
                t0 = time.perf_counter()
                sam_step(model, opt, batch)
                full[name].append(time.perf_counter() - t0)
        for name, (model, opt) in arms.items():
            grads = [torch.randn_like(p) for p in model.parameters()]
            for _ in range(opt_reps):
                for p, g in zip(model.parameters(), grads):
                    p.grad = g.clone()
                t0 = time.perf_counter()
                opt.first_step() if isinstance(opt, LoopSAM) else opt.first_step(zero_grad=True)
                for p, g in zip(model.parameters(), grads):
                    p.grad = g.clone()
                opt.second_step() if isinstance(opt, LoopSAM) else opt.second_step(zero_grad=True)
                only[name].append(time.perf_counter() - t0)

    print(f"## SAM step time, ResNet-20, batch {batch_size}, {torch.get_num_threads()} threads, "
          f"{rounds} interleaved rounds x {steps} steps")
    print(f"{'':<12} {'whole step median [ms]':>24} {'IQR':>16}   {'optimizer only median [ms]':>28} {'IQR':>16}")
    for name in arms:
        q = quartiles(full[name])
        o = quartiles(only[name])
        print(f"{name:<12} {q[1] * 1e3:>24.1f} {q[0] * 1e3:>7.1f}-{q[2] * 1e3:<8.1f}   {o[1] * 1e3:>28.3f} "
              f"{o[0] * 1e3:>7.3f}-{o[2] * 1e3:<8.3f}")
    a, b = (statistics.median(full[n]) for n in arms)
    oa, ob = (statistics.median(only[n]) for n in arms)
    print(f"ratio hetsam/loop: whole step {a / b:.3f}, optimizer only {oa / ob:.3f}")


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


class PeakBytes(TorchDispatchMode):
    """Bytes of every tensor storage that an op inside creates or touches, while it lives; peak.

    Storages are followed through weak references, so a storage counts from the first op that
    sees it until it is freed (parameters, gradients, optimizer state, activations, temporaries).
    """

    def __init__(self):
        super().__init__()
        self.live = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def _track(self, tree) -> None:
        for t in tree_flatten(tree)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            if st in self.live:
                continue
            n = st.nbytes()
            self.live[st] = weakref.ref(st, lambda _, n=n: self._free(n))
            self.current += n
            self.peak = max(self.peak, self.current)

    def _free(self, n: int) -> None:
        self.current -= n

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._track((args, kwargs))
        out = func(*args, **(kwargs or {}))
        self._track(out)
        return out


def bench_memory(batch_size: int, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch_size, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch_size,), generator=gen))
            for _ in range(steps + 3)]
    quarter = max(1, batch_size // 4)
    cases = {
        "sgd": dict(plan="sgd"),
        "sam": dict(plan="sam"),
        "rst p=1": dict(plan="rst", options={"sam_probability": 1.0}),
        "g-rst p=1 a=0.5": dict(plan="rst", options={"sam_probability": 1.0, "grst_alpha": 0.5}),
        "async_sam t=1 b/4": dict(plan=Plan(strategy="async_sam", options={"staleness": 1, "ascent_batch_size": quarter})),
        "async_sam t=2 b/4": dict(plan=Plan(strategy="async_sam", options={"staleness": 2, "ascent_batch_size": quarter})),
        "async_sam t=1 b": dict(plan=Plan(strategy="async_sam", options={"staleness": 1})),
        "sampa l=0.2": dict(plan=Plan(strategy="sampa")),
    }
    torch.manual_seed(0)
    proto = ResNet20()
    param_bytes = sum(p.numel() * p.element_size() for p in proto.parameters())
    peaks, held = {}, {}

    def measure(name, build, step):
        model = copy.deepcopy(proto)
        tracker = PeakBytes()
        with tracker:
            opt = build(model)
            for batch in data[:2]:  # warm-up: optimizer state, replica, pending results exist
                step(opt, model, batch, data)
            tracker.reset_peak()
            for batch in data[2:]:
                step(opt, model, batch, data)
        peaks[name] = tracker.peak
        held[name] = _storage_bytes(opt.extra_tensors()) / param_bytes if isinstance(opt, AutoSAM) else float("nan")
        if isinstance(opt, AutoSAM):
            opt.close()

    def autosam_step(opt, model, batch, data):
        i = next(k for k, b in enumerate(data) if b is batch)
        opt.step(batch, upcoming=data[i + 1:i + 3])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, kw in cases.items():
            measure(name, lambda m, kw=kw: AutoSAM(m, cross_entropy_loss, torch.optim.SGD, executor="inline", seed=0,
                                                   lr=0.05, momentum=0.9, **kw), autosam_step)
        for name, cls in (("hetsam.SAM (optimizer)", SAM), ("loop SAM (optimizer)", LoopSAM)):
            measure(name, lambda m, cls=cls: cls(m.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9),
                    lambda opt, model, batch, data: sam_step(model, opt, batch))

    print(f"\n## Peak extra memory in parameter copies, ResNet-20 ({param_bytes / 2**20:.2f} MiB of parameters), "
          f"batch {batch_size}, inline executor")
    print(f"{'strategy':<24} {'peak - SGD peak [copies]':>26} {'held between steps [copies]':>29}")
    for name in peaks:
        held_text = "-" if held[name] != held[name] else f"{held[name]:.2f}"
        print(f"{name:<24} {(peaks[name] - peaks['sgd']) / param_bytes:>26.2f} {held_text:>29}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="SAM steps per arm per round")
    parser.add_argument("--opt-reps", type=int, default=20, help="optimizer-only repetitions per arm per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_step(args.batch_size, args.rounds, args.steps, args.opt_reps)
    if not args.skip_memory:
        bench_memory(args.batch_size, args.steps)


if __name__ == "__main__":
    main()
