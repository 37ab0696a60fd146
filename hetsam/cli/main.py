"""The ``hetsam`` command: a thin dispatcher over ``hetsam.cli.commands``.

Bad input (``HetsamInputError``, a missing file, malformed JSON) exits with code 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (HetsamInputError, FileNotFoundError, IsADirectoryError, PermissionError, json.JSONDecodeError) as exc:
        print(f"hetsam {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `hetsam plan --json | head`: the reader left, not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"hetsam {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or exc}: {exc.filename}"
    else:
        text = str(exc)
    return " ".join(text.split())
