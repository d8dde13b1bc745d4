"""The rollout section: how a candidate model meets production traffic."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.policy.loader import Check, at_least

__all__ = ["RolloutPolicy"]


@dataclass(frozen=True)
class RolloutPolicy:
    """How a candidate model meets production traffic: A/B ramp, sequential test, guardrails (the seed's 05, 08)."""

    enabled: bool = True  # start an A/B test for every candidate the trainer's gate passed
    # the candidate's share of users, stage by stage; a win takes it to 100 %
    ramp: tuple[float, ...] = (0.05, 0.25, 0.5)
    stage_min_requests: int = 200  # candidate requests seen at a stage before it ramps to the next
    alpha: float = 0.05  # the sequential test's error rate: a false rollout (or rollback) at most this often
    tau: float = 0.05  # the mixture's spread: the size of acceptance differences the test is tuned to find
    min_requests: int = 100  # per arm before the test may decide
    max_requests: int = 20000  # per arm: reached without a decision, the candidate is retired (inconclusive)
    acceptance_drop: float = 0.05  # guardrail: roll back as soon as acceptance is shown lower by more than this
    max_error_rate: float = 0.05  # guardrail: share of the candidate's responses that are empty or degenerate
    max_latency_ratio: float = 1.5  # guardrail: candidate mean latency over the incumbent's
    guard_min_requests: int = 100  # candidate requests before the error and latency guardrails apply
    watch_requests: int = 2000  # after a promotion, requests of the new model watched for an acceptance drop
    decide_interval_s: float = 5.0  # how often the controller looks at the counts

    def check(self, bad: Check) -> None:
        if not self.ramp or any(not 0.0 < w < 1.0 for w in self.ramp) or list(self.ramp) != sorted(set(self.ramp)):
            bad("[rollout] ramp", f"must be rising shares within 0..1 (exclusive), got {list(self.ramp)}")
        for where, value in [
            ("[rollout] alpha", self.alpha),
            ("[rollout] acceptance_drop", self.acceptance_drop),
            ("[rollout] max_error_rate", self.max_error_rate),
            ("[rollout] tau", self.tau),
        ]:
            if not 0.0 < value < 1.0:
                bad(where, f"must be within 0..1 (exclusive), got {value}")
        if self.max_latency_ratio <= 1.0:
            bad("[rollout] max_latency_ratio", f"must be > 1, got {self.max_latency_ratio}")
        if self.decide_interval_s <= 0:
            bad("[rollout] decide_interval_s", f"must be > 0, got {self.decide_interval_s}")
        at_least(
            bad,
            1,
            ("[rollout] stage_min_requests", self.stage_min_requests),
            ("[rollout] min_requests", self.min_requests),
            ("[rollout] guard_min_requests", self.guard_min_requests),
            ("[rollout] watch_requests", self.watch_requests),
        )
        if self.max_requests < self.min_requests:
            bad("[rollout] max_requests", f"must be >= min_requests ({self.min_requests}), got {self.max_requests}")
