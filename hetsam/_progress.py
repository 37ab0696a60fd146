"""A progress bar on stderr for long work (profiling, benchmarks), or nothing when quiet.

rich draws it; a missing or failing rich only loses the bar (progress is cosmetic).
"""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """rich progress on stderr, or nothing when quiet."""

    def __init__(self, enabled: bool, total: int):
        self._bar = None
        if enabled:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
                self._task = self._bar.add_task("profiling", total=total)
                self._bar.start()
            except Exception:  # noqa: BLE001 - progress is cosmetic
                self._bar = None

    def step(self, description: str, advance: float = 0.0) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description, advance=advance)

    def set_total(self, total: float) -> None:
        """Change the amount of work once it is known (e.g. after a first pass)."""
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
