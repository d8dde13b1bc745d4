"""The review section: which passed candidates people judge, and how."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.policy.loader import Check, at_least, within_01

__all__ = ["REVIEW_STAGES", "ReviewPolicy"]

# stages whose rejections the review audit can be told to leave alone
REVIEW_STAGES = (
    "pii",
    "action",
    "length",
    "quality",
    "toxicity",
    "grounding",
    "contract",
    "duplicates",
    "keep_rate",
    "filter_error",
)


@dataclass(frozen=True)
class ReviewPolicy:
    """Which passed candidates people review, and how (the seed's Section 04: sample 5-10 %)."""

    enabled: bool = True
    share: float = 0.07  # of passed candidates, per task type; the seed's band is 5-10 %
    random_share: float = 0.30  # of the review sample drawn uniformly at random, so calibration stays unbiased
    # the interaction's uncertainty (entropy, 0..1) at or above which it is a priority
    uncertainty_threshold: float = 0.5
    changed_delta: float = 0.15  # acceptance of a task type on this model version vs the baseline's
    changed_min_samples: int = 30  # outcomes per version and task type before "changed" is judged
    baseline_model: str = ""  # empty: the version with the most traffic for the task type
    rare_share: float = 0.05  # task types below this share of traffic are the long tail
    rare_min_per_window: int = 20  # a rare task type is reviewed at least this often per window
    # most items sampled per dataset window ([datasets] window_days), across workers; 0: no cap
    budget_per_window: int = 5_000
    audit_share: float = 0.01  # of rejected candidates, sampled to measure the gate's recall
    audit_exclude: tuple[str, ...] = ("pii", "toxicity")  # never put candidates rejected by these stages before people
    overlap_share: float = 0.10  # of sampled items reviewed by two people, to measure agreement
    required: bool = False  # datasets keep only candidates that passed review (the gold set)
    safety_floor: int = 3  # a verdict's safety score (1-5) below this removes the candidate like a failed verdict

    def check(self, bad: Check) -> None:
        if not 0.05 <= self.share <= 0.10:
            bad("[review] share", f"must be within 0.05..0.10 (the seed's 5-10 %), got {self.share}")
        within_01(
            bad,
            ("[review] random_share", self.random_share),
            ("[review] uncertainty_threshold", self.uncertainty_threshold),
            ("[review] changed_delta", self.changed_delta),
            ("[review] rare_share", self.rare_share),
            ("[review] audit_share", self.audit_share),
            ("[review] overlap_share", self.overlap_share),
        )
        at_least(
            bad,
            0,
            ("[review] changed_min_samples", self.changed_min_samples),
            ("[review] rare_min_per_window", self.rare_min_per_window),
            ("[review] budget_per_window", self.budget_per_window),
        )
        unknown = set(self.audit_exclude) - set(REVIEW_STAGES)
        if unknown:
            bad("[review] audit_exclude", f"unknown stages {sorted(unknown)}; known: {', '.join(REVIEW_STAGES)}")
        if not 1 <= self.safety_floor <= 5:
            bad("[review] safety_floor", f"must be within 1..5 (the verdict's safety scale), got {self.safety_floor}")
