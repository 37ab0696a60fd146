"""Notes as a person reads them: repeated notes collapse into one line with a count (torch-free).

Two notes are *of one pattern* when they differ only in device names (``cpu:0[0-3]``,
``cuda:1``) and numbers. A group of one pattern prints once:

- identical notes: the note and ``(×N)``;
- one part varies: the note with that part's values listed (up to three, then ``…``) and
  ``(×N)``, e.g. ``cpu:0[0-3], cpu:0[0-6], …, cpu:0[52-55]: Amdahl from cpu:0[0] and cpu:0 (×18)``;
- several parts vary, in up to three notes: each varying part lists its values note by note, in
  the same order (``cpu:0, cpu:0[0]: wide spread … at batch 16 (41, 38%)``), and ``(×N)``; in
  more notes: the pattern, with ``…`` where they differ, and ``(×N)``.

Every command prints its notes through :func:`note_lines` (``hetsam simulate``, ``bench``, and
the profile warnings of :mod:`hetsam.profiling.cache`); JSON output keeps the full list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NoteGroup", "collapse", "collapsed_texts", "note_lines", "safe_text"]

# a device name (with its pool), else a number: the parts in which notes of one pattern differ
_PART = re.compile(r"(?:cpu|cuda)(?::\d+(?:\[[^\]]*\])?)?|\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_SHOWN = 3  # values of a varying part listed before "…"


@dataclass(frozen=True)
class NoteGroup:
    """Notes of one pattern: the ``notes`` themselves, in the order they came."""

    notes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.notes)

    def text(self) -> str:
        """The group in one line (module docstring)."""
        first = self.notes[0]
        if self.count == 1:
            return first
        if all(n == first for n in self.notes):
            return f"{first} (×{self.count})"
        gaps = _PART.split(first)  # the fixed text around the parts
        parts = [_PART.findall(n) for n in self.notes]
        varying = [i for i in range(len(parts[0])) if any(p[i] != parts[0][i] for p in parts)]
        shown = list(parts[0])
        if len(varying) == 1:
            i = varying[0]
            values = list(dict.fromkeys(p[i] for p in parts))
            if len(values) > _SHOWN:
                values = [*values[:_SHOWN - 1], "…", values[-1]]
            shown[i] = ", ".join(values)
        elif self.count <= _SHOWN:  # paired by position: the k-th value of each part is note k's
            for i in varying:
                shown[i] = ", ".join(p[i] for p in parts)
        else:
            for i in varying:
                shown[i] = "…"
        out = gaps[0] + "".join(v + g for v, g in zip(shown, gaps[1:]))
        return f"{out} (×{self.count})"

    def to_dict(self) -> dict:
        return {"note": self.text(), "count": self.count, "notes": list(self.notes)}


def _pattern(note: str) -> str:
    return _PART.sub("\0", note)


_MAX_NOTE = 500  # characters of one note (a note may come from a file)


def safe_text(text) -> str:
    """``text`` fit for a terminal: control characters (escape sequences, newlines) written as
    escapes, and at most 500 characters (notes and warnings may come from a file)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= _MAX_NOTE else text[:_MAX_NOTE - 1] + "…"


def collapse(notes) -> list[NoteGroup]:
    """``notes`` grouped by pattern, each group where its first note came (made terminal-safe)."""
    groups: dict[str, list[str]] = {}
    for note in notes:
        note = safe_text(note)
        groups.setdefault(_pattern(note), []).append(note)
    return [NoteGroup(tuple(g)) for g in groups.values()]


def collapsed_texts(notes) -> list[str]:
    """One line per group of :func:`collapse` (no prefix)."""
    return [g.text() for g in collapse(notes)]


def note_lines(notes, prefix: str = "note: ") -> list[str]:
    """The lines a command prints for ``notes``: one per group, each with ``prefix``."""
    return [prefix + t for t in collapsed_texts(notes)]
