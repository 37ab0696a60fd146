"""The ``hetsam`` sub-commands: one module each (``hetsam/cli/<name>.py``).

Each module defines ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help is
here, so the top-level ``--help`` imports no command and a command imports only itself. Module
top levels stay torch-free; a command imports torch inside ``run`` only if it needs it.
"""

COMMANDS = {
    "devices": "list the usable CPU sockets (cores after affinity and cgroup limits) and GPUs",
    "profile": "measure a reference model's forward+backward, update and copy costs on each device; save a profile JSON",
    "plan": "plan SAM for a profiled machine (or profile this one first) and print the candidates",
    "simulate": "predict a plan's time per iteration on a profiled (or what-if) machine with a discrete-event simulation",
    "bench": "measure the step time of SGD, SAM and each parallel strategy side by side on this machine, next to the simulator",
}
