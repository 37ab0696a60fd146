"""How a command prints: it builds its data first, then prints it as JSON or as text."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["emit", "fmt_seconds"]


def emit(as_json: bool, data: Callable[[], Any], text: Callable[[], str]) -> int:
    """Print ``data()`` as indented JSON (``--json``) or ``text()``; returns exit code 0."""
    if as_json:
        json.dump(data(), sys.stdout, indent=2, allow_nan=False)
        print()
    else:
        print(text())
    return 0


def fmt_seconds(s: float) -> str:
    """Seconds in the unit that reads best: ``246.982 ms``, ``57.4 µs``, ``4.1 min``."""
    if s == 0:
        return "0 s"
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} µs"
