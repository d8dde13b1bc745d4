"""`flywheel gate explain`: run candidates through a policy and say, for each, what and why.

For people tuning a policy: it never writes anywhere (its duplicate index is in memory, its
keep-rate window its own), and it prints the decision, scores, notes and redaction counts, not
the text, unless asked; and then only the redacted text.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Iterator

from schemas.records import TrainingCandidate
from streams.gate.pipeline import Decision, Gate

TEXT_FIELDS = ("prompt", "response", "correction", "target")


class CandidateLineError(ValueError):
    pass


def parse_candidate(obj) -> TrainingCandidate:
    if not isinstance(obj, dict):
        raise CandidateLineError(f"expected a JSON object, got {type(obj).__name__}")
    if "event" in obj and isinstance(obj["event"], dict):  # a line of `flywheel tail candidates`
        obj = obj["event"]
    missing = [k for k in ("request_id", "prompt", "response", "user_action") if not isinstance(obj.get(k), str)]
    if missing:
        raise CandidateLineError(f"missing or non-string fields: {', '.join(missing)}")
    obj = {"timestamp": 0, "user_id": "", "session_id": "", **obj}  # hand-written lines may leave these out
    try:
        return TrainingCandidate.from_dict(obj)
    except TypeError as exc:
        raise CandidateLineError(str(exc)) from None


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, TrainingCandidate | CandidateLineError]]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, parse_candidate(json.loads(line))
        except json.JSONDecodeError as exc:
            yield n, CandidateLineError(f"not JSON: {exc.msg} at column {exc.colno}")
        except CandidateLineError as exc:
            yield n, exc


def explain_line(d: Decision, show_text: bool = False) -> dict:
    c = d.candidate
    out = {
        "request_id": c.request_id,
        "verdict": "passed" if d.passed else "rejected",
        "reasons": d.reasons,
        "removed_by": d.removed_by,
        "quality_score": c.quality_score,
        "scores": c.scores,
        "notes": c.notes,
        "redactions": c.redactions,
        "user_action": c.user_action,
        "task_type": c.task_type,
        "policy": c.policy_version,
    }
    if show_text:
        out["text"] = {f: getattr(c, f) for f in TEXT_FIELDS if getattr(c, f)}
    return out


class Funnel:
    """What each filter removed, first-rejecter-counts, as the NVIDIA blueprint reports it."""

    def __init__(self):
        self.total = 0
        self.passed = 0
        self.removed = Counter()
        self.reasons = Counter()

    def add(self, decisions: Iterable[Decision]) -> None:
        for d in decisions:
            self.total += 1
            self.passed += d.passed
            if d.removed_by:
                self.removed[d.removed_by] += 1
            self.reasons.update(d.reasons)

    def summary(self, gate: Gate) -> dict:
        remaining = self.total
        stages = []
        for stage in gate.stages:
            removed = self.removed.get(stage.name, 0)
            stages.append({"filter": stage.name, "removed": removed, "remaining": remaining - removed})
            remaining -= removed
        keep = gate.keep_rate
        return {
            "summary": {
                "candidates": self.total,
                "passed": self.passed,
                "pass_rate": round(self.passed / self.total, 4) if self.total else None,
                "funnel": stages,
                "reasons": dict(self.reasons.most_common()),
                "keep_band": list(keep.band) if keep else None,
                "keep_position": {t: keep.position(t) for t in sorted(keep.tasks)} if keep else None,
                "policy": gate.stamp,
            }
        }


def explain(
    candidates: Iterable[TrainingCandidate],
    gate: Gate,
    batch_size: int = 64,
    show_text: bool = False,
    funnel: Funnel | None = None,
) -> Iterator[dict]:
    funnel = funnel if funnel is not None else Funnel()
    batch: list[TrainingCandidate] = []

    def flush():
        decisions = gate.decide(batch)
        funnel.add(decisions)
        batch.clear()
        return [explain_line(d, show_text) for d in decisions]

    for c in candidates:
        batch.append(c)
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()
