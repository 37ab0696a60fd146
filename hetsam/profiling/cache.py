"""An on-disk cache of this machine's profiles, so ``AutoSAM(plan="auto")`` and ``hetsam plan``
measure a model once, not at every start.

A cached profile is keyed by a SHA-256 of

- the model's structure: every module's type and ``extra_repr``, every parameter's and
  buffer's name, shape and dtype (not their values: timing does not depend on them);
- the sample batch's shapes and dtypes;
- the machine: each detected device's id, name and usable cores, and the torch and hetsam versions;
- the allocator policy (``hetsam.execution.allocator``: it changes CPU timings by tens of percent);
- the devices and batch ladder asked for.

The cache lives in ``$HETSAM_CACHE_DIR`` or ``$XDG_CACHE_HOME/hetsam`` (default
``~/.cache/hetsam``). Entries are plain profile JSON, validated again when read; an entry that
fails to load is measured again and replaced. Writes are atomic.

A profile with warnings (measured while the machine was busy, batch sizes skipped, a device or a
copy link left out: ``Profile.warnings``) tells ``log``, at every read or measurement, once, in
two lines: its warnings (repeated ones collapsed, ``hetsam._notes``), where it is cached, and how
to measure again (:func:`warning_lines`). A cached profile marked busy (``Profile.busy``) is
never reused silently while a quiet one could be taken: at each read the cache looks at the
machine for half a second, measures again when other processes now use at most
``BUSY_SHARE`` of the CPUs, and otherwise reuses the entry and says that the machine is still busy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from hetsam import _checks, defaults
from hetsam.errors import HetsamInputError
from hetsam.profiling.schema import Profile, load_profile

__all__ = ["cache_dir", "cache_key", "cached_profile", "profile_this_machine", "warning_lines"]

# how to measure a cached entry again, when the caller names no command (AutoSAM's plan="auto")
DELETE_TO_REFRESH = "delete that file to measure again at the next start"


def cache_dir() -> Path:
    root = os.environ.get("HETSAM_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hetsam"


def cache_key(model, sample_batch, *, devices=None, batch_sizes=None) -> str:
    """The cache key of a profile of ``model`` on ``sample_batch`` on this machine."""
    import torch

    from hetsam import __version__
    from hetsam.execution import allocator
    from hetsam.execution.batches import signature
    from hetsam.hardware.detect import detect

    structure = [(name, type(m).__name__, m.extra_repr()) for name, m in model.named_modules()]
    tensors = [(n, list(t.shape), str(t.dtype)) for n, t in list(model.named_parameters()) + list(model.named_buffers())]
    machine = [(d.id, d.name, d.cores) for d in detect(probe_torch=True).devices]
    payload = {
        "structure": structure, "tensors": tensors, "batch": signature(sample_batch), "machine": machine,
        "torch": torch.__version__, "hetsam": __version__, "devices": devices, "batch_sizes": batch_sizes,
        "allocator": allocator.policy(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_profile(model, loss_fn, sample_batch, *, devices=None, batch_sizes=None,
                   budget_seconds: float | None = defaults.PROFILE_BUDGET_SECONDS, name: str | None = None,
                   progress: bool = True, refresh: bool = False, log=None, refresh_hint: str | None = None,
                   finish=None) -> Profile:
    """Profile ``model`` on this machine, or return the cached profile of an identical setup.

    ``finish(profile) -> profile``, when given, adds what an upper layer measures to a fresh
    profile before it is cached, and once to a cached one that lacks it (a step's fixed costs timed
    in AutoSAM's own steps: ``hetsam/autosam/step_costs.py``).

    While one process measures an entry, it holds a lock on it: a second process that wants the
    same entry waits and then reads the first one's result, rather than measuring at the same
    time on the same cores (each would measure the other's load). ``log`` (a callable taking one
    line) is told whether the cache was hit, and the profile's warnings with ``refresh_hint`` (how
    to measure again; default: delete the cached file) when it has any (:func:`warning_lines`).
    """
    from hetsam.profiling.measure import profile

    key = cache_key(model, sample_batch, devices=devices, batch_sizes=batch_sizes)
    path = cache_dir() / f"profile-{key}.json"
    say = log or (lambda line: None)
    with _entry_lock(path, say):
        if not refresh:
            cached = _read_cached(path, say)
            if cached is not None and cached.busy and _quiet_now(say):
                cached = None  # measured while busy, and a quiet measurement can be taken now
            if cached is not None:
                if finish is not None and _unfinished(cached):  # cached before the stage existed
                    done = finish(cached)
                    if done != cached:
                        cached = done
                        _save(cached, path, say, "added the step costs timed in AutoSAM's own steps to")
                for line in warning_lines(cached, cached_at=path, refresh_hint=refresh_hint):
                    say(line)
                return cached
        prof = profile(model, loss_fn, sample_batch, devices, batch_sizes=batch_sizes, budget_seconds=budget_seconds,
                       name=name, progress=progress)
        if finish is not None:
            prof = finish(prof)
        saved = path if _save(prof, path, say, "profiled this machine in") else None
        for line in warning_lines(prof, cached_at=saved, refresh_hint=refresh_hint, just_measured=True):
            say(line)
    return prof


def _unfinished(prof: Profile) -> bool:
    """Whether a CPU device of ``prof`` lacks the fixed costs timed in AutoSAM's own steps (``finish`` adds them)."""
    from hetsam.hardware.kinds import kind_of

    return any(kind_of(d.id).pools and d.plain_fixed_seconds is None for d in prof.devices)


def _save(prof: Profile, path: Path, say, what: str) -> bool:
    """Write ``prof`` to the cache at ``path``; whether it was (a failure is said, not raised)."""
    try:
        prof.save(path)
    except HetsamInputError as exc:  # a read-only or full home must not stop training
        say(f"hetsam: could not cache the profile ({exc}); continuing")
        return False
    say(f"hetsam: {what} the cache at {path}")
    return True


def _quiet_now(say) -> bool:
    """Whether the machine is quiet enough now to replace a profile measured while it was busy."""
    from hetsam.profiling.load import BUSY_SHARE, other_load

    share = other_load()
    if share is not None and share <= BUSY_SHARE:
        say(f"hetsam: the cached profile was measured while the machine was busy; it is quiet now (other processes "
            f"{share:.0%} of the CPUs), so measuring again")
        return True
    now = "unknown" if share is None else f"{share:.0%} of the CPUs"
    say(f"hetsam: the cached profile was measured while the machine was busy, and it still is (other processes: {now}); "
        "reusing it")
    return False


def warning_lines(profile: Profile, *, cached_at=None, refresh_hint: str | None = None, just_measured: bool = False) -> list[str]:
    """What a user must hear about ``profile.warnings``, in two lines (none when it has none):
    the warnings, repeated ones collapsed; then where it is cached (``cached_at``) or loaded from,
    and ``refresh_hint``, how to measure again. ``just_measured``: the profile was measured in this
    run (not reused)."""
    from hetsam._notes import collapsed_texts

    warnings = profile.warnings
    if not warnings:
        return []
    if just_measured or cached_at is not None:
        hint = refresh_hint or DELETE_TO_REFRESH
        if just_measured:
            head, where = "the profile just measured on this machine", \
                f"it is cached at {cached_at}" if cached_at is not None else "it is not cached"
        else:
            head, where = "the cached profile of this machine", f"it is cached at {cached_at} and reused as it is"
    else:
        where = f"it was loaded from {profile.source}" if profile.source else "it is not cached"
        hint = refresh_hint or "'hetsam profile --model NAME --batch-size B --out FILE' measures one again"
        head = f"the profile {profile.source}" if profile.source else "the profile"
    texts = collapsed_texts(warnings)
    return [f"hetsam: {head} has {len(warnings)} warning(s): {'; '.join(texts)}",
            f"hetsam: {where}; {hint}"]


def _read_cached(path: Path, say) -> Profile | None:
    if not path.exists():
        return None
    try:
        prof = load_profile(path)
    except HetsamInputError as exc:
        say(f"hetsam: cached profile unusable ({exc}); measuring again")
        return None
    say(f"hetsam: using the cached profile {path}")
    return prof


@contextlib.contextmanager
def _entry_lock(path: Path, say) -> Iterator[None]:
    """An exclusive ``flock`` on ``PATH.lock`` (the OS drops it if the holder dies); no lock where
    the platform or the folder does not allow one."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say(f"hetsam: another process is measuring this profile; waiting for its result ({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def profile_this_machine(model_name: str = "resnet20", batch_size: int = 64, *, budget_seconds: float | None = defaults.PROFILE_BUDGET_SECONDS,
                         progress: bool = True, refresh: bool = False, log=None, refresh_hint: str | None = None,
                         finish=None) -> Profile:
    """A (cached) profile of this machine with one of :data:`hetsam.profiling.models.REFERENCE_MODELS`.
    Its warnings, if any, go to ``log`` with ``refresh_hint`` (default: the ``hetsam plan`` command
    that measures this entry again). ``finish(profile, model, loss_fn, batch) -> profile``: as
    :func:`cached_profile`'s, given the reference model and its sample batch."""
    from hetsam.profiling.models import reference_model

    _checks.integer(batch_size, "batch size", low=1, high=1 << 20)
    ref = reference_model(model_name)
    ref.check_batch(batch_size, "batch size")
    hint = refresh_hint or (f"'hetsam plan --model {model_name} --batch-size {batch_size} --refresh-profile' "
                            "measures again (when the machine is quiet)")
    net, batch = ref.build(), ref.sample_batch(batch_size)
    done = None if finish is None else (lambda prof: finish(prof, net, ref.loss_fn, batch))
    return cached_profile(net, ref.loss_fn, batch, budget_seconds=budget_seconds,
                          name=ref.name, progress=progress, refresh=refresh, log=log, refresh_hint=hint, finish=done)
