"""Property-based fuzzing of everything a user or a file can hand hetsam.

The properties (see docs/architecture.md, "Bad input"):
- the JSON reader, the profile and plan readers and the device-name parser either accept their
  input or raise ``HetsamInputError``, and whatever they accept can be planned and simulated;
- every CLI command exits 0, or 2 with exactly one line on stderr and no traceback; never 1
  (a bug), and never after more than a few seconds or a few hundred MB;
- AutoSAM's constructor, ``add_param_group`` and ``load_state_dict`` (on mutated real checkpoints)
  accept their input, after which steps run, or refuse it with one ``HetsamInputError`` line; a
  refused checkpoint or group leaves the optimizer exactly as it was.

CI runs 100 examples per property, derandomized (``HETSAM_FUZZ`` unset). ``HETSAM_FUZZ=long``
runs 2,000 per property with fresh randomness, by hand::

    HETSAM_FUZZ=long python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import math
import os
import resource
import signal
import time

import pytest
from _profiles import synthetic_profile_dict
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hetsam import HetsamInputError, Plan, strategies
from hetsam.cli import main
from hetsam.evidence import EVIDENCE_DIR
from hetsam.hardware.names import parse_device
from hetsam.io import loads, read_json
from hetsam.profiling.schema import Profile, load_profile, reference_profile_names

EVIDENCE_FILE = EVIDENCE_DIR / "hetsam.json"

LONG = os.environ.get("HETSAM_FUZZ") == "long"
settings.register_profile("hetsam-ci", max_examples=100, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("hetsam-long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("hetsam-long" if LONG else "hetsam-ci")

# "a few seconds" to accept or reject any input, as this process's CPU time (all its threads): what
# other processes on the machine do does not count, as it would in seconds of the wall clock
SECONDS = 15.0
HANG = 10 * SECONDS  # wall-clock seconds: only a hang, which uses no CPU, gets this far
EXTRA_MB = 300  # "a few hundred MB": growth of the process's peak memory during one property's examples
for _library in ("torch", "matplotlib.pyplot"):  # what a command may import: not input-driven growth
    importlib.import_module(_library)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_BASE_RSS_MB = _peak_mb()


@pytest.fixture(autouse=True)
def _memory_base():
    """The process's peak so far (earlier tests in the same process may have raised it)."""
    global _BASE_RSS_MB
    _BASE_RSS_MB = _peak_mb()


class _TooSlow(BaseException):  # BaseException: nothing in hetsam may swallow it
    pass


@contextlib.contextmanager
def bounded(what):
    """Fail if the body uses more than ``SECONDS`` of CPU, hangs for ``HANG`` seconds (either is
    interrupted), or grows the peak RSS past ``EXTRA_MB`` over what the test process started with."""
    def alarm(signum, frame):
        raise _TooSlow(f"{what} used more than {SECONDS:g} s of CPU" if signum == signal.SIGPROF
                       else f"{what} hung for {HANG:g} s")

    old = {s: signal.signal(s, alarm) for s in (signal.SIGPROF, signal.SIGALRM)}
    signal.setitimer(signal.ITIMER_PROF, SECONDS)
    signal.setitimer(signal.ITIMER_REAL, HANG)
    start = time.process_time()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, handler in old.items():
            signal.signal(s, handler)
    rss = _peak_mb()
    assert rss - _BASE_RSS_MB < EXTRA_MB, f"{what}: peak memory grew by {rss - _BASE_RSS_MB:.0f} MB"
    assert time.process_time() - start < SECONDS


# ---- values ------------------------------------------------------------------------------------------------
NUMBERS = st.one_of(
    st.integers(-3, 300),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**12, 10**30, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, 5e-324, 0.5, 1.0, 1.5]),
)
LEAVES = st.one_of(NUMBERS, st.text(max_size=12), st.booleans(), st.none())
JSON_VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                           max_leaves=20)
DEVICE_TEXT = st.one_of(
    st.from_regex(r"\A\s?(cpu|cuda|gpu)(:[0-9\u0660-\u0669]{1,5})?(\[[0-9,\- ]{0,24}\])?\s?\Z"),
    st.sampled_from(["cpu", "cuda", "cpu:0", "cpu:0[0]", "cpu:0[1]", "cpu:0[0-1]", "cpu:0[1,1]", "cuda:0",
                     "cpu:0[0-99999999]", "cpu:1", "cuda:1023", "cpu:0[]", "cpu:0[3-1]"]),
    st.text(max_size=30),
)


def _dumps(value) -> str:
    """JSON text of ``value`` as an attacker would write it (NaN and Infinity included; huge
    integers written out in full)."""
    with contextlib.suppress(ValueError):
        return json.dumps(value, allow_nan=True)
    return "null"


# ---- the JSON reader ---------------------------------------------------------------------------------------
@FUZZ
@given(st.one_of(st.text(max_size=200), JSON_VALUES.map(_dumps),
                 st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
                 st.integers(1, 6000).map(lambda n: "9" * n), st.sampled_from(["NaN", "-Infinity", "1e999", "[1e-999]"])))
def test_the_json_reader_accepts_or_says_why(text):
    with bounded("loads"):
        try:
            value = loads(text)
        except HetsamInputError as exc:
            assert "\n" not in str(exc)
            return
    _assert_sane(value)


def _assert_sane(value, depth=0):
    assert depth <= 32
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        assert abs(value) < 10**30
    elif isinstance(value, list):
        for v in value:
            _assert_sane(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _assert_sane(v, depth + 1)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_in_a_file_are_read_or_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "f.json"
    path.write_bytes(data)
    with bounded("read_json"):
        with contextlib.suppress(HetsamInputError):
            _assert_sane(read_json(path))


# ---- profiles and plans ------------------------------------------------------------------------------------
_BASE_PROFILES = [synthetic_profile_dict()] + [load_profile(n).to_dict() for n in reference_profile_names()[:2]]


def _paths(value, prefix=()):
    """Every path into a nested JSON value (the root excluded)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


@st.composite
def mutated(draw, bases):
    """A valid document with a few of its values replaced, removed or duplicated."""
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "number", "delete", "duplicate"]))
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif action == "number":
            parent[key] = draw(NUMBERS)
        else:
            parent[key] = draw(JSON_VALUES)
    return doc


@FUZZ
@given(mutated(_BASE_PROFILES), st.sampled_from([64, None]))
def test_a_profile_is_refused_or_can_be_planned_and_simulated(doc, batch_size):
    from hetsam.planning.search import plan
    from hetsam.simulator import simulate

    with bounded("a mutated profile"):
        try:
            profile = Profile.from_json(_dumps(doc))
        except HetsamInputError:
            return
        try:
            report = plan(profile, batch_size=batch_size)
        except HetsamInputError:
            return  # e.g. no device can train at this batch size
        seconds = simulate(report.plan, profile, iterations=50).iteration_seconds["mean"]
        assert math.isfinite(seconds) and seconds > 0, seconds  # what is planned simulates to a time


PLANS = [Plan("sgd").to_dict(), Plan("sam", "cpu:0").to_dict(), Plan("rst", "cpu:0", options={"sam_probability": 0.3}).to_dict(),
         Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=64, options={"ascent_batch_size": 16, "staleness": 2}).to_dict(),
         Plan("sampa", "cuda:0", "cpu:0", batch_size=32).to_dict()]


@FUZZ
@given(mutated(PLANS))
def test_a_plan_is_refused_or_can_be_simulated(doc):
    from hetsam.simulator import simulate

    profile = Profile.from_dict(synthetic_profile_dict())
    with bounded("a mutated plan"):
        try:
            plan = Plan.from_json(_dumps(doc))
        except HetsamInputError:
            return
        assert Plan.from_json(plan.to_json()) == plan  # what is accepted round-trips
        with contextlib.suppress(HetsamInputError):  # e.g. a device this profile does not have
            simulate(plan, profile, iterations=50)


EVIDENCE_FILES = [json.loads(p.read_text()) for p in sorted(EVIDENCE_DIR.glob("*.json"))]


@FUZZ
@given(mutated(EVIDENCE_FILES))
def test_an_evidence_file_is_refused_or_plans(doc):
    """A mutated evidence file loads or is refused in one line; one that loads gives every
    candidate a finite, bounded share with an ordered interval, and the planner a plan."""
    from hetsam.evidence import ShareModel, shipped_records
    from hetsam.evidence.records import parse_records
    from hetsam.planning.search import plan

    with bounded("a mutated evidence file"):
        try:
            _, records = parse_records(json.loads(_dumps(doc)), "fuzzed.json")
        except HetsamInputError as exc:
            assert "\n" not in str(exc)
            return
        ids = {r.id for r in records}
        model = ShareModel([*records, *(r for r in shipped_records() if r.id not in ids)])
        report = plan("a6000-epyc7452", shares=model)
        for c in report.candidates:
            s = c.share
            assert math.isfinite(s.value) and -100 <= s.value <= 100 and s.basis
            assert s.low is None or s.low <= s.value <= s.high


@FUZZ
@given(DEVICE_TEXT)
def test_device_names_parse_to_a_canonical_ascii_form_or_are_refused(text):
    with bounded("parse_device"):
        try:
            dev = parse_device(text)
        except HetsamInputError as exc:
            assert "\n" not in str(exc)
            return
    written = str(dev)
    assert written.isascii() and parse_device(written) == dev
    if dev.positions is not None:
        assert list(dev.positions) == sorted(set(dev.positions))


# ---- the CLI -----------------------------------------------------------------------------------------------
def run_cli(argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, err.getvalue()


def assert_clean_exit(argv, code, err):
    assert code in (0, 2), f"hetsam {argv} exited {code}: {err}"
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"hetsam {argv}: {err}"


# hostile values, drawn for about one flag in five; the rest get values a user might give
HOSTILE_INTS = st.one_of(st.sampled_from(["0", "-1", str(10**6), str(10**12), str(10**40), "x", "", "1.5", "1e3", "٣"]),
                         st.integers().map(str))
HOSTILE_FLOATS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e-300", "1e300", "0", "-1", "x", ""]),
                           st.floats().map(str))
PLAUSIBLE = {  # flag: values a user might give (the type's default range otherwise)
    "--batch-size": st.sampled_from([1, 8, 16, 32, 64, 128, 256]), "--ascent-batch-size": st.sampled_from([1, 8, 16, 64]),
    "--staleness": st.integers(1, 16), "--max-staleness": st.integers(1, 16), "--seed": st.integers(0, 2**32),
    "--iterations": st.integers(1, 400), "--timeline-iterations": st.integers(0, 20), "--nodes": st.integers(1, 64),
    "--devices-per-node": st.integers(1, 8), "--sockets-per-node": st.integers(1, 4), "--reserve-cores": st.integers(0, 3),
    "--probability": st.floats(0, 1), "--sampa-lambda": st.floats(0, 1), "--min-ascent-fraction": st.floats(0, 1),
    "--budget": st.floats(0.5, 4), "--loader-seconds": st.floats(0, 0.1), "--bucket-cap-mb": st.floats(0.5, 100),
    "--intra-node-bandwidth": st.floats(0.1, 1000), "--inter-node-bandwidth": st.floats(0.1, 1000),
    "--intra-node-latency-us": st.floats(0, 100), "--inter-node-latency-us": st.floats(0, 100),
    "--strategies": st.sampled_from(["msam", "rst,async_sam,sampa", "sam,interval", "late_phase,msam", "sgd"]),
    "--shares": st.just(str(EVIDENCE_FILE)),
}


@st.composite
def cli_args(draw, tmp, command):
    """An argv for ``command`` with a random subset of its flags, most with plausible values and
    about one in five hostile; flags and their types come from the real parser, so a new flag is
    fuzzed too."""
    from hetsam.cli.main import build_parser

    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    argv = [command]
    forced = {"plan": ("--profile",), "simulate": ("--profile", "--strategy")}.get(command, ())
    if "--profile" in forced:  # never profile this machine here: that measures for minutes
        mutant = draw(st.integers(0, 4)) == 0
        argv += ["--profile", str(tmp / "profile.json") if mutant else draw(st.sampled_from(reference_profile_names()))]
    fields = None
    if "--strategy" in forced:  # simulate needs one of --strategy and --plan
        if draw(st.integers(0, 3)) == 0:
            argv += ["--plan", str(tmp / "plan.json")]
            fields = () if draw(st.integers(0, 4)) else None  # mostly no flag the plan already fixes
        else:
            spec = strategies.get(draw(st.sampled_from(list(strategies.names()))))
            argv += ["--strategy", spec.name]
            fields = spec.fields if draw(st.integers(0, 4)) else None  # mostly flags the strategy reads
    rare = max(3, len(sub._actions) // 3)  # about three optional flags per run
    for action in sub._actions:
        flag = action.option_strings[0] if action.option_strings else None
        if flag in (None, "-h", "--model", "--plan") or flag in forced or draw(st.integers(0, rare)) > 0:
            continue
        if fields is not None and _SIMULATE_FIELD.get(flag, "always") not in (*fields, "always"):
            continue
        if fields == () and flag in ("--descent-device", "--batch-size"):
            continue
        if action.nargs == 0:
            argv.append(flag)
        elif draw(st.integers(0, 4)) == 0:
            argv += [flag, draw(_hostile(tmp, flag, action))]
        else:
            argv += [flag, str(draw(_plausible(tmp, flag, action)))]
    return argv


_SIMULATE_FIELD = {"--ascent-device": "ascent_device", "--ascent-batch-size": "ascent_batch_size",
                   "--staleness": "staleness", "--ascent-batches": "ascent_batches", "--probability": "sam_probability",
                   "--sampa-lambda": "sampa_lambda", "--option": "options"}


def _plausible(tmp, flag, action):
    if flag in PLAUSIBLE:
        return PLAUSIBLE[flag]
    if action.choices:
        return st.sampled_from(list(action.choices))
    if flag in ("--descent-device", "--ascent-device", "--devices"):
        return st.sampled_from(["cpu", "cpu:0", "cpu:0[0]", "cpu:0[1]", "cuda:0", "cuda:1"])
    if flag in ("--out", "--trace", "--plot"):
        return st.sampled_from(["out.json", "out.png", "out.svg", "out.pdf"]).map(lambda n: str(tmp / n))
    if flag == "--what-if":
        return st.sampled_from(["cuda:0=a100", "cuda:1=h100", "cpu:1=epyc-7452", "cuda:0=rtx4060"])
    if flag == "--option":
        return st.sampled_from(["k=3", "period=2"])
    return {int: st.integers(0, 64), float: st.floats(0, 4)}.get(action.type, st.text(max_size=8))


def _hostile(tmp, flag, action):
    if action.type is int:
        return HOSTILE_INTS
    if action.type is float:
        return HOSTILE_FLOATS
    if action.choices:
        return st.text(max_size=8)
    if flag in ("--descent-device", "--ascent-device", "--devices"):
        return DEVICE_TEXT
    if flag in ("--out", "--trace", "--plot"):
        return st.sampled_from([str(tmp / "out.xyz"), str(tmp / "noext"), "", "/dev/full", "/nonexistent/x.json",
                                "/dev/null", str(tmp)])  # never the working directory
    if flag == "--what-if":
        return st.tuples(DEVICE_TEXT, st.text(max_size=20)).map("=".join)
    return st.text(max_size=30)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    os.environ["HETSAM_CACHE_DIR"] = str(tmp / "cache")  # never reuse (or fill) the user's cache
    return tmp


@pytest.mark.slow  # among the slowest of the suite: `-m 'not slow'` skips it (pyproject.toml)
@pytest.mark.parametrize("command", ["plan", "simulate", "devices"])
def test_every_flag_of_every_command_exits_cleanly(tmp, command):
    @FUZZ
    @given(data=st.data())
    def check(data):
        argv = data.draw(cli_args(tmp, command))
        (tmp / "profile.json").write_text(_dumps(data.draw(mutated(_BASE_PROFILES))))
        (tmp / "plan.json").write_text(_dumps(data.draw(mutated(PLANS))))
        with bounded(f"hetsam {argv}"):
            code, err = run_cli(argv)
        assert_clean_exit(argv, code, err)

    check()


# profile and bench measure for minutes when their input is valid: fuzz them with at least one
# invalid value, which must be refused before anything is measured
INVALID = {
    "profile": {"--batch-size": ["0", "-1", str(10**12), "x"], "--ladder": ["", "8,4", "0", "-8", "x,y", str(10**12)],
                "--repeats": ["0", "-1", str(10**12), "x"], "--budget-seconds": ["-1", "nan", "inf", "1e400", "x"],
                "--devices": ["gpu:0", "cpu:99", "cpu:0[0-99999999]", "", ",", "cuda:0"], "--model": ["nope", ""]},
    "bench": {"--batch-size": ["0", "-1", str(10**12), "x"], "--steps": ["0", "-1", str(10**9)],
              "--rounds": ["0", str(10**9)], "--warmup": ["-1", str(10**9)], "--min-seconds": ["-1", "nan", "1e9"],
              "--turn-warmup": ["-1", str(10**9)], "--quiet-seconds": ["-1", "nan", "1e9"],
              "--max-other-load": ["0", "-1", "nan", "inf"], "--profile-budget-seconds": ["0", "-1", "nan"],
              "--model": ["nope", ""], "--profile": ["nope", "/dev/zero"], "--plan": ["/dev/zero", "nope.json"]},
}
VALID = {"profile": ["--quiet", "--no-contention", "--json"], "bench": ["--json", "--no-predict", "--concurrent"]}


@pytest.mark.parametrize("command", sorted(INVALID))
def test_invalid_values_are_refused_before_measuring(tmp, command):
    @FUZZ
    @given(bad=st.dictionaries(st.sampled_from(sorted(INVALID[command])), st.just(None), min_size=1, max_size=3),
           data=st.data(), flags=st.lists(st.sampled_from(VALID[command]), unique=True))
    def check(bad, data, flags):
        argv = [command] + (["--out", str(tmp / "p.json")] if command == "profile" else []) + flags
        for flag in bad:
            argv += [flag, data.draw(st.sampled_from(INVALID[command][flag]))]
        with bounded(f"hetsam {argv}"):
            code, err = run_cli(argv)
        assert code == 2, f"hetsam {argv} exited {code}: {err}"
        assert_clean_exit(argv, code, err)
        assert not (tmp / "p.json").exists()

    check()


# ---- AutoSAM: checkpoints, constructor arguments, parameter groups -------------------------------------------
def _one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def _autosam_parts():
    import torch

    from hetsam import AutoSAM

    def model(width=16, seed=0):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))

    def loss(m, batch):
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(8)]
    return torch, AutoSAM, model, loss, data


# the checkpoints mutated: each strategy's own state (pending ĝ, g_y, RST's generator, MSAM's lrs, Adam's
# steps), and one whose guard switched plans
CHECKPOINT_CASES = {
    "sam": ({"plan": "sam"}, None), "adam": ({"plan": "sgd"}, "adam"),
    "async_sam": ({"plan": Plan("async_sam", options={"staleness": 2, "ascent_batch_size": 4})}, None),
    "sampa": ({"plan": Plan("sampa", options={"sampa_lambda": 0.5})}, None), "rst": ({"plan": Plan("rst", options={"sam_probability": 0.5})}, None),
    "msam": ({"plan": Plan("msam", options={"rho": 0.3})}, None),
    "guard": ({"plan": Plan("msam", options={"rho": 0.3})}, "poison"),
}
_CHECKPOINTS: dict = {}


def _checkpointed(case):
    """(a fresh AutoSAM of ``case`` at its checkpoint, the checkpoint); trained once per case."""
    torch, AutoSAM, model, loss, data = _autosam_parts()
    kw, extra = CHECKPOINT_CASES[case]
    calls = [0]

    def fn(m, batch):
        calls[0] += 1
        return loss(m, batch) * (float("nan") if extra == "poison" and calls[0] == 3 else 1.0)

    def build(net):
        base, opts = (torch.optim.Adam, {"lr": 0.01}) if extra == "adam" else (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})
        return AutoSAM(net, fn, base, executor="inline", seed=0, guard={"window": 5}, log=lambda line: None, **opts, **kw)

    if case not in _CHECKPOINTS:
        import warnings

        net = model()
        with build(net) as opt, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the poisoned step's
            for i in range(5):
                opt.step(data[i], upcoming=data[i + 1:])
            _CHECKPOINTS[case] = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()))
    weights, checkpoint = _CHECKPOINTS[case]
    net = model(seed=3)
    net.load_state_dict(weights)
    opt = build(net)
    opt.load_state_dict(copy.deepcopy(checkpoint))
    return opt, checkpoint, data


@st.composite
def mutated_checkpoint(draw):
    """A real AutoSAM checkpoint with one to three of its entries removed, replaced (a hostile JSON
    value or number, another shape or dtype, NaN), nudged (a count one more, a number halved or
    doubled) or a list entry duplicated; the user's batch (SAMPa's previous batch) is data, not
    state, and stays."""
    import torch

    case = draw(st.sampled_from(sorted(CHECKPOINT_CASES)))
    doc = copy.deepcopy(_checkpointed(case)[1])
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        paths = [p for p in _paths(doc) if "prev_batch" not in p]
        if not paths:  # earlier mutations left nothing to change
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, value = path[-1], parent[path[-1]]
        actions = ["replace", "number", "delete"] + (["duplicate"] if isinstance(parent, list) else [])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            actions += ["nudge"] * 3
        if torch.is_tensor(value):
            actions += ["reshape", "dtype", "nan"] * 2
        action = draw(st.sampled_from(actions))
        if action == "delete":
            del parent[key]
        elif action == "duplicate":
            parent.append(copy.deepcopy(value))
        elif action == "number":
            parent[key] = draw(NUMBERS)
        elif action == "nudge":
            parent[key] = value + draw(st.integers(0, 2)) if isinstance(value, int) \
                else value * draw(st.sampled_from([0.5, 2.0]))
        elif action == "reshape":
            parent[key] = torch.zeros(draw(st.sampled_from([(), (1,), (value.numel() + 1,), (3, 16), (16, 6, 1)])),
                                      dtype=value.dtype)
        elif action == "dtype":
            parent[key] = value.to(draw(st.sampled_from([torch.int64, torch.float64, torch.bool, torch.complex64,
                                                         torch.uint8, torch.float16])))
        elif action == "nan":
            parent[key] = value.float().fill_(draw(st.sampled_from([float("nan"), float("inf")]))) \
                if value.numel() else value
        else:
            parent[key] = draw(JSON_VALUES)
    return case, doc


def _state_equal(a, b) -> bool:
    import torch

    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape \
            and bool(torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, 0, 0, equal_nan=True)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@FUZZ
@given(mutated_checkpoint())
def test_a_mutated_checkpoint_loads_whole_or_is_refused_whole(case_doc):
    """AutoSAM.load_state_dict on a mutated checkpoint: it loads, and the next step runs; or one
    HetsamInputError (one line) and the optimizer exactly as it was: never a half-loaded optimizer."""
    import warnings

    case, doc = case_doc
    opt, _, data = _checkpointed(case)
    with opt, bounded(f"a mutated {case} checkpoint"):
        before, plan, parts = copy.deepcopy(opt.state_dict()), opt.plan, opt._parts
        try:
            opt.load_state_dict(doc)
        except HetsamInputError as exc:
            _one_line(exc)
            assert _state_equal(opt.state_dict(), before) and opt.plan is plan and opt._parts is parts, str(exc)
            event("refused")
            return
        event("loaded")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step(data[5], upcoming=data[6:])


def _params(net, kind: str, options: dict):
    """What ``params=`` gets: None, the model's tensors, its two layers as groups (the second with
    ``options``); hostile: a group without parameters, a tensor not of the model, junk."""
    import torch

    layers = [[net[0].weight, net[0].bias], [net[2].weight, net[2].bias]]
    return {"none": None, "tensors": list(net.parameters()),
            "groups": [{"params": layers[0]}, {"params": layers[1], **options}],
            "empty-group": [{"params": layers[0]}, {"params": []}], "foreign": [torch.nn.Parameter(torch.zeros(3))],
            "junk": [{"lr": 0.1}], "set": [{"params": set(layers[0])}]}[kind]


OPTION = st.one_of(NUMBERS, st.sampled_from([0.0, 0.05, 0.1, 0.9]), st.sampled_from([None, "x", (0.9, 0.999), (1.0, 0.5)]))
GROUP_OPTIONS = st.dictionaries(st.sampled_from(["lr", "momentum", "weight_decay", "rho", "eta", "adaptive", "eps",
                                                 "betas", "dampening", "nesterov", "colour"]), OPTION, max_size=3)
PLAUSIBLE_GROUP = st.dictionaries(st.sampled_from(["lr", "weight_decay", "rho"]), st.sampled_from([0.0, 0.01, 0.05]),
                                  max_size=2)
HOSTILE_PLANS = st.sampled_from(["", "bogus", None, 3, "auto ", Plan("sam", descent_device="cuda:0"),
                                 Plan("async_sam", ascent_device="cuda:0")])
AUTOSAM_ARGUMENTS = {  # argument: (plausible values, hostile ones)
    "plan": (st.sampled_from([*strategies.names(), Plan("async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
                              Plan("sampa", options={"sampa_lambda": 0.5}), Plan("interval", options={"k": 2}),
                              Plan("msam", options={"rho": 0.2}), Plan("rst", options={"sam_probability": 0.3})]), HOSTILE_PLANS),
    "executor": (st.sampled_from(["inline", "inline", "threads"]), st.one_of(LEAVES, st.just("gpu"))),
    "base_optimizer": (st.sampled_from(["SGD", "Adam", "AdamW"]), st.one_of(LEAVES, st.just("instance"))),
    "params": (st.sampled_from(["none", "tensors", "groups"]), st.sampled_from(["empty-group", "foreign", "junk", "set"])),
    "group": (PLAUSIBLE_GROUP, GROUP_OPTIONS),  # the second group's options, when params="groups"
    "rho": (st.sampled_from([0.0, 0.05, 0.5]), NUMBERS), "adaptive": (st.booleans(), LEAVES),
    "eta": (st.sampled_from([0.0, 0.01]), NUMBERS), "max_grad_norm": (st.sampled_from([None, 1.0]), NUMBERS),
    "options": (st.sampled_from([None, {}, {"sam_probability": 0.3}, {"ascent_batch_size": 4}, {"k": 2}, {"rho": 0.2}]),
                st.one_of(LEAVES, st.dictionaries(st.sampled_from(["sam_probability", "staleness", "k", "x"]), NUMBERS,
                                                  max_size=2))),
    # deprecated (a FutureWarning each), still accepted
    "sam_probability": (st.sampled_from([None, 0.5, 1.0]), NUMBERS), "grst_alpha": (st.sampled_from([1.0, 0.5]), NUMBERS),
    "seed": (st.sampled_from([None, 0, 7]), NUMBERS), "amp": (st.sampled_from([None, False, "bf16"]), LEAVES),
    "scaler": (st.sampled_from([None, False]), LEAVES),
    "descent_threads": (st.sampled_from([None, 1, 2]), st.sampled_from([0, -1, 4097, 10**9, 1.5, "x", True])),
    "ascent_threads": (st.sampled_from([None, 1]), st.sampled_from([0, -1, 4097, 1.5, "x"])),
    "on_worker_failure": (st.sampled_from([None, "raise", "degrade"]), LEAVES),
    "ascent_timeout": (st.sampled_from([None, 30.0, float("inf")]), NUMBERS),
    "total_steps": (st.sampled_from([None, 4, 100]), NUMBERS), "warmup_steps": (st.sampled_from([None, 0, 2]), NUMBERS),
    "sampa_pairs": (st.sampled_from([None, True, False]), LEAVES),
    "guard": (st.sampled_from([True, False, {"window": 5}]),
              st.one_of(LEAVES, st.dictionaries(st.sampled_from(["window", "factor", "regress", "snapshot_bytes", "x"]),
                                                NUMBERS, max_size=2))),
    "nonfinite": (st.sampled_from(["skip", "raise"]), LEAVES), "log": (st.just(None), LEAVES),
    "strategies": (st.just(None), st.one_of(LEAVES, st.lists(st.text(max_size=6), max_size=2))),
    "lr": (st.sampled_from([0.01, 0.1]), st.one_of(NUMBERS, st.sampled_from(["x", None]))),
    "momentum": (st.sampled_from([0.0, 0.9]), NUMBERS), "weight_decay": (st.sampled_from([0.0, 5e-4]), NUMBERS),
}
ALWAYS = ("plan", "executor", "base_optimizer", "params", "lr")


@FUZZ
@given(data=st.data())
def test_autosam_arguments_are_accepted_or_refused_in_one_line(data):
    """AutoSAM's constructor with a random subset of its arguments, plausible but for none, one or two
    hostile ones: it is refused with one HetsamInputError line, or it trains two steps, where a
    step may refuse in one line (late-phase SAM without total_steps; NonFiniteUpdate under
    nonfinite="raise") but never raises anything else."""
    import warnings

    from hetsam import NonFiniteUpdate

    torch, AutoSAM, model, loss, batches = _autosam_parts()
    net = model()
    names = sorted(AUTOSAM_ARGUMENTS)
    hostile = set(data.draw(st.lists(st.sampled_from(names), max_size=data.draw(st.sampled_from([0, 0, 1, 1, 1, 2])),
                                      unique=True)))
    drawn = {}
    for name in names:
        if name in hostile or name in ALWAYS or data.draw(st.integers(0, 3)) == 0:
            drawn[name] = data.draw(AUTOSAM_ARGUMENTS[name][name in hostile])
    event(f"{len(hostile)} hostile")
    group = drawn.pop("group", {})
    base = drawn.pop("base_optimizer")
    base = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW,
            "instance": torch.optim.SGD(net.parameters(), lr=0.1)}.get(base, base) if isinstance(base, str) else base
    drawn["params"] = _params(net, drawn["params"], group)
    if base is not torch.optim.SGD:
        drawn.pop("momentum", None)
    with bounded(f"AutoSAM({base!r}, {drawn!r})"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated keywords say so; not a failure here
        try:
            opt = AutoSAM(net, loss, base, **drawn)
        except HetsamInputError as exc:
            _one_line(exc)
            event("refused")
            return
        with opt, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                for i in range(2):
                    opt.step(batches[i], upcoming=batches[i + 1:])
                event("trained")
            except (HetsamInputError, NonFiniteUpdate) as exc:
                _one_line(exc)
                event(f"a step refused: {type(exc).__name__}")


@FUZZ
@given(data=st.data())
def test_add_param_group_accepts_or_refuses_in_one_line(data):
    """add_param_group mid-run with a drawn group: refused in one line with the groups as they were,
    or accepted and the next step runs."""
    import warnings

    torch, AutoSAM, model, loss, batches = _autosam_parts()
    net = model()
    base = data.draw(st.sampled_from([torch.optim.SGD, torch.optim.Adam]))
    opts = {"lr": 0.1, "momentum": 0.9} if base is torch.optim.SGD else {"lr": 0.01}
    plan = data.draw(st.sampled_from(["sgd", "sam", Plan("async_sam", options={"staleness": 1, "ascent_batch_size": 4}),
                                      Plan("sampa", options={"sampa_lambda": 0.5}), Plan("msam", options={"rho": 0.2})]))
    first = [net[0].weight, net[0].bias]
    with AutoSAM(net, loss, base, plan=plan, executor="inline", params=first, log=lambda line: None, **opts) as opt:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step(batches[0], upcoming=batches[1:])
            plausible = [[net[2].weight, net[2].bias], [net[2].weight], net[2].bias]
            hostile = [[], [net[0].weight], [torch.nn.Parameter(torch.zeros(3))], {net[2].weight}, "x", None, 5]
            kind = data.draw(st.sampled_from(["plausible", "plausible", "options", "tensors", "junk"]))
            tensors = data.draw(st.sampled_from(hostile if kind == "tensors" else plausible))
            group = {"params": tensors, **data.draw(GROUP_OPTIONS if kind == "options" else PLAUSIBLE_GROUP)}
            if kind == "junk":
                group = data.draw(st.one_of(LEAVES, st.just({"lr": 0.1})))
            before = [dict(g) for g in opt.param_groups]
            with bounded(f"add_param_group({group!r})"):
                try:
                    opt.add_param_group(group)
                except HetsamInputError as exc:
                    _one_line(exc)
                    assert len(opt.param_groups) == len(before) == len(opt.base_optimizer.param_groups)
                    assert all(g["params"] == b["params"] for g, b in zip(opt.param_groups, before))
                    event("refused")
                    return
                opt.step(batches[1], upcoming=batches[2:])
                event("added")
