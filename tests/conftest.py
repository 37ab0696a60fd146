import os
import subprocess
import sys
import tempfile

import pytest

# Keep the 2-core CI machine predictable: each test process uses at most 2 intra-op threads.
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Tests write only to temporary folders: Hypothesis's caches and example database too (not .hypothesis/)
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="hetsam-hypothesis-"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: CUDA tests cannot run either
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def deterministic():
    """torch's deterministic algorithms for the test (bit-for-bit comparisons on CPU)."""
    from hetsam.testing.toys import deterministic_algorithms

    with deterministic_algorithms():
        yield


def pytest_sessionfinish(session, exitstatus):
    """No ascent worker may outlive the suite: a daemon thread still inside a job when the
    interpreter exits can abort it ("terminate called without an active exception")."""
    import gc
    import threading

    gc.collect()  # optimizers nobody closed: their finalizers stop their workers
    workers = [t for t in threading.enumerate() if t.name.startswith("hetsam-")]
    for t in workers:
        t.join(10)
    alive = [t.name for t in workers if t.is_alive()]
    if alive and session.exitstatus == 0:
        print(f"\nhetsam worker threads still alive after the suite: {alive}; a test leaves a job running")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def cpu_hogs():
    """One spinning process per usable CPU: other processes then use far more than 25% of them."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    yield
    for p in procs:
        p.kill()
        p.wait()
