"""A share of SAM's gain as hetsam shows it: a point estimate, its interval for a new task, and
what stands behind it (torch-free; docs/architecture.md, "Evidence")."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Share", "OBJECTIVES", "count_text", "pct"]

OBJECTIVES = ("robust", "expected")
_KIND_WORDS = (("paper", "published"), ("hetsam", "of hetsam's"), ("user", "of yours"))


def pct(x: float) -> str:
    """``67%``; a share that rounds to zero prints as 0%, never -0%."""
    return f"{round(100 * x)}%"


def count_text(counts: dict) -> str:
    """``11 published settings and 2 of hetsam's`` (``counts``: records per source kind)."""
    parts = []
    for kind, word in _KIND_WORDS:
        n = counts.get(kind, 0)
        if n:
            noun = "setting" if n == 1 and not parts else "settings"
            if not parts:  # the noun goes with the first part only
                parts.append(f"{n} published {noun}" if kind == "paper" else f"{n} {noun} {word}")
            else:
                parts.append(f"{n} {word}")
    if not parts:
        return "no measured setting"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@dataclass(frozen=True)
class Share:
    """A plan's share of SAM's gain for a new task.

    ``value`` is the point estimate; ``low``/``high`` the interval at ``level`` (None when no
    evidence stands behind the value: a proxy); ``counts`` the records behind it by source kind
    (``paper``, ``hetsam``, ``user``, and ``claims`` without a number); ``at`` where on the
    strategy's axis it was read; ``basis`` how it was obtained; ``notes`` what a reader must know
    (a borrowed spread, an interpolation, a radius that was not tested).
    """

    value: float
    low: float | None
    high: float | None
    level: float
    basis: str
    counts: dict = field(default_factory=dict)
    at: str = ""
    notes: tuple = ()

    @property
    def is_proxy(self) -> bool:
        return self.low is None

    @property
    def settings(self) -> int:
        return sum(self.counts.get(k, 0) for k, _ in _KIND_WORDS)

    def objective(self, objective: str) -> float:
        """What the planner maximises: the interval's lower end (``robust``; a proxy counts as 0,
        since no evidence supports it) or the point estimate (``expected``)."""
        if objective == "expected":
            return self.value
        return 0.0 if self.low is None else self.low

    def evidence_text(self) -> str:
        if self.basis == "by definition":
            return "by definition"
        if self.is_proxy:
            return f"no evidence: {self.basis}"
        text = "from " + count_text(self.counts)
        if self.counts.get("claims"):
            text += f" (+{self.counts['claims']} claim(s) without a number)"
        return text

    def interval_text(self) -> str:
        if self.low is None:
            return "interval unknown"
        return f"{pct(self.level)} interval {pct(self.low)} to {pct(self.high)}"

    def text(self) -> str:
        """``67% (80% interval 45% to 92%), from 11 published settings and 2 of hetsam's``."""
        if self.basis == "by definition":
            return f"{pct(self.value)} (by definition)"
        return f"{pct(self.value)} ({self.interval_text()}), {self.evidence_text()}"

    def cell(self) -> str:
        """A table cell: ``67% [45-92]``, ``100%`` (SAM), ``0.25*`` (a proxy)."""
        if self.basis == "by definition":
            return pct(self.value)
        if self.low is None:
            return f"{self.value:.2f}*"
        return f"{pct(self.value)} [{round(100 * self.low)},{round(100 * self.high)}]"

    def to_dict(self) -> dict:
        return {"expected_share": self.value,
                "share_interval": None if self.low is None else [self.low, self.high],
                "share_level": self.level,
                "share_evidence": {**{k: self.counts.get(k, 0) for k, _ in _KIND_WORDS},
                                   "claims": self.counts.get("claims", 0), "text": self.evidence_text()},
                "share_source": "; ".join([self.basis, *(f"at {self.at}" for _ in [0] if self.at), *self.notes])}
