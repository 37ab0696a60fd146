"""AutoSAM in torch's shape: ``state_dict()`` is torch's ``{"state", "param_groups"}`` plus
``"hetsam"``, torch's state-dict hooks run on it, the older ``{"base", "hetsam"}`` checkpoints
still load and resume exactly, and ``torch.distributed.checkpoint``'s optimizer-state helpers work
in one process. The reference for the shape is torch's own ``Optimizer.state_dict`` run over
AutoSAM's groups and state; for a resume, the run that was never interrupted (bit for bit: the
same arithmetic in the same order)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path

import pytest
import torch
from _alg_refs import SGD_KW, assert_rel_close, batches, flat, loss_fn, mlp, save_load
from test_autosam_checkpoints import attempt, resumes_exactly, same, trained
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

from hetsam import AutoSAM, HetsamInputError
from hetsam.autosam import checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "autosam_checkpoint_old_shape.pt"


def old_shape(opt) -> dict:
    """A checkpoint as hetsam saved it before torch's shape (hetsam/autosam/checkpoint.py then
    returned ``{"base": opt.base_optimizer.state_dict(), "hetsam": <the same entry>}``)."""
    return save_load({"base": opt.base_optimizer.state_dict(), "hetsam": checkpoint.hetsam_state(opt)})


@pytest.mark.parametrize("base", [torch.optim.SGD, torch.optim.Adam], ids=["sgd", "adam"])
def test_state_dict_is_torchs_for_autosams_groups_plus_hetsam(base):
    model = mlp()
    groups = [{"params": list(model[0].parameters()), "rho": 0.1, "lr": 0.05}, {"params": list(model[2].parameters())}]
    kw = {"momentum": 0.9} if base is torch.optim.SGD else {}
    with AutoSAM(model, loss_fn, base, plan="async_sam", executor="inline", params=groups, lr=0.01,
                 log=lambda line: None, **kw) as opt:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no upcoming batches: the independent policy, warned once
            for b in batches(3):
                opt.step(b)
        state = opt.state_dict()
        torchs = torch.optim.Optimizer.state_dict(opt)  # torch's packing over AutoSAM's own groups and state
        assert list(state) == ["state", "param_groups", "hetsam"]
        assert not same({k: state[k] for k in ("state", "param_groups")}, torchs)
        assert sorted(state["state"]) == [0, 1, 2, 3] and [g["params"] for g in state["param_groups"]] == [[0, 1], [2, 3]]
        assert [(g["rho"], g["adaptive"], g["eta"], g["lr"]) for g in state["param_groups"]] == [(0.1, False, 0.0, 0.05),
                                                                                                 (0.05, False, 0.0, 0.01)]
        assert state["hetsam"]["plan"]["strategy"] == "async_sam" and state["hetsam"]["strategy"]["t"] == 3


@pytest.mark.parametrize("case", ["async_sam", "rst", "sampa", "guard_tripped"])
def test_a_checkpoint_of_the_older_shape_loads_and_resumes_exactly(case):
    with trained(case, steps=3) as opt:
        old = old_shape(opt)
        assert set(old) == {"base", "hetsam"}
        assert resumes_exactly(opt, old), case


@pytest.mark.parametrize("case", ["async_sam", "rst"])
def test_a_checkpoint_saved_by_the_older_code_continues_as_this_codes_own_run(case):
    """The fixture was saved by hetsam before torch's shape (tests/fixtures/make_old_checkpoint.py)
    after three steps; this code runs the same three steps and five more, and the fixture loaded
    into a fresh AutoSAM runs the five. Equal bits on the machine that made the fixture; on another
    CPU its kernels may round the first three steps differently, hence a 1e-5 relative tolerance.
    The pending ascent jobs and RST's draws (its generator's state) must agree exactly."""
    from fixtures.make_old_checkpoint import CASES

    saved = torch.load(FIXTURE, weights_only=True)[case]
    assert set(saved["optimizer"]) == {"base", "hetsam"}
    data, rest = batches(5), batches(5, seed=4)

    def run(opt, steps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, b in enumerate(steps):
                opt.step(b, upcoming=(steps[i + 1:] if steps is rest else data[i + 1:]))

    ours = AutoSAM(mlp(), loss_fn, torch.optim.SGD, executor="inline", log=lambda line: None, **SGD_KW, **CASES[case])
    model = mlp(seed=5)
    model.load_state_dict(saved["model"])
    loaded = AutoSAM(model, loss_fn, torch.optim.SGD, executor="inline", log=lambda line: None, **SGD_KW, **CASES[case])
    with ours, loaded:
        run(ours, data[:3])
        loaded.load_state_dict(saved["optimizer"])
        mine, theirs = ours.state_dict()["hetsam"]["strategy"], loaded.state_dict()["hetsam"]["strategy"]
        assert sorted(mine.get("pending", {})) == sorted(theirs.get("pending", {})) and mine["t"] == theirs["t"] == 3
        if case == "rst":
            assert not same(mine["trials"], theirs["trials"])  # its seed, counts and generator
        run(ours, rest)
        run(loaded, rest)
        assert loaded.stats()["steps"] == ours.stats()["steps"] == 8
    assert_rel_close(flat(model), flat(ours.model), tol=1e-5)


def test_a_corrupted_checkpoint_of_the_older_shape_is_refused_whole():
    with trained("async_sam", steps=3) as opt:
        bad = old_shape(opt)
        bad["base"]["state"][0]["momentum_buffer"] = torch.zeros(3)
        assert "state_dict['state'][0]['momentum_buffer']" in attempt(opt, bad)
        bad = old_shape(opt)
        bad["base"] = [1]
        assert "state_dict['base'] must be a dict" in attempt(opt, bad)


def test_the_four_state_dict_hooks_fire_once_and_can_modify_as_torch_documents():
    calls = []
    with trained("async_sam", steps=3) as opt:
        base_calls = []
        opt.base_optimizer.register_state_dict_pre_hook(lambda o: base_calls.append(o))

        def pre(o):  # before the state dict is made: it may change the optimizer
            calls.append("pre")
            o.param_groups[0]["lr"] = 0.07

        def post(o, state):  # on the whole dict, "hetsam" included; may return a new one
            calls.append("post")
            assert "hetsam" in state
            return {**state, "extra": 1}

        def load_pre(o, state):  # on a shallow copy; may return a new dict
            calls.append("load_pre")
            state.pop("extra")
            groups = [dict(g, lr=0.03) for g in state["param_groups"]]
            return {**state, "param_groups": groups}

        def load_post(o):  # after everything loaded
            calls.append(("load_post", o.stats()["steps"], o.param_groups[0]["lr"]))

        handles = [opt.register_state_dict_pre_hook(pre), opt.register_state_dict_post_hook(post),
                   opt.register_load_state_dict_pre_hook(load_pre), opt.register_load_state_dict_post_hook(load_post)]
        state = opt.state_dict()
        assert calls == ["pre", "post"] and base_calls == [opt.base_optimizer]
        assert state["extra"] == 1 and state["param_groups"][0]["lr"] == 0.07
        opt.param_groups[0]["lr"] = 0.5
        opt.load_state_dict(state)
        assert "extra" in state  # the caller's dict is not the one the hooks changed
        assert calls == ["pre", "post", "load_pre", ("load_post", 3, 0.03)]
        assert opt.base_optimizer.param_groups[0]["lr"] == 0.03  # the base optimizer took the hook's dict
        for h in handles:
            h.remove()
        loaded = []
        opt.register_load_state_dict_post_hook(lambda o: loaded.append(o))
        bad = copy.deepcopy(state)
        bad["hetsam"]["steps_before"] = -1
        assert "steps_before" in attempt(opt, bad) and not loaded  # a refused dict loads nothing: no post-hook
        assert set(opt.state_dict()) == {"state", "param_groups", "hetsam"}


def test_torch_distributed_checkpoint_helpers_work_in_one_process():
    """``get_optimizer_state_dict`` keeps torch's two keys (parameter names for ids), so hetsam's entry
    travels beside it; together they resume exactly, also in a fresh AutoSAM through its own
    ``load_state_dict``. ``set_optimizer_state_dict`` loads the base optimizer's state (with a warning:
    hetsam's is not in it); into a fresh AutoSAM it first calls ``step(closure=None)`` to create that
    state, which AutoSAM refuses in one line (a step needs its batch)."""
    with trained("async_sam", steps=3) as opt:
        model_state = copy.deepcopy(opt.model.state_dict())
        saved = save_load({"optim": get_optimizer_state_dict(opt.model, opt), "hetsam": opt.state_dict()["hetsam"]})
        assert set(saved["optim"]) == {"state", "param_groups"} and "0.weight" in saved["optim"]["state"]
        # copies: a loaded optimizer's state aliases the dict's tensors (as torch's does) and the steps change them
        assert resumes_exactly(opt, copy.deepcopy({**saved["optim"], "hetsam": saved["hetsam"]}))
        whole = flat(opt.model).clone()
        with pytest.warns(RuntimeWarning, match="no 'hetsam' entry"):  # torch's two keys alone: the base state only
            set_optimizer_state_dict(opt.model, opt, copy.deepcopy(saved["optim"]))
        buffer = saved["optim"]["state"]["0.weight"]["momentum_buffer"]
        assert torch.equal(opt.state[opt.model[0].weight]["momentum_buffer"], buffer)
    model = mlp(seed=5)
    model.load_state_dict(model_state)
    fresh = AutoSAM(model, loss_fn, torch.optim.SGD, plan="auto", executor="inline", guard={"window": 5}, lr=0.1,
                    momentum=0.9, log=lambda line: None)
    with fresh:
        with pytest.raises(HetsamInputError, match="needs the step's batch"):
            set_optimizer_state_dict(model, fresh, saved["optim"])
        fresh.load_state_dict({**saved["optim"], "hetsam": saved["hetsam"]})
        rest = batches(5, seed=4)  # as resumes_exactly ran them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, b in enumerate(rest):
                fresh.step(b, upcoming=rest[i + 1:])
    assert torch.equal(flat(model), whole)


def test_accelerates_save_state_and_load_state_resume_exactly(tmp_path):
    """Accelerate's checkpoint code saves and loads the prepared optimizer's ``state_dict()``."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    accelerator = Accelerator(cpu=True)
    with trained("async_sam", steps=3) as opt, contextlib.ExitStack() as stack:
        stack.callback(AcceleratorState._reset_state, True)  # Accelerate's state is process-wide: leave none behind
        _, prepared = accelerator.prepare(opt.model, opt)
        assert prepared.optimizer is opt
        accelerator.save_state(str(tmp_path))
        snapshot = copy.deepcopy(opt.model.state_dict())
        rest = batches(5, seed=4)
        for i, b in enumerate(rest):
            opt.step(b, upcoming=rest[i + 1:])
        whole = flat(opt.model).clone()
        opt.model.load_state_dict(snapshot)
        accelerator.load_state(str(tmp_path))
        assert opt.stats()["steps"] == 3
        for i, b in enumerate(rest):
            opt.step(b, upcoming=rest[i + 1:])
        assert torch.equal(flat(opt.model), whole)
