"""The verdict form: what a reviewer posts, checked, and the verdict event it becomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from schemas.records import REVIEW_SCORES, ReviewVerdict
from streams.review.queue import Lease

__all__ = ["FormError", "VerdictForm", "parse_verdict_form", "build_verdict"]


class FormError(ValueError):
    """A verdict form that cannot be recorded; the message is one line, safe to show."""


@dataclass(frozen=True)
class VerdictForm:
    item_id: str
    lease_id: str
    scores: dict[str, int]
    passed: bool


def parse_verdict_form(form: Mapping[str, str]) -> VerdictForm:
    scores: dict[str, int] = {}
    for name in REVIEW_SCORES:
        raw = (form.get(name) or "").strip()
        if not raw:
            raise FormError(f"{name} is missing: give a score from 1 to 5")
        if raw not in ("1", "2", "3", "4", "5"):
            raise FormError(f"{name} must be a whole number from 1 to 5")
        scores[name] = int(raw)
    passed = (form.get("passed") or "").strip().lower()
    if passed not in ("1", "0", "pass", "fail", "true", "false"):
        raise FormError("choose pass or fail")
    item_id, lease_id = (form.get("item_id") or "").strip(), (form.get("lease_id") or "").strip()
    if not item_id or not lease_id or len(item_id) > 512 or len(lease_id) > 128:
        raise FormError("the form does not name the item and its lease; reload the page")
    return VerdictForm(item_id, lease_id, scores, passed in ("1", "pass", "true"))


def build_verdict(lease: Lease, reviewer: str, form: VerdictForm, now_ms: int) -> ReviewVerdict:
    item, c = lease.item, lease.item.candidate
    request_id = str(c.get("request_id") or item.item_id)
    return ReviewVerdict(
        verdict_id=f"{request_id}:{reviewer}",
        request_id=request_id,
        reviewer=reviewer,
        accuracy=form.scores["accuracy"],
        helpfulness=form.scores["helpfulness"],
        safety=form.scores["safety"],
        passed=form.passed,
        reviewed_at=now_ms,
        event_time=int(c.get("timestamp") or 0),
        gate_passed=bool(item.gate_passed),
        task_type=str(c.get("task_type") or ""),
        model_version=str(c.get("model_version") or ""),
        quality_score=float(c.get("quality_score") or 0.0),
        gate_scores={str(k): float(v) for k, v in (c.get("scores") or {}).items()},
        gate_reasons=[str(r) for r in (c.get("reasons") or [])],
        policy_version=str(c.get("policy_version") or ""),
        sampled_for=[str(s) for s in item.sampled_for],
        sample_probability=float(item.probability),
        review_round=int(lease.round),
        seconds_spent=round(max(0.0, (now_ms - lease.started_ms) / 1000), 3),
        source=str(item.source or ""),
    )
