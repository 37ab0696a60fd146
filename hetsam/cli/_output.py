"""How a command prints: it builds its data first, then prints it as JSON or as text."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

__all__ = ["emit"]


def emit(as_json: bool, data: Callable[[], Any], text: Callable[[], str]) -> int:
    """Print ``data()`` as indented JSON (``--json``) or ``text()``; returns exit code 0."""
    if as_json:
        json.dump(data(), sys.stdout, indent=2, allow_nan=False)
        print()
    else:
        print(text())
    return 0
