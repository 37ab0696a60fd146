"""Property-based fuzzing of everything a user or a file can hand hetsam.

The properties (see docs/architecture.md, "Bad input"):
- the JSON reader, the profile and plan readers and the device-name parser either accept their
  input or raise ``HetsamInputError``, and whatever they accept can be planned and simulated;
- every CLI command exits 0, or 2 with exactly one line on stderr and no traceback; never 1
  (a bug), and never after more than a few seconds or a few hundred MB.

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _profiles import synthetic_profile_dict
from hetsam import HetsamInputError, Plan, strategies
from hetsam.cli import main
from hetsam.hardware.names import parse_device
from hetsam.io import loads, read_json
from hetsam.evidence import EVIDENCE_DIR

EVIDENCE_FILE = EVIDENCE_DIR / "hetsam.json"
from hetsam.profiling.schema import Profile, load_profile, reference_profile_names

LONG = os.environ.get("HETSAM_FUZZ") == "long"
settings.register_profile("hetsam-ci", max_examples=100, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("hetsam-long", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile("hetsam-long" if LONG else "hetsam-ci")

SECONDS = 15.0  # "a few seconds" to accept or reject any input, on a noisy 2-core machine
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
    """Fail if the body runs past ``SECONDS`` (interrupting a hang) or grows the peak RSS past
    ``EXTRA_MB`` over what the test process started with."""
    def alarm(signum, frame):
        raise _TooSlow(f"{what} ran past {SECONDS:g} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    rss = _peak_mb()
    assert rss - _BASE_RSS_MB < EXTRA_MB, f"{what}: peak memory grew by {rss - _BASE_RSS_MB:.0f} MB"
    assert time.perf_counter() - start < SECONDS


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
        simulate(report.plan, profile, iterations=50)


PLANS = [Plan("sgd").to_dict(), Plan("sam", "cpu:0").to_dict(), Plan("rst", "cpu:0", sam_probability=0.3).to_dict(),
         Plan("async_sam", "cpu:0[0]", "cpu:0[1]", batch_size=64, ascent_batch_size=16, staleness=2).to_dict(),
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
        return st.sampled_from(["out.xyz", "noext", "", "/dev/full", "/nonexistent/x.json", "/dev/null", str(tmp)])
    if flag == "--what-if":
        return st.tuples(DEVICE_TEXT, st.text(max_size=20)).map("=".join)
    return st.text(max_size=30)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    os.environ["HETSAM_CACHE_DIR"] = str(tmp / "cache")  # never reuse (or fill) the user's cache
    return tmp


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
              "--rounds": ["0", str(10**9)], "--warmup": ["-1", str(10**9)], "--quiet-seconds": ["-1", "nan", "1e9"],
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
