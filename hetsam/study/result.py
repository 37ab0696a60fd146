"""What a study found: its evidence records, the scores per seed, and a table (torch-free).

The records come from :func:`hetsam.evidence.records.paired_records` over the complete seeds
(every strategy finished), so the shares are paired. A share or standard error outside what an
evidence file holds (|share| <= 100, se <= 100: SAM's gain was a sliver of the noise) is
clipped, and the record says so in its notes.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace

from hetsam.evidence.records import paired_records, paired_share, records_document

__all__ = ["StudyResult", "measured", "study_records", "write_evidence"]

_LIMIT = 100.0  # the largest |share| and se an evidence record holds


@dataclass
class StudyResult:
    """The outcome of :func:`hetsam.study`.

    Every dict is keyed by the strategy's name for the planner's plans, by the label for
    ``plans={label: Plan}`` (SGD and SAM added there are ``"sgd"`` and ``"sam"``).
    ``records``: the evidence records (written to ``out`` when given; empty with fewer than 2
    complete seeds); ``scores``: key -> the score of each complete seed, in seed order (SGD and
    SAM included); ``labels`` and ``plans``: key -> its label and Plan; ``seconds``: the wall
    time of this call; ``run_seconds``: key -> training seconds per complete seed; ``seeds``:
    complete seeds; ``trained``/``reused``: runs trained by this call / taken from the run log;
    ``stopped``: why the study stopped early (the time budget), else None; ``out``: the evidence
    file written, or None; ``runs``: key -> the run log's entry of each complete seed (with its
    ``curve`` when the study kept one); ``base``/``sam``: the keys of SGD and SAM.
    """

    records: list
    scores: dict
    labels: dict
    plans: dict
    seconds: float
    run_seconds: dict = field(default_factory=dict)
    seeds: int = 0
    trained: int = 0
    reused: int = 0
    stopped: str | None = None
    out: str | None = None
    base: str = ""  # the key of the SGD baseline
    sam: str = ""  # ... and of SAM
    runs: dict = field(default_factory=dict)

    def share(self, key: str) -> tuple[float, float]:
        """``(share, se)`` of SAM's paired gain that ``key`` kept (NaN when it is unknown)."""
        if self.seeds < 2:
            return math.nan, math.nan
        return paired_share(self.scores[key], self.scores[self.base], self.scores[self.sam])

    def table(self) -> str:
        """SGD, SAM and each candidate: the score's mean ± sd over the seeds, the share ± se."""
        names = {k: v.replace("\n", " ")[:48] for k, v in self.labels.items()}
        w = max([8, *map(len, names.values())])
        head = f"{'strategy':{w}s} {'score: mean ± sd':>20s} {'share of SAM gain':>18s} {'s/run':>7s}"
        lines = [f"{self.seeds} complete paired seed(s); score = evaluate(model), higher is better", head,
                 "-" * len(head)]
        for name, label in names.items():
            scores = self.scores.get(name, [])
            cell = "-"
            if scores:
                cell = f"{statistics.mean(scores):.4g} ± {statistics.stdev(scores) if len(scores) > 1 else 0.0:.2g}"
            if name in (self.base, self.sam):
                share = "0%" if name == self.base else "100%"
            else:
                value, se = self.share(name)
                share = f"{value:.0%} ± {se:.0%}" if math.isfinite(value) else "unknown"
            secs = self.run_seconds.get(name) or []
            took = f"{statistics.mean(secs):.2f}" if secs else "-"
            lines.append(f"{label:{w}s} {cell:>20s} {share:>18s} {took:>7s}")
        if self.seeds >= 2 and any(not math.isfinite(self.share(n)[0]) for n in self.labels
                                   if n not in (self.base, self.sam)):
            lines.append("unknown: SAM did not beat SGD over these seeds, so no share can be measured")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def measured(runlog, candidates, complete: int, epochs: int) -> list[tuple]:
    """``(plan, scores)`` of every plan besides SGD and SAM that the run log holds at 2 or more
    paired seeds (seeds 0 to n - 1, n <= ``complete``): the current candidates first, then plans of
    earlier calls with the same settings (a study planned again with its own file adds to it)."""
    from hetsam.planning.plan import Plan
    from hetsam.study.runlog import plan_key

    baselines = {plan_key(c.plan.to_dict()) for c in candidates[:2]}
    plans = {plan_key(c.plan.to_dict()): c.plan for c in candidates[2:]}
    for run in runlog.runs:
        key = plan_key(run["plan"])
        if key not in plans and key not in baselines and run["epochs"] == epochs:
            try:
                plans[key] = Plan.from_dict(run["plan"])
            except ValueError:  # a strategy no longer registered: its runs stay in the log, unused
                continue
    out = []
    for plan in plans.values():
        scores = []
        while len(scores) < complete and (run := runlog.find(plan.to_dict(), len(scores), epochs)) is not None:
            scores.append(run["score"])
        if len(scores) >= 2:
            out.append((plan, scores))
    return out


def study_records(base, sam, measured_plans, *, task: dict, source: dict, batch_size: int, study_id: str) -> list:
    """Evidence records of ``measured_plans`` (``(plan, scores)``) against the baselines ``base`` and
    ``sam`` (``(plan, scores)`` over the complete seeds), clipped to what a file holds."""
    out = []
    for n in sorted({len(scores) for _, scores in measured_plans}, reverse=True):
        runs = {"base": (base[0], base[1][:n]), "SAM baseline": (sam[0], sam[1][:n])}
        runs.update({f"plan {i}": (plan, scores) for i, (plan, scores) in enumerate(measured_plans)
                     if len(scores) == n})
        out += paired_records(runs, "base", "SAM baseline", task=task, source={**source, "seeds": n},
                              batch_size=batch_size, id_prefix=f"user-{study_id}", metric="evaluate(model)")
    unique = {}
    for r in out:  # one record per setting: two plans of one setting (other devices) add nothing
        unique.setdefault(r.id, _bounded(r))
    return list(unique.values())


def _bounded(record):
    if not record.has_number or (abs(record.share) <= _LIMIT and record.se <= _LIMIT):
        return record
    share = max(-_LIMIT, min(_LIMIT, record.share))
    se = min(_LIMIT, record.se)
    note = (f"share {record.share:.3g} ± {record.se:.3g} clipped to {share:g} ± {se:g}: SAM's gain over the base "
            "was a sliver of the noise")
    return replace(record, share=share, se=se, notes=(record.notes + " " + note).strip())


def write_evidence(path, records: list, *, provenance: dict) -> None:
    """Write the evidence file atomically (``schema_version`` 2, ``hetsam.evidence.load_records`` reads it)."""
    from hetsam.io import write_text

    doc = records_document(records, {**provenance, "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_text(path, json.dumps(doc, indent=1, allow_nan=False), "study evidence file")
