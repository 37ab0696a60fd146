"""The ``hetsam`` command line: one module per sub-command, dispatched by :mod:`hetsam.cli.main`."""

from hetsam.cli.main import main

__all__ = ["main"]
