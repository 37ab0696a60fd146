"""`Plan`: what runs where, with which numbers. Pure data, JSON only, no torch.

A plan is produced by the planner (or written by hand) and consumed by the executor,
the simulator and ``AutoSAM``. DESIGN.md section 5 fixes the field names.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hetsam.hardware.names import parse_device
from hetsam.errors import HetsamInputError

__all__ = ["Plan", "STRATEGIES", "ASCENT_POLICIES"]

STRATEGIES = ("sgd", "sam", "async_sam", "sampa", "rst")
ASCENT_POLICIES = ("lookahead", "independent")


@dataclass
class Plan:
    """A training plan.

    Attributes:
        strategy: ``"sgd"``, ``"sam"``, ``"async_sam"``, ``"sampa"`` or ``"rst"``.
        descent_device: where the update (descent) gradient runs.
        ascent_device: where the perturbation (ascent) gradient runs; ``None`` means the
            descent device. For SAMPa it is the device that computes g_y'.
        batch_size: b, the descent batch; ``None`` means "whatever the user passes".
        ascent_batch_size: b', the first b' samples of a batch used for the ascent
            (``None`` means b' = b).
        staleness: τ, exact ascent staleness of AsyncSAM in steps.
        ascent_batches: ``"lookahead"`` (perturb step t with g(θ_{t−τ}; B'_t)) or
            ``"independent"`` (the AsyncSAM paper: g(θ_s; B'_s) used at step s+τ).
        sam_probability: p of RST (a number in [0, 1]); ``None`` means 0.5.
        sampa_lambda: λ of SAMPa-λ, in [0, 1].
        predicted: what the planner or simulator predicted (seconds per iteration, ...).
    """

    strategy: str
    descent_device: str = "cpu"
    ascent_device: str | None = None
    batch_size: int | None = None
    ascent_batch_size: int | None = None
    staleness: int = 1
    ascent_batches: str = "lookahead"
    sam_probability: float | None = None
    sampa_lambda: float = 0.2
    predicted: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise HetsamInputError(f"Plan.strategy={self.strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
        parse_device(self.descent_device)
        if self.ascent_device is not None:
            parse_device(self.ascent_device)
        for name in ("batch_size", "ascent_batch_size", "staleness"):
            value = getattr(self, name)
            if value is None and name != "staleness":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise HetsamInputError(f"Plan.{name}={value!r} must be an integer")
        if self.batch_size is not None and self.batch_size < 1:
            raise HetsamInputError(f"Plan.batch_size={self.batch_size} must be at least 1")
        if self.ascent_batch_size is not None:
            if self.ascent_batch_size < 1:
                raise HetsamInputError(f"Plan.ascent_batch_size={self.ascent_batch_size} must be at least 1")
            if self.batch_size is not None and self.ascent_batch_size > self.batch_size:
                raise HetsamInputError(
                    f"Plan.ascent_batch_size={self.ascent_batch_size} exceeds batch_size={self.batch_size}; "
                    "the ascent uses the first b' samples of a batch, so b' <= b"
                )
        if self.staleness < 0:
            raise HetsamInputError(f"Plan.staleness={self.staleness} must be >= 0")
        if self.ascent_batches not in ASCENT_POLICIES:
            raise HetsamInputError(
                f"Plan.ascent_batches={self.ascent_batches!r} is unknown; choose 'lookahead' or 'independent'"
            )
        if self.sam_probability is not None:
            _check_unit("sam_probability", self.sam_probability)
        _check_unit("sampa_lambda", self.sampa_lambda)
        if not isinstance(self.predicted, dict):
            raise HetsamInputError("Plan.predicted must be a dict")

    # ---- derived views -------------------------------------------------------------
    @property
    def effective_ascent_device(self) -> str:
        return self.ascent_device if self.ascent_device is not None else self.descent_device

    def ascent_size(self, batch_size: int) -> int:
        """b' for a batch of ``batch_size`` samples (never more than the batch)."""
        if self.ascent_batch_size is None:
            return batch_size
        return min(self.ascent_batch_size, batch_size)

    @property
    def probability(self) -> float:
        """RST's p, defaulting to 0.5."""
        return 0.5 if self.sam_probability is None else float(self.sam_probability)

    def describe(self) -> str:
        """One line, for logs."""
        s = f"{self.strategy} descent={self.descent_device}"
        if self.strategy in ("async_sam", "sampa", "sam") and self.ascent_device:
            s += f" ascent={self.effective_ascent_device}"
        if self.batch_size is not None:
            s += f" b={self.batch_size}"
        if self.strategy == "async_sam":
            s += f" b'={self.ascent_batch_size if self.ascent_batch_size is not None else 'b'}"
            s += f" tau={self.staleness} {self.ascent_batches}"
        if self.strategy == "rst":
            s += f" p={self.probability:g}"
        if self.strategy == "sampa":
            s += f" lambda={self.sampa_lambda:g}"
        return s

    # ---- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        if not isinstance(data, dict):
            raise HetsamInputError("a plan must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HetsamInputError(f"plan has unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        if "strategy" not in data:
            raise HetsamInputError("plan is missing the field 'strategy'")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HetsamInputError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path) -> "Plan":
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise HetsamInputError(f"cannot read plan {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except HetsamInputError as exc:
            raise HetsamInputError(f"{path}: {exc}") from None

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json() + "\n")


def _check_unit(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise HetsamInputError(f"Plan.{name}={value!r} must be a number in [0, 1]")
