"""The gate a candidate model passes before it goes to A/B: better overall with confidence, no task
type worse with confidence.

Candidate and incumbent answer the same golden items; `decide_paired` takes a paired bootstrap
interval of the mean per-item difference (2,000 resamples, fixed seed, at `promotion_confidence`)
and promotes when its lower bound is above `min_improvement`, refusing when a task type's interval
lies wholly below `-max_task_regression`. Plain functions of per-item scores and the policy.

Design: docs/concepts/trainer.md#the-promotion-rule
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from flywheel.policy import TrainerPolicy

RESAMPLES = 2000
SEED = 20240607


@dataclass
class Decision:
    passed: bool
    reasons: list[str]
    deltas: dict[str, float] = field(default_factory=dict)  # "overall" and "task.<type>": candidate - incumbent
    # the intervals, as the models event's metrics keys: delta_low, delta_high (overall) and
    # delta_low.task.<type>, delta_high.task.<type>; with "paired_items" and "confidence"
    interval: dict[str, float] = field(default_factory=dict)


def paired_interval(
    differences: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float, float]:
    """(mean, low, high): the mean paired difference and its percentile bootstrap interval."""
    import numpy as np

    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return 0.0, 0.0, 0.0
    mean = float(d.mean())
    if np.all(d == d[0]):
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return mean, float(low), float(high)


def decide_paired(
    candidate: Sequence[float],
    incumbent: Sequence[float],
    tasks: Sequence[str],
    policy: TrainerPolicy,
    against: str = "incumbent",
) -> Decision:
    """The gate on per-item scores of the same golden items, in the same order."""
    if len(candidate) != len(incumbent) or len(candidate) != len(tasks):
        raise ValueError(f"paired scores differ in length: {len(candidate)}, {len(incumbent)}, {len(tasks)} tasks")
    conf = policy.promotion_confidence
    diffs = [c - i for c, i in zip(candidate, incumbent)]
    mean, low, high = paired_interval(diffs, conf)
    deltas = {"overall": mean}
    interval = {"delta_low": low, "delta_high": high, "paired_items": float(len(diffs)), "confidence": conf}
    reasons = []
    if not diffs:
        reasons.append("no_golden_items")
    elif low <= policy.min_improvement:
        reasons.append(f"overall_gain_not_confident:{mean:+.4f}[{low:+.4f},{high:+.4f}]<={policy.min_improvement}")
    for task in sorted(set(tasks)):
        d = [x for x, t in zip(diffs, tasks) if t == task]
        m, lo, hi = paired_interval(d, conf)
        key = f"task.{task or '-'}"
        deltas[key] = m
        interval[f"delta_low.{key}"], interval[f"delta_high.{key}"] = lo, hi
        if hi < -policy.max_task_regression:
            reasons.append(f"task_regressed:{task or '-'}:{m:+.4f}[{lo:+.4f},{hi:+.4f}]")
    return Decision(
        not reasons, reasons or [f"improved_over_{against}:{mean:+.4f}[{low:+.4f},{high:+.4f}]"], deltas, interval
    )


def decide(candidate, incumbent, policy: TrainerPolicy) -> Decision:
    """`candidate` / `incumbent`: two `EvalResult`s on the same golden items (the paired rule above),
    or flat metrics maps (`EvalResult.metrics()`: only point deltas are known, so a gain must beat
    `min_improvement` and no task fall by more than its tolerance). With no incumbent, the first
    model passes when it has any golden score at all."""
    if incumbent is None:
        metrics = candidate.metrics() if hasattr(candidate, "metrics") else candidate
        return Decision(True, ["no_incumbent"], {"overall": metrics.get("overall", 0.0)})
    if hasattr(candidate, "scores") and hasattr(incumbent, "scores") and candidate.scores and incumbent.scores:
        if candidate.item_ids != incumbent.item_ids:
            raise ValueError("candidate and incumbent were evaluated on different golden items")
        return decide_paired(candidate.scores, incumbent.scores, candidate.item_tasks, policy)
    return _decide_points(candidate, incumbent, policy)


def _decide_points(candidate: Mapping[str, float], incumbent: Mapping[str, float], policy: TrainerPolicy) -> Decision:
    candidate = candidate.metrics() if hasattr(candidate, "metrics") else candidate
    incumbent = incumbent.metrics() if hasattr(incumbent, "metrics") else incumbent
    deltas = {
        k: candidate.get(k, 0.0) - incumbent.get(k, 0.0)
        for k in sorted(set(candidate) | set(incumbent))
        if k == "overall" or k.startswith("task.")
    }
    reasons = []
    if deltas.get("overall", 0.0) <= policy.min_improvement:
        reasons.append(f"overall_delta_below_threshold:{deltas.get('overall', 0.0):+.4f}<={policy.min_improvement}")
    for k, d in deltas.items():
        if k.startswith("task.") and d < -policy.max_task_regression:
            reasons.append(f"task_regressed:{k[5:]}:{d:+.4f}")
    return Decision(not reasons, reasons or ["improved"], deltas)
