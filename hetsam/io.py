"""Every file hetsam reads or writes goes through here: one guarded reader, one atomic writer.

Writing (:func:`write_text`, :func:`atomic_path`): the bytes go to a temporary file in the target's
folder, are flushed to disk (``fsync``), and the temporary file is renamed over the target, so a
full disk, a file-size limit or a kill mid-write leaves the previous file exactly as it was; the
temporary file is removed on every failure path. A target that exists but is not a regular file
(``/dev/full``, a FIFO, a folder) is refused: renaming over it would replace the special file.

Reading (:func:`read_json`, :func:`loads`): only regular files (a FIFO would block, ``/dev/zero``
never ends), at most :data:`MAX_JSON_BYTES` (64 MiB), UTF-8, nesting at most :data:`MAX_DEPTH`
deep, integers of at most 30 digits, no ``NaN``/``Infinity`` and only finite floats. Every
failure is a :class:`~hetsam.HetsamInputError` naming the file and the fix. Pure Python.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hetsam.errors import HetsamInputError

__all__ = ["MAX_JSON_BYTES", "MAX_DEPTH", "read_json", "loads", "write_text", "atomic_path", "check_writable"]

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 32
_MAX_INT_DIGITS = 30


# ---- reading --------------------------------------------------------------------------------------
def read_json(path, what: str = "file", *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of the regular file ``path`` (see the module docstring for the limits)."""
    name = str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise HetsamInputError(f"cannot read {what} {name!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise HetsamInputError(f"{what} {name!r} is {kind}; name a JSON file")
    if info.st_size > max_bytes:
        raise HetsamInputError(f"{what} {name!r} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit; "
                               "is it the right file?")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise HetsamInputError(f"cannot read {what} {name!r}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise HetsamInputError(f"{what} {name!r} is over the {max_bytes:,}-byte limit; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HetsamInputError(f"{what} {name!r} is not UTF-8 text (byte {exc.start}); name a JSON file") from None
    return loads(text, f"{what} {name!r}")


def loads(text: str, where: str = "JSON") -> Any:
    """Parse JSON text with the reader's limits; errors name ``where``."""
    if not isinstance(text, str):
        raise HetsamInputError(f"{where}: JSON must be text, got {type(text).__name__}")
    if len(text) > MAX_JSON_BYTES:
        raise HetsamInputError(f"{where}: over the {MAX_JSON_BYTES:,}-character limit")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise HetsamInputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise HetsamInputError(f"{where}: JSON nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    except _Refused as exc:
        raise HetsamInputError(f"{where}: {exc}") from None
    _check_depth(value, where)
    return value


class _Refused(ValueError):
    pass


def _no_constant(name: str):
    raise _Refused(f"{name} is not a JSON number; write a finite number")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _check_depth(value: Any, where: str) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise HetsamInputError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


# ---- writing --------------------------------------------------------------------------------------
def check_writable(path, what: str = "output") -> Path:
    """Refuse, before any work, a target that cannot be written atomically. Returns the file to
    write: a symlink's target (followed, so that the link stays a link), else ``path``."""
    target = Path(path)
    if str(path) == "" or target.name in ("", ".", ".."):
        raise HetsamInputError(f"{what} path {str(path)!r} names no file")
    if target.is_symlink() or any(p.is_symlink() for p in target.parents if str(p) not in ("", ".")):
        target = Path(os.path.realpath(target))  # write beside the link's target, not over the link
    try:
        info = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise HetsamInputError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise HetsamInputError(f"{what} {str(path)!r} is {kind}; name a regular file to write")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise HetsamInputError(f"{what} {str(path)!r}: folder {str(parent)!r} does not exist; create it first")
    return target


@contextlib.contextmanager
def atomic_path(path, what: str = "output") -> Iterator[Path]:
    """A temporary path in the target's folder; on a clean exit it is synced and renamed onto
    ``path``; on any failure it is removed and the target is left as it was."""
    import tempfile  # only when writing

    target = check_writable(path, what)
    try:
        fd, tmp = tempfile.mkstemp(dir=str(target.parent) or ".", prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise HetsamInputError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, _mode_for(target))
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError):
            raise HetsamInputError(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}; "
                                   "any previous file is unchanged") from None
        raise
    _sync_folder(target.parent)


def write_text(path, text: str, what: str = "output") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()


def _mode_for(target: Path) -> int:
    """The old file's permission bits, or a new file's under the umask (mkstemp makes 0600)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(target).st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux tells it without changing it (no race with other threads)
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(str(folder) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
