"""AutoSAM.load_state_dict is all or nothing: a corrupted or foreign checkpoint raises one
HetsamInputError naming the key and leaves the optimizer exactly as it was (its state_dict,
tensors included, its plan and its running parts); a valid one still resumes exactly.

The corrupted checkpoints are made from real ones of every strategy, one change at a time, at
every key: removed, mistyped, negative, not finite, another shape or dtype; then whole foreign
parts: another strategy's state, another model's shapes, another strategy's plan.
"""

from __future__ import annotations

import copy
import math
import re
import warnings

import pytest
import torch
from _alg_refs import batches, flat, loss_fn, mlp, save_load
from torch import nn

from hetsam import AutoSAM, HetsamInputError, Plan

CASES = {
    "sgd": dict(plan="sgd"),
    "sam": dict(plan="sam"),
    "async_sam": dict(plan=Plan("async_sam", options={"staleness": 2, "ascent_batch_size": 8})),  # two pending ĝ
    "sampa": dict(plan=Plan("sampa", options={"sampa_lambda": 0.5})),
    "rst": dict(plan=Plan("rst", options={"sam_probability": 0.5}), seed=0),
    "msam": dict(plan=Plan("msam", options={"rho": 0.3})),
    "interval": dict(plan=Plan("interval", options={"k": 2})),
    "late_phase": dict(plan="late_phase", total_steps=6, warmup_steps=1),
    "adam": dict(plan="sam", base=torch.optim.Adam),
    "guard_tripped": dict(plan=Plan("msam", options={"rho": 0.3}), poison=3),  # the guard switched to SAM
}
# keys a checkpoint may lack (older ones did; the defaults apply), by name
OPTIONAL = {"steps_before", "total_steps", "warmup_steps", "skipped_updates", "guard", "scaler", "sam_steps", "climbs",
            "warmup_skipped", "last_lrs", "deferred", "dropped", "events", "watch", "nesterov", "maximize", "foreach",
            "differentiable", "fused", "amsgrad", "capturable", "decoupled_weight_decay"}


def trained(case: str, model: nn.Module | None = None, steps: int = 6):
    """An AutoSAM of ``case`` after a few steps (inline executor, a guard window of 5)."""
    kw = dict(CASES[case])
    base, poison = kw.pop("base", torch.optim.SGD), kw.pop("poison", None)
    options = {"lr": 0.01} if base is torch.optim.Adam else {"lr": 0.1, "momentum": 0.9}
    calls = [0]

    def fn(m, b):
        calls[0] += 1
        loss = loss_fn(m, b)
        return loss * float("nan") if calls[0] == poison else loss

    model = model or mlp()
    opt = AutoSAM(model, fn, base, executor="inline", guard={"window": 5}, log=lambda line: None, **options, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = batches(steps + 2)  # the next batches are known: AsyncSAM's ĝ for steps 6, 7 are pending
        for i in range(steps):
            opt.step(data[i], upcoming=data[i + 1:])
    return opt


def same(a, b, path="") -> list[str]:
    """Where two state dicts differ (tensors by value and dtype)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and (torch.equal(a, b) or a.is_floating_point()
                                        and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [path + " keys"]
        return [d for k in a for d in same(a[k], b[k], f"{path}[{k!r}]")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [path + " length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in same(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if type(a) is type(b) and a == b else [path]


def attempt(opt, bad) -> str | None:
    """Load ``bad``: None when it loaded, else the refusal, after checking that nothing changed."""
    before, plan, parts = copy.deepcopy(opt.state_dict()), opt.plan, opt._parts
    try:
        opt.load_state_dict(bad)
    except HetsamInputError as exc:
        message = str(exc)
        assert "\n" not in message and message
        changed = same(opt.state_dict(), before)
        assert not changed and opt.plan is plan and opt._parts is parts, (message, changed)
        return message
    return None


def _walk(value, path=()):
    """(path, value) of every entry under ``value``; the user's batch is data, not state."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, child in items:
        yield path + (key,), child
        if key != "prev_batch":
            yield from _walk(child, path + (key,))


def _set(doc, path, value=None, remove=False):
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):  # betas
        grand = doc
        for key in path[:-2]:
            grand = grand[key]
        items = list(parent)
        items[path[-1]] = value
        grand[path[-2]] = tuple(items)
    elif remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def corruptions(checkpoint):
    """(label, corrupted checkpoint, whether it may load) for one change at every key."""
    for path, value in _walk(checkpoint):
        label = "/".join(map(str, path))
        if path[-1] == "prev_batch" or path[:2] == ("hetsam", "format"):
            continue
        under_plan, under_state = path[:2] == ("hetsam", "plan"), path[:1] == ("state",)
        if isinstance(path[-1], str) or (under_state and len(path) == 2) or path[-2:-1] == ("pending",):
            # without "hetsam", torch's two keys alone: the base state loads (with a warning)
            optional = (path[-1] in OPTIONAL or (under_plan and path[-1] != "strategy") or (under_state and len(path) == 2)
                        or path[-2:-1] in (("counts",), ("pending",)) or path == ("hetsam",))
            removed = _set(checkpoint, path, remove=True)
            if under_state and len(path) == 3:  # a key of one parameter's state: fine when none is left
                optional = not _get(removed, path[:-1])
            yield f"{label} removed", removed, optional
        yield f"{label} mistyped", _set(checkpoint, path, 3 if isinstance(value, str) else "x"), False
        if isinstance(value, int) and not isinstance(value, bool):
            yield f"{label} negative", _set(checkpoint, path, -1), False
        if isinstance(value, float):
            yield f"{label} NaN", _set(checkpoint, path, float("nan")), "pending" in path
        if isinstance(value, torch.Tensor):
            yield f"{label} reshaped", _set(checkpoint, path, torch.zeros(value.numel() + 1, dtype=value.dtype)), False
            other = torch.int64 if value.is_floating_point() else torch.float32
            yield f"{label} as {other}", _set(checkpoint, path, value.to(other)), path[-1] == "step"
            if value.is_floating_point() and value.numel() > 1:
                nan = torch.full_like(value, float("nan"))
                yield f"{label} NaN", _set(checkpoint, path, nan), "pending" in path or "g_y" in path


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_corrupted_checkpoint_is_refused_in_one_line_and_changes_nothing(case):
    opt = trained(case)
    with opt:
        checkpoint = save_load(opt.state_dict())
        if case == "guard_tripped":
            assert checkpoint["hetsam"]["guard"]["events"] and opt.plan.strategy == "sam"
        wrong, refused = [], 0
        for label, bad, may_load in corruptions(checkpoint):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # 'hetsam' removed: the base state loads, warned
                message = attempt(opt, bad)
            if message is None:
                if not may_load:
                    wrong.append(f"{label}: loaded")
                opt.load_state_dict(checkpoint)  # back to the real state for the next change
            else:
                refused += 1
        assert not wrong, wrong
        assert refused > 20


STRATEGIES = ("sam", "sampa", "async_sam", "rst", "msam", "interval")


@pytest.fixture(scope="module")
def states():
    return {case: save_load(trained(case).state_dict()) for case in STRATEGIES}


@pytest.mark.parametrize("into, taken", [(a, b) for a in STRATEGIES for b in STRATEGIES if a != b])
def test_another_strategys_state_or_plan_is_refused(states, into, taken):
    """The strategy state of one strategy under the plan of another, and another strategy's plan.
    SAM's state, only a step counter, is also a valid (older) state of interval and MSAM."""
    with trained(into) as opt:
        checkpoint = copy.deepcopy(states[into])
        checkpoint["hetsam"]["strategy"] = states[taken]["hetsam"]["strategy"]
        if not (taken == "sam" and into in ("interval", "msam")):
            assert "['strategy']" in attempt(opt, checkpoint)
        assert "strategy" in attempt(opt, states[taken])


def test_a_checkpoint_of_another_model_is_refused_before_the_next_step():
    wide = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
    with trained("sam", model=wide) as other, trained("sam") as opt:
        message = attempt(opt, save_load(other.state_dict()))
        assert "shape (32, 10)" in message and "(16, 10)" in message and "state_dict['state']" in message


@pytest.mark.parametrize("case", ["async_sam", "sampa", "guard_tripped"])
def test_a_fresh_optimizer_adopts_a_valid_checkpoint_and_refuses_a_corrupted_one_whole(case):
    """plan="auto" before its first step builds the saved plan's parts aside: a refusal leaves no
    plan and no parts (its executor closed); a valid checkpoint then resumes exactly."""
    source = trained(case, steps=4)
    checkpoint, model_state = save_load(source.state_dict()), copy.deepcopy(source.model.state_dict())
    rest = batches(10)[4:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, b in enumerate(rest):
            source.step(b, upcoming=rest[i + 1:])
    whole = flat(source.model).clone()
    source.close()
    model = mlp(seed=5)
    model.load_state_dict(model_state)
    opt = AutoSAM(model, loss_fn, torch.optim.SGD, plan="auto", executor="inline", guard={"window": 5},
                  log=lambda line: None, lr=0.1, momentum=0.9, total_steps=CASES[case].get("total_steps"))
    with opt:
        bad = copy.deepcopy(checkpoint)
        bad["hetsam"]["strategy"]["t"] = -1
        assert "['strategy']['t']" in attempt(opt, bad) and opt.plan is None and opt._parts is None
        opt.load_state_dict(checkpoint)
        assert opt.plan == Plan.from_dict(checkpoint["hetsam"]["plan"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, b in enumerate(rest):
                opt.step(b, upcoming=rest[i + 1:])
    assert torch.equal(flat(model), whole)


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c["hetsam"].__setitem__("steps_before", -3), r"\['steps_before'\]=-3"),
    (lambda c: c["hetsam"].__setitem__("skipped_updates", 1.5), "skipped_updates"),
    (lambda c: c["hetsam"].__setitem__("total_steps", 0), "total_steps"),
    (lambda c: c["hetsam"]["guard"]["events"].append({"step": -1}), r"\['events'\]\[0\]"),
    (lambda c: c["hetsam"]["guard"].__setitem__("watch", {"recent": [float("inf")], "best": None, "first": None}),
     r"\['recent'\]\[0\]"),
    (lambda c: c["hetsam"].__setitem__("scaler", {"scale": -1.0}), "scaler"),
    (lambda c: c["param_groups"][0].__setitem__("lr", float("nan")), r"\['lr'\]|lr=nan"),
    (lambda c: c["param_groups"][0].__setitem__("lr", -0.1), "lr=-0.1"),
    (lambda c: c["param_groups"][0].pop("rho"), "'rho'"),
    (lambda c: c["param_groups"][0]["params"].pop(), "lists 3 parameters"),
    (lambda c: c["state"].__setitem__(9, {}), "no parameter group lists parameter 9"),
    (lambda c: c["hetsam"].__setitem__("extra", 1), "unknown key"),
    (lambda c: c.__setitem__("hetsam", None), "format"),
], ids=["negative-steps", "float-counter", "zero-total-steps", "bad-event", "inf-loss-window", "bad-scaler", "nan-lr",
        "negative-lr", "group-without-rho", "group-size", "state-for-no-parameter", "unknown-key", "no-entry"])
def test_each_refusal_names_its_key(mutate, match):
    with trained("msam") as opt:
        checkpoint = save_load(opt.state_dict())
        mutate(checkpoint)
        message = attempt(opt, checkpoint)
        assert message is not None and re.search(match, message), message


def resumes_exactly(opt, state, steps: int = 5) -> bool:
    """Run ``steps`` more steps, rewind the model, load ``state``, run them again: the same θ?"""
    snapshot = copy.deepcopy(opt.model.state_dict())
    rest = batches(steps, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, b in enumerate(rest):
            opt.step(b, upcoming=rest[i + 1:])
        whole = flat(opt.model).clone()
        opt.model.load_state_dict(snapshot)
        opt.load_state_dict(state)
        for i, b in enumerate(rest):
            opt.step(b, upcoming=rest[i + 1:])
    return torch.equal(flat(opt.model), whole)


def test_valid_checkpoints_of_every_case_still_load_and_resume_exactly():
    for case in CASES:
        opt = trained(case, steps=3)
        assert resumes_exactly(opt, save_load(opt.state_dict()), steps=6), case
        opt.close()
