"""Calibration: how well the gate agrees with people, and the quality threshold that would agree best (pure).

Every reviewed candidate is weighted by 1 / its inclusion probability, so the sampler's priority
classes (which over-sample corrections, uncertain answers, rare task types) do not bias the
estimates towards them. A reviewed candidate passes review only when every reviewer passed it
(conservative: one "no" keeps it out of a gold set). The threshold search uses only candidates
the quality score alone decided (no reason but low quality or the keep-rate cut): for the others
moving the threshold would not have changed the gate's answer.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from schemas.records import REVIEW_SCORES, ReviewVerdict
from streams.gate.filters import REASONS
from flywheel.policy import GatePolicy

QUALITY_CODES = frozenset(REASONS["quality"]) | {
    "below_keep_quantile"
}  # the gate cut by keep rate until builder 4: old verdicts say so
_TIE = 1e-9  # weighted agreements closer than this (relative to the total weight) are ties


@dataclass
class Observation:
    """One reviewed candidate: the consensus over its verdicts."""

    request_id: str
    task_type: str
    gate_passed: bool
    quality: float
    reviewer_passed: bool
    weight: float
    quality_decisive: bool


def _distinct(verdicts: Iterable[ReviewVerdict]) -> list[ReviewVerdict]:
    """A re-sent verdict (same verdict_id) counts once: the first copy."""
    seen: set[str] = set()
    out = []
    for v in verdicts:
        if v.verdict_id not in seen:
            seen.add(v.verdict_id)
            out.append(v)
    return out


def _by_item(verdicts: Sequence[ReviewVerdict]) -> dict[str, list[ReviewVerdict]]:
    """request_id -> one verdict per reviewer (their latest), in review order."""
    items: dict[str, dict[str, ReviewVerdict]] = defaultdict(dict)
    for v in sorted(verdicts, key=lambda v: (v.reviewed_at, v.verdict_id)):
        items[v.request_id][v.reviewer] = v
    return {rid: sorted(per.values(), key=lambda v: (v.reviewed_at, v.verdict_id)) for rid, per in items.items()}


def observations(verdicts: Iterable[ReviewVerdict]) -> list[Observation]:
    out = []
    for rid, vs in _by_item(_distinct(verdicts)).items():
        first = vs[0]
        p = first.sample_probability
        out.append(
            Observation(
                request_id=rid,
                task_type=next((v.task_type for v in vs if v.task_type), ""),
                gate_passed=first.gate_passed,
                quality=float(first.quality_score),
                reviewer_passed=all(v.passed for v in vs),
                weight=1.0 / p if p > 0 else 1.0,
                quality_decisive=all(code in QUALITY_CODES for code in first.gate_reasons),
            )
        )
    return out


def _kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe >= 1.0 else (po - pe) / (1.0 - pe)


def reviewer_agreement(verdicts: Iterable[ReviewVerdict]) -> dict[str, Any]:
    """Over items two or more people reviewed: how often they all agree on pass, Cohen's kappa of the
    first two reviewers' pass/fail, and the mean absolute difference of the first two's scores."""
    shared = [vs for vs in _by_item(_distinct(verdicts)).values() if len(vs) >= 2]
    n = len(shared)
    return {
        "items": n,
        "agreement": sum(len({v.passed for v in vs}) == 1 for vs in shared) / n if n else None,
        "cohen_kappa": _kappa([vs[0].passed for vs in shared], [vs[1].passed for vs in shared]),
        "mean_abs_diff": {
            s: (sum(abs(getattr(vs[0], s) - getattr(vs[1], s)) for vs in shared) / n if n else None)
            for s in REVIEW_SCORES
        },
    }


def gate_vs_review(obs: Sequence[Observation]) -> dict[str, Any]:
    """Weighted agreement, precision P(reviewer pass | gate pass), recall P(gate pass | reviewer pass), F1."""
    total = sum(o.weight for o in obs)
    agree = sum(o.weight for o in obs if o.gate_passed == o.reviewer_passed)
    both = sum(o.weight for o in obs if o.gate_passed and o.reviewer_passed)
    gate = sum(o.weight for o in obs if o.gate_passed)
    people = sum(o.weight for o in obs if o.reviewer_passed)
    precision = both / gate if gate > 0 else None
    recall = both / people if people > 0 else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    # what the gate let through and people failed: the records a failed verdict withdrew from datasets
    passed_failed = [o for o in obs if o.gate_passed and not o.reviewer_passed]
    return {
        "n": len(obs),
        "weight": total,
        "agreement": agree / total if total > 0 else None,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "gate_passed_reviewer_failed": len(passed_failed),
        "gate_passed_reviewer_failed_share": (sum(o.weight for o in passed_failed) / gate) if gate > 0 else None,
    }


def _agreement_at(obs: Sequence[Observation], t: float) -> float | None:
    total = sum(o.weight for o in obs)
    if total <= 0:
        return None
    return sum(o.weight for o in obs if (o.quality >= t) == o.reviewer_passed) / total


def propose_threshold(obs: Sequence[Observation], current: float, min_observations: int = 30) -> dict[str, Any]:
    """The quality threshold that agrees best (weighted) with reviewers, over the quality-decisive
    observations; ties go to the candidate closest to `current`, so the threshold only moves for a reason."""
    decisive = [o for o in obs if o.quality_decisive]
    n = len(decisive)
    out: dict[str, Any] = {
        "threshold": None,
        "current": current,
        "agreement_at_current": _agreement_at(decisive, current),
        "agreement_at_proposed": None,
        "n": n,
        "reason": "",
    }
    if n < min_observations:
        out["reason"] = f"{n} observations, need {min_observations}"
        return out
    if sum(o.weight for o in decisive) <= 0:
        out["reason"] = "observations carry no weight"
        return out
    qualities = sorted({o.quality for o in decisive})
    candidates = [current, *((lo + hi) / 2 for lo, hi in zip(qualities, qualities[1:]))]
    # agreement(t) = weight of fails below t + weight of passes at or above t, from prefix sums
    order = sorted(decisive, key=lambda o: o.quality)
    keys = [o.quality for o in order]
    fails_below, passes_below = [0.0], [0.0]
    for o in order:
        fails_below.append(fails_below[-1] + (0.0 if o.reviewer_passed else o.weight))
        passes_below.append(passes_below[-1] + (o.weight if o.reviewer_passed else 0.0))
    tie = _TIE * passes_below[-1] + _TIE * fails_below[-1]
    best_t, best_a = current, -1.0
    for t in sorted(candidates):
        i = bisect_left(keys, t)
        a = fails_below[i] + passes_below[-1] - passes_below[i]
        if a > best_a + tie or (abs(a - best_a) <= tie and abs(t - current) < abs(best_t - current)):
            best_t, best_a = t, a
    t = round(best_t, 4)
    out["threshold"] = t
    out["agreement_at_proposed"] = _agreement_at(decisive, t)
    return out


def calibrate(verdicts: Iterable[ReviewVerdict], policy: GatePolicy, min_observations: int = 30) -> dict[str, Any]:
    """The calibration report for one policy: gate vs people, overall and per task type, reviewers
    among themselves, and a proposed quality threshold."""
    distinct = _distinct(verdicts)
    obs = observations(distinct)
    by_task: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        by_task[o.task_type].append(o)
    return {
        "verdicts": len(distinct),
        "items": len(obs),
        "gold": sum(1 for o in obs if o.gate_passed and o.reviewer_passed),  # passed the gate and every reviewer
        "overall": gate_vs_review(obs),
        "by_task_type": {t: gate_vs_review(group) for t, group in sorted(by_task.items())},
        "reviewers": reviewer_agreement(distinct),
        "threshold": propose_threshold(obs, policy.quality.threshold, min_observations),
        "policy_version": policy.version,
    }


def next_version(version: str) -> str:
    """ "default-1" -> "default-2", "prod" -> "prod-2", "v3.1-7" -> "v3.1-8"."""
    m = re.fullmatch(r"(.*)-(\d+)", version)
    return f"{m.group(1)}-{int(m.group(2)) + 1}" if m else f"{version}-2"


def calibrated_policy(policy: GatePolicy, report: Mapping[str, Any]) -> GatePolicy | None:
    """The policy with the proposed quality threshold under the next version; None when the report
    proposes nothing, or proposes the threshold the policy already has."""
    proposal = report.get("threshold")
    t = proposal.get("threshold") if isinstance(proposal, Mapping) else None
    if t is None or t == policy.quality.threshold:
        return None
    return policy.with_version(next_version(policy.version), quality={"threshold": float(t)})
