"""The rollout's metrics: labels are arms and actions, never versions' users or texts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.rollout.analysis import ArmStats

ARMS = ("incumbent", "candidate", "after")  # after: the promoted model, watched against the baseline


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.weight = Gauge(
            "flywheel_rollout_candidate_weight", "Share of users the candidate model serves (0..1).", registry=r
        )
        self.acceptance = Gauge(
            "flywheel_rollout_acceptance_ratio", "Accepted or copied answers per request, by arm.", ["arm"], registry=r
        )
        self.feedback = Gauge(
            "flywheel_rollout_feedback_ratio", "Thumbs (up or down) per request, by arm.", ["arm"], registry=r
        )
        self.errors = Gauge(
            "flywheel_rollout_error_ratio", "Empty or degenerate responses per request, by arm.", ["arm"], registry=r
        )
        self.requests = Gauge(
            "flywheel_rollout_requests", "Requests counted in the current rollout, by arm.", ["arm"], registry=r
        )
        self.likelihood = Gauge(
            "flywheel_rollout_likelihood_ratio",
            "The sequential test's mixture likelihood ratio; decides at 1/alpha.",
            registry=r,
        )
        self.decisions = Counter(
            "flywheel_rollout_decisions_total", "Rollout decisions, by action.", ["action"], registry=r
        )
        self.counted = Counter("flywheel_rollout_counted_total", "Joined requests counted into an arm.", registry=r)

    def observe(self, arm: str, s: ArmStats) -> None:
        self.acceptance.labels(arm).set(s.acceptance)
        self.feedback.labels(arm).set(s.feedback_rate)
        self.errors.labels(arm).set(s.error_rate)
        self.requests.labels(arm).set(s.requests)
