"""The gate a candidate model passes before it goes to A/B: better overall, no task type worse.

Plain function of two evaluations and the policy, so the rule is tested without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from streams.gate.policy import TrainerPolicy


@dataclass
class Decision:
    passed: bool
    reasons: list[str]
    deltas: dict[str, float] = field(default_factory=dict)  # "overall" and "task.<type>": candidate - incumbent


def decide(candidate: Mapping[str, float], incumbent: Mapping[str, float] | None, policy: TrainerPolicy) -> Decision:
    """`candidate` / `incumbent`: the flat metrics of `EvalResult.metrics()`. With no incumbent (the
    first model), the candidate passes when it has any golden score at all."""
    if incumbent is None:
        return Decision(True, ["no_incumbent"], {"overall": candidate.get("overall", 0.0)})
    deltas = {k: candidate.get(k, 0.0) - incumbent.get(k, 0.0)
              for k in sorted(set(candidate) | set(incumbent)) if k == "overall" or k.startswith("task.")}
    reasons = []
    if deltas.get("overall", 0.0) <= policy.min_improvement:
        reasons.append(f"overall_delta_below_threshold:{deltas.get('overall', 0.0):+.4f}<={policy.min_improvement}")
    for k, d in deltas.items():
        if k.startswith("task.") and d < -policy.max_task_regression:
            reasons.append(f"task_regressed:{k[5:]}:{d:+.4f}")
    return Decision(not reasons, reasons or ["improved"], deltas)
