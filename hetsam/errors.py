"""Exceptions that carry a one-line, user-facing message.

The command line turns a :class:`HetsamInputError` into exit code 2 and a single line on
stderr; library callers get an ordinary ``ValueError`` subclass.
"""

__all__ = ["HetsamInputError", "WorkerFailure", "NonFiniteUpdate"]


class HetsamInputError(ValueError):
    """Bad user input: a malformed file, an impossible setting, a device that is not there.

    The message names the problem and how to fix it, on one line.
    """


class WorkerFailure(RuntimeError):
    """An ascent worker failed; the original exception is attached as ``__cause__``.

    ``job`` (when set) is the job whose result is missing, with the snapshot it was submitted
    with, so ``on_worker_failure="degrade"`` can compute it elsewhere.
    """

    job = None


class NonFiniteUpdate(RuntimeError):
    """A training step's loss or update gradient was not finite (``AutoSAM(nonfinite="raise")``).

    Nothing of that step reached the parameters or the base optimizer's state; the step counts as
    taken, with its update skipped (``stats()["skipped_updates"]``). ``step`` is its number
    (1-based, as the divergence guard counts) and ``reason`` what was not finite.
    """

    step: int | None = None
    reason: str | None = None
