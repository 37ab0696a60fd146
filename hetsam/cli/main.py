"""The ``hetsam`` command: a thin dispatcher over ``hetsam.cli.commands``.

Bad input (``HetsamInputError``, a missing file, malformed JSON) exits with code 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hetsam import __version__
from hetsam.cli.commands import COMMANDS
from hetsam.errors import HetsamInputError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: exit 2, one line
        self.exit(2, f"hetsam: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` is imported (every one when none is)."""
    parser = _Parser(prog="hetsam", description="Sharpness-aware minimization on the compute you already have.")
    parser.add_argument("--version", action="version", version=f"hetsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    named = next((a for a in (argv or ()) if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if named is None or name == named:
            module = _command_module(name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_module(name: str):
    return importlib.import_module(f"hetsam.cli.{name}")


# errors that come from what the user gave (a file, an argument, the disk): exit 2, one line
_INPUT_ERRORS = (HetsamInputError, OSError, UnicodeError, MemoryError, RecursionError, OverflowError)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit 0 on success; 2, with one line on stderr, on bad input (a malformed
    file, an impossible setting, a full disk); 1 for a bug, with one line saying where the full
    traceback was written; 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # e.g. `hetsam plan --json | head`: the reader left, not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"hetsam {args.command}: interrupted", file=sys.stderr)
        return 130
    except _INPUT_ERRORS as exc:
        print(f"hetsam {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback in a file
        where = _save_traceback()
        print(f"hetsam {args.command}: internal error ({type(exc).__name__}: {_one_line(exc)[:200]}); this is a bug "
              f"in hetsam: the traceback is in {where}", file=sys.stderr)
        return 1


def _save_traceback() -> str:
    import tempfile
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix="hetsam-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            traceback.print_exc(file=fh)
        return path
    except OSError:
        return "(no file: the temporary folder is not writable)"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory; is the input far larger than the machine (a huge batch size, a huge file)?"
    if isinstance(exc, RecursionError):
        return "input nested too deeply"
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or exc}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 1000 else text[:997] + "..."
