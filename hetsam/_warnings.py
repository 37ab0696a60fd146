"""Warnings that point at the user's line, not at hetsam's or torch's internals."""

from __future__ import annotations

import os
import sys
import warnings

import torch

import hetsam

__all__ = ["warn_user"]

_INTERNAL = tuple(os.path.dirname(m.__file__) + os.sep for m in (hetsam, torch))


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn`` with the stack level of the first frame outside hetsam and torch."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the caller of warn_user
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
