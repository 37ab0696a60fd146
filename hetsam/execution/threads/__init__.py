"""The threaded executor: worker lifecycle (``worker``), snapshots (``staging``), the share
policy (``share``) and the executor that composes them (``executor``)."""

from hetsam.execution.threads.executor import ThreadedExecutor
from hetsam.execution.threads.share import SHARE_MODES

__all__ = ["ThreadedExecutor", "SHARE_MODES"]
