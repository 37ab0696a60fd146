"""One module per ``hetsam`` sub-command.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Module top levels stay torch-free; a command imports torch inside ``run`` only if it needs it.
"""

COMMANDS = ("devices", "profile", "plan", "simulate", "bench")
