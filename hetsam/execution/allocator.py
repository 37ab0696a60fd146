"""One allocator policy for everything that times or trains: the profiler, the bench and AutoSAM.

By default hetsam keeps freed memory in the process (glibc's ``mallopt``): ``M_MMAP_THRESHOLD``
32 MiB, so blocks below it come from the heap rather than a fresh ``mmap`` that the kernel must
fault in and zero again after every ``munmap`` (setting it also stops glibc's dynamic threshold);
``M_TRIM_THRESHOLD`` 1 GiB and ``M_TOP_PAD`` 256 MiB, so the heap is not shrunk after each step.
Freed activations then serve the next step without page faults. On the 2-core CI machine a
ResNet-20 step at b = 64 otherwise re-faults about 80 MB and takes 20-40% longer, by an amount
that depends on the process's history, so a profile taken under one policy mispredicts a run
under the other. The cost: the resident set stays at its peak.

``HETSAM_MALLOC=system`` (or ``hetsam bench --system-malloc``) leaves the allocator alone in
all three. The policy in force is recorded in each profile's provenance and is part of the
profile cache key. Outside glibc nothing changes (``mode()`` says so). See README, "Measuring".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["ENV", "policy", "apply_policy", "mode", "override"]

ENV = "HETSAM_MALLOC"
_POLICIES = ("retain", "system")
_lock = threading.Lock()
_applied: str | None = None
_override: str | None = None


def policy() -> str:
    """The policy asked for: an :func:`override` in force, else ``$HETSAM_MALLOC`` (``retain`` or
    ``system``), default ``retain``."""
    from hetsam.errors import HetsamInputError

    value = _override or os.environ.get(ENV, "retain").strip().lower() or "retain"
    if value not in _POLICIES:
        raise HetsamInputError(f"{ENV}={value!r}: use 'retain' (the default) or 'system'")
    return value


def apply_policy() -> str:
    """Apply :func:`policy` once per process (idempotent); returns :func:`mode`.

    ``system`` after ``retain`` was applied cannot undo it; the mode stays ``retained``.
    """
    global _applied
    with _lock:
        if _applied is None and policy() == "retain":
            _applied = "retained" if _retain() else "system (not glibc)"
        return mode()


@contextlib.contextmanager
def override(value: str) -> Iterator[None]:
    """Ask for ``value`` (``retain``/``system``) within the block, whatever the environment says
    (``hetsam bench --system-malloc``); what was applied stays applied."""
    global _override
    if value not in _POLICIES:
        raise ValueError(f"allocator policy {value!r}: use 'retain' or 'system'")
    old, _override = _override, value
    try:
        yield
    finally:
        _override = old


def mode() -> str:
    """What is in force: ``retained`` (glibc keeps freed memory), ``system`` or ``system (not glibc)``."""
    return _applied or "system"


def _retain() -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(k, v) == 1 for k, v in ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30),
                                               (m_top_pad, 256 << 20)))
