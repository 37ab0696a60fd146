"""hetsam.study: a paired study of the planner's plans on the user's own model (real training on
scikit-learn's digits), its resumable run log, its time budget, its bounds, and the planner
reading its file."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.datasets import load_digits

import hetsam
from hetsam import HetsamInputError
from hetsam.evidence import load_records, optimizer_family
from hetsam.planning.search import plan
from hetsam.strategies import get

PROFILE = "cpu-2core-resnet20"  # plan on a bundled profile: nothing is measured
OPTIONS = {"profile": PROFILE}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread (two threads spin against each other on a busy 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train with 40% of the labels noisy, x_test, y_test): SAM's gain is clear on noisy labels."""
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1000], perm[1000:]
    noise = torch.Generator().manual_seed(1)
    y_train = y[train].clone()
    flip = torch.rand(len(y_train), generator=noise) < 0.4
    y_train[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=noise)
    return x[train], y_train, x[test], y[test]


def loss_fn(model, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(model(x), y)


def accuracy(x, y):
    def evaluate(model):
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()
    return evaluate


class Counting:
    """make_model, counting the models it built (one for planning, one per run trained)."""

    def __init__(self, hidden: int = 32):
        self.hidden, self.calls = hidden, 0

    def __call__(self):
        self.calls += 1
        return torch.nn.Sequential(torch.nn.Linear(64, self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, 10))


def small_study(digits, out, make_model=None, evaluate=None, **kwargs):
    """2 seeds x 2 epochs of SGD, SAM and MSAM on 600 samples (a few seconds)."""
    x, y, x_te, y_te = digits
    args = dict(strategies=["msam"], seeds=2, epochs=2, out=str(out), planner_options=OPTIONS, progress=False,
                lr=0.05, momentum=0.9)
    args.update(kwargs)
    return hetsam.study(make_model or Counting(), loss_fn, (x[:600], y[:600]), evaluate or accuracy(x_te, y_te), **args)


def test_a_reduced_study_writes_evidence_the_planner_places(digits, tmp_path):
    out = tmp_path / "shares.json"
    lines = []
    result = small_study(digits, out, strategies=["msam", "rst"], log=lines.append)
    assert result.seeds == 2 and result.trained == 8 and result.reused == 0 and result.out == str(out)
    assert set(result.scores) == {"sgd", "sam", "msam", "rst"}
    assert all(len(s) == 2 and all(0.0 <= v <= 1.0 for v in s) for s in result.scores.values())
    records = load_records(out)
    assert {r.strategy for r in records} == {"msam", "rst"} and records == result.records
    for r in records:
        assert r.kind == "user" and r.source["seeds"] == 2 and r.source["epochs"] == 2
        assert r.task["base_optimizer"] == "sgd" and r.task["batch_size"] == 64 and r.task["name"] == "Sequential"
        assert get(r.strategy).evidence_point(r.settings, optimizer_family(r.base_optimizer)) is not None
        planned = result.plans[r.strategy]
        assert r.settings == planned.spec.evidence_settings(planned, 64)
    table = result.table()
    assert "SGD" in table and "SAM" in table and "MSAM rho=1" in table and "2 complete paired seed(s)" in table
    assert any("complete seed(s) in" in line for line in lines)
    # the planner reads the file: each record counts where it sits (a claim when SAM did not beat SGD)
    for r in records:
        counts = [next(c for c in report.candidates if c.plan == result.plans[r.strategy]).share.counts
                  for report in (plan(PROFILE, batch_size=64), plan(PROFILE, batch_size=64, shares=str(out)))]
        key = "user" if r.has_number else "claims"
        assert counts[1].get(key, 0) == counts[0].get(key, 0) + 1
    # `hetsam.study` is callable after `import hetsam.study`, too
    import hetsam.study as module

    assert hetsam.study is module and callable(hetsam.study) and module.study is not None


def test_resuming_skips_finished_runs_and_gives_identical_records(digits, tmp_path):
    full = small_study(digits, tmp_path / "a.json")
    calls = {"n": 0}
    x_te, y_te = digits[2], digits[3]

    def interrupted(model):  # Ctrl-C during the third run's score
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return accuracy(x_te, y_te)(model)

    out = tmp_path / "b.json"
    with pytest.raises(KeyboardInterrupt):
        small_study(digits, out, evaluate=interrupted)
    log = json.loads((tmp_path / "b.json.runs.json").read_text())
    assert len(log["runs"]) == 2 and not out.exists()  # two runs kept; no complete pair of seeds yet
    maker = Counting()
    resumed = small_study(digits, out, make_model=maker)
    assert resumed.trained == 4 and resumed.reused == 2 and maker.calls == 1 + 4
    assert [r.to_dict() for r in load_records(out)] == [r.to_dict() for r in full.records]
    assert resumed.scores == full.scores
    again = small_study(digits, out, make_model=(maker := Counting()))
    assert again.trained == 0 and again.reused == 6 and maker.calls == 1  # only the planner's model
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in full.records]
    # a changed setting never reuses the old runs: refused in one line, before anything trains
    with pytest.raises(HetsamInputError, match="other settings.*lr") as err:
        small_study(digits, out, make_model=(maker := Counting()), lr=0.1)
    assert "\n" not in str(err.value) and maker.calls == 1


def test_a_budget_stops_before_a_seed_and_keeps_the_complete_ones(digits, tmp_path):
    out = tmp_path / "shares.json"
    lines = []
    none = small_study(digits, out, budget=1e-6, log=lines.append)
    assert none.seeds == 0 and none.trained == 0 and none.records == [] and none.out is None
    assert "budget" in none.stopped and not out.exists()
    assert any("0 complete seed(s)" in line and "not written" in line for line in lines)
    small_study(digits, out)  # seeds 0 and 1
    more = small_study(digits, out, seeds=4, budget=1e-6)  # the logged seeds need no time; seed 2 does
    assert more.seeds == 2 and more.trained == 0 and more.reused == 6 and "seed 2" in more.stopped
    assert [r.source["seeds"] for r in load_records(out)] == [2]


@pytest.mark.parametrize("change, words", [
    ({"seeds": 1}, "seeds=1"), ({"seeds": 1001}, "seeds=1001"), ({"seeds": 2.5}, "seeds"),
    ({"epochs": 0}, "epochs=0"), ({"epochs": 100_001}, "epochs"), ({"budget": 0}, "budget=0"),
    ({"budget": float("nan")}, "budget"), ({"batch_size": 0}, "batch_size=0"), ({"batch_size": 5000}, "batch_size"),
    ({"rho": 0.0}, "rho"), ({"rho": -1.0}, "rho"), ({"strategies": "msam"}, "strategies"),
    ({"strategies": []}, "strategies"), ({"strategies": ["nope"]}, "nope"), ({"task": ""}, "task"),
    ({"out": "/nonexistent-folder/shares.json"}, "does not exist"), ({"out": "."}, "is a folder"),
    ({"lr": -1.0}, "refuses"), ({"momentum": 0.0, "strategies": ["msam"]}, "momentum"),
    ({"progress": "yes"}, "progress"), ({"log": 3}, "log"),
])
def test_bad_input_is_refused_in_one_line_before_training(digits, tmp_path, change, words):
    maker = Counting()
    change = dict(change)
    out = change.pop("out", tmp_path / "shares.json")
    out = tmp_path if out == "." else out
    with pytest.raises(HetsamInputError, match=words) as err:
        small_study(digits, out, make_model=maker, **change)
    assert "\n" not in str(err.value) and maker.calls <= 1
    assert not (tmp_path / "shares.json").exists() and not (tmp_path / "shares.json.runs.json").exists()


def test_train_data_is_checked_and_read_in_the_same_paired_batches(digits, tmp_path):
    from hetsam.study.runner import PairedData

    x, y = digits[0][:200], digits[1][:200]
    tensors, dataset = PairedData((x, y), 64), PairedData(torch.utils.data.TensorDataset(x, y), 64)
    for a, b in zip(tensors.batches(3, 2), dataset.batches(3, 2), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert [len(b[0]) for b in tensors.batches(0, 1)] == [64, 64, 64, 8]
    assert not torch.equal(next(tensors.batches(0, 1))[1], next(tensors.batches(1, 1))[1])
    for bad, words in (((x, y[:10]), "different lengths"), ((x[:10], y[:10]), "fewer than batch_size"),
                       ([1, 2], "Dataset"), ("data", "Dataset")):
        with pytest.raises(HetsamInputError, match=words):
            hetsam.study(Counting(), loss_fn, bad, accuracy(x, y), epochs=1, out=str(tmp_path / "s.json"),
                         planner_options=OPTIONS, progress=False, lr=0.05)


class ScaledMLP(torch.nn.Module):
    """An MLP 64-64-64-10 whose weights and biases are ``SCALE * u`` with ``u`` the parameters: the
    same network as the plain MLP, on a 1/SCALE larger parameter scale. SGD at lr / SCALE² and SAM
    at ρ / SCALE train it exactly as the plain one; MSAM's own radius ρ = 1 becomes a step of
    SCALE in the plain network's terms, too small to matter."""

    SCALE = 1e-3

    def __init__(self):
        super().__init__()
        layers = [torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 10)]
        self.w = torch.nn.ParameterList([torch.nn.Parameter(m.weight.detach() / self.SCALE) for m in layers])
        self.b = torch.nn.ParameterList([torch.nn.Parameter(m.bias.detach() / self.SCALE) for m in layers])

    def forward(self, x):
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            x = torch.nn.functional.linear(x, w * self.SCALE, b * self.SCALE)
            x = torch.relu(x) if i < len(self.w) - 1 else x
        return x


@pytest.mark.slow
def test_its_file_changes_hetsam_plans_choice_where_its_evidence_is_clear(digits, tmp_path, capsys):
    """The shipped evidence has MSAM at ρ = 1 keep most of SAM's gain, so the planner picks it on
    this profile. On a model whose parameter scale makes ρ = 1 a negligible step it keeps none:
    the study says so clearly, and the planner, reading its file, leaves ρ = 1. Planned again with
    the file, the study measures the planner's next MSAM radius, and so on: once the file covers
    the radii the planner would try, it leaves MSAM."""
    from hetsam.cli import main

    x, y, x_te, y_te = digits
    prior = plan(PROFILE, batch_size=64)
    assert prior.plan.strategy == "msam" and prior.plan.options["rho"] == 1.0, \
        f"this test assumes the shipped evidence picks MSAM rho=1 here, not {prior.plan.describe()}"
    out = str(tmp_path / "shares.json")
    s = ScaledMLP.SCALE
    args = dict(strategies=["msam"], seeds=5, epochs=30, out=out, progress=False, rho=0.2 / s, lr=0.05 / s ** 2,
                momentum=0.9)
    first = hetsam.study(ScaledMLP, loss_fn, (x, y), accuracy(x_te, y_te), planner_options=OPTIONS, **args)
    sgd, sam = (sum(first.scores[k]) / 5 for k in ("sgd", "sam"))
    assert sam > sgd + 0.02  # SAM's gain is clear...
    (record,) = first.records
    assert record.settings == {"rho": 1.0} and abs(record.share) < 0.3 and record.se < 0.15  # ...and MSAM keeps none

    after = plan(PROFILE, batch_size=64, shares=out)
    assert after.plan != prior.plan  # the choice changes
    old, new = (next(c for c in r.candidates if c.plan == prior.plan) for r in (prior, after))
    assert new.share.value < old.share.value - 0.3 and new.share.counts.get("user") == 1  # towards the study
    assert after.chosen.objective_value > new.objective_value
    assert main(["plan", "--profile", PROFILE, "--batch-size", "64", "--shares", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plan"] == after.plan.to_dict()  # `hetsam plan --shares` agrees

    measured = {1.0}
    for _ in range(5):  # study the planner's next choice with the file, until it leaves MSAM
        report = plan(PROFILE, batch_size=64, shares=out)
        if report.plan.strategy != "msam":
            break
        rho = report.plan.options["rho"]
        assert rho not in measured
        again = hetsam.study(ScaledMLP, loss_fn, (x, y), accuracy(x_te, y_te),
                             planner_options={**OPTIONS, "shares": out}, **args)
        assert again.trained == 5 and again.reused == 10  # SGD's and SAM's runs are reused
        measured.add(rho)
    records = load_records(out)
    assert {r.settings["rho"] for r in records} == measured
    assert plan(PROFILE, batch_size=64, shares=out).plan.strategy != "msam"


# ---- plans=, a schedule, per-epoch scores, per-seed data, and Runs (examples/time_to_accuracy.py) ----------------
class CountingSchedule:
    """schedule(optimizer, total_steps): a cosine LambdaLR that counts its steps."""

    def __init__(self):
        self.steps, self.totals = 0, []

    def __call__(self, opt, total_steps):
        import math

        self.totals.append(total_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps)
                                                                                       / total_steps)))
        step = sched.step

        def counted():
            self.steps += 1
            step()
        sched.step = counted
        return sched


def test_given_plans_keep_their_labels_step_the_schedule_and_score_every_epoch(digits, tmp_path):
    from hetsam import Plan

    x, y, x_te, y_te = digits
    seen = []

    def per_seed(seed):  # seed s's own labels (the benchmark's noisy labels), the same for every plan
        seen.append(seed)
        return x[:200], y[:200].roll(seed)

    schedule, runs = CountingSchedule(), tmp_path / "runs.json"
    plans = {"sgd": Plan("sgd"), "the SAM row": Plan("sam"), "rst p=0.5": Plan("rst", options={"sam_probability": 0.5}),
             "rst again": Plan("rst", options={"sam_probability": 0.5}), "interval k=2": Plan("interval", options={"k": 2})}
    result = hetsam.study(Counting(), loss_fn, per_seed, accuracy(x_te, y_te), plans=plans, epochs=2, seeds=2,
                          out=None, runs=runs, schedule=schedule, curve=True, progress=False, lr=0.05, momentum=0.9)
    assert list(result.scores) == ["sgd", "the SAM row", "rst p=0.5", "rst again", "interval k=2"]
    assert result.base == "sgd" and result.sam == "the SAM row" and result.out is None
    assert result.trained == 8 and result.reused == 2  # a plan under two labels trains once per seed
    assert result.scores["rst again"] == result.scores["rst p=0.5"]
    assert schedule.totals == [8] * 8 and schedule.steps == 8 * 8  # 200 samples: 4 steps x 2 epochs, stepped each
    assert set(seen) == {0, 1}
    for key, label in result.labels.items():
        assert key == label and all(len(r["curve"]) == 2 and r["curve"][-1][1] == r["score"]
                                    for r in result.runs[key])
        assert all(r["curve"][0][0] <= r["curve"][1][0] == r["seconds"] for r in result.runs[key])
    log = json.loads(runs.read_text())
    assert {r["label"] for r in log["runs"]} == {"sgd", "the SAM row", "rst p=0.5", "interval k=2"}
    assert log["fingerprint"]["lr_schedule"] and log["fingerprint"]["curve"] and log["fingerprint"]["data_per_seed"]
    assert {r.strategy for r in result.records} == {"rst", "interval"} and not (tmp_path / "shares.json").exists()
    # the same call resumes from the log; a call without the schedule is another study, refused
    again = hetsam.study(Counting(), loss_fn, per_seed, accuracy(x_te, y_te), plans=plans, epochs=2, seeds=2,
                         out=None, runs=runs, schedule=schedule, curve=True, progress=False, lr=0.05, momentum=0.9)
    assert again.trained == 0 and again.scores == result.scores
    with pytest.raises(HetsamInputError, match="other settings.*lr_schedule"):
        hetsam.study(Counting(), loss_fn, per_seed, accuracy(x_te, y_te), plans=plans, epochs=2, seeds=2, out=None,
                     runs=runs, curve=True, progress=False, lr=0.05, momentum=0.9)


def test_runs_train_other_epochs_into_the_same_log_unguarded(digits, tmp_path, monkeypatch):
    """What the benchmark's equal-time runs use: hetsam.study.Runs with the study's settings."""
    import hetsam.autosam
    from hetsam import Plan

    made = []
    real = hetsam.autosam.AutoSAM

    def recording(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(hetsam.autosam, "AutoSAM", recording)
    x, y, x_te, y_te = digits
    args = dict(epochs=2, runs=tmp_path / "runs.json", curve=True, lr=0.05, momentum=0.9)
    runs = hetsam.study.Runs(Counting(), loss_fn, (x[:128], y[:128]), accuracy(x_te, y_te), **args)
    first = runs.run(Plan("msam", options={"rho": 3.0}), 1, epochs=3, label="msam rho=3")
    assert first["epochs"] == 3 and len(first["curve"]) == 3 and runs.trained == 1
    assert made and all(kw["guard"] is False and kw["seed"] == 1 for kw in made)  # the strategy's own outcome
    other = hetsam.study.Runs(Counting(), loss_fn, (x[:128], y[:128]), accuracy(x_te, y_te), **args)
    assert other.run(Plan("msam", options={"rho": 3.0}), 1, epochs=3) == first and other.reused == 1
    assert other.find(Plan("msam", options={"rho": 3.0}), 1) is None  # the study's own epochs: not run
    plain = hetsam.study.Runs(Counting(), loss_fn, (x[:128], y[:128]), accuracy(x_te, y_te), epochs=2, lr=0.05)
    with pytest.raises(HetsamInputError, match="momentum"):  # refused before anything trains
        plain.run(Plan("msam"), 0)
    assert plain.trained == 0


@pytest.mark.parametrize("change, words", [
    ({"plans": {}}, "plans must be"), ({"plans": {"a": "rst"}}, "hetsam.Plan"),
    ({"plans": {"a": "P(rst)", "b": "P(rst)"}, "strategies": ["rst"]}, "leave out strategies"),
    ({"plans": {"x": "P(sgd)", "y": "P(sgd)"}}, "both sgd plans"), ({"plans": {"sgd": "P(rst)"}}, "another label"),
    ({"plans": {"a": "P(msam)"}, "momentum": 0.0}, "momentum"), ({"plans": {"": "P(rst)"}}, "label"),
    ({"schedule": 3}, "schedule must be"), ({"curve": "yes"}, "curve"),
    ({"schedule": lambda opt, n: None}, "LR scheduler"),
])
def test_plans_and_the_new_settings_are_refused_in_one_line(digits, tmp_path, change, words):
    from hetsam import Plan

    change = {"plans": {"rst": "P(rst)"}, "strategies": None, "planner_options": None, **change}
    change["plans"] = {k: Plan(v[2:-1]) if isinstance(v, str) and v.startswith("P(") else v
                       for k, v in change["plans"].items()}
    maker = Counting()
    with pytest.raises(HetsamInputError, match=words) as err:
        small_study(digits, tmp_path / "shares.json", make_model=maker, **change)
    assert "\n" not in str(err.value) and not (tmp_path / "shares.json").exists()
    assert not (tmp_path / "shares.json.runs.json").exists()
