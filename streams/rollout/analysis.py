"""The A/B analysis: per-version counts, an always-valid sequential test, and what to do next.

Plain functions of counts and the policy. `compare` runs a mixture sequential probability ratio
test (mSPRT; `msprt`) on the difference in acceptance (accepted or copied, per request) between
candidate and incumbent, with the user as the unit (cluster-robust variance from `ArmStats`' running
sums) and the ramp stages combined by inverse variance (`combined`); the null is rejected once
Lambda >= 1 / alpha, and Lambda may be read after every batch. `decide` turns it and the guardrails
into the next step (ramp, promote, rollback, retire); `watch` judges a promoted model.

Design, formulas and measurements: docs/concepts/rollout.md#design-notes
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

from flywheel.policy import RolloutPolicy

ACCEPTING = ("accepted", "copied")  # what counts as the user taking the answer


@dataclass(frozen=True)
class ArmStats:
    """What users did with one model version's responses."""

    requests: int = 0
    accepted: int = 0  # requests whose answer was accepted or copied
    corrected: int = 0
    regenerated: int = 0
    abandoned: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    empty: int = 0  # empty or degenerate responses (the error guardrail)
    latency_ms_sum: int = 0
    latency_n: int = 0
    users: int = 0  # distinct users with a request in this arm
    sum_n2: int = 0  # sum over users of (requests)^2
    sum_a2: int = 0  # sum over users of (acceptances)^2
    sum_an: int = 0  # sum over users of requests x acceptances

    @classmethod
    def from_hash(cls, raw: Mapping) -> "ArmStats":
        """From a Redis hash (bytes or str keys and values)."""
        plain = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
        return cls(**{f.name: plain.get(f.name, 0) for f in fields(cls)})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.requests if self.requests else 0.0

    def variance(self) -> float:
        """Var of `acceptance`, the user as the unit (docs/concepts/rollout.md#design-notes); requests are
        taken as independent only for counts kept without users (older rollouts)."""
        n, p = self.requests, self.acceptance
        if not n:
            return 0.0
        binomial = _variance(p, n)
        if self.users < 2:
            return binomial
        squares = self.sum_a2 - 2 * p * self.sum_an + p * p * self.sum_n2
        clustered = self.users / (self.users - 1) * max(squares, 0.0) / (n * n)
        return max(clustered, binomial)

    def __add__(self, other: "ArmStats") -> "ArmStats":
        return ArmStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def error_rate(self) -> float:
        return self.empty / self.requests if self.requests else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_sum / self.latency_n if self.latency_n else 0.0

    @property
    def feedback_rate(self) -> float:
        """Explicit feedback (thumbs) per request: the user-satisfaction monitor's sparsity signal."""
        return (self.thumbs_up + self.thumbs_down) / self.requests if self.requests else 0.0


# One arm's per-user running sums, kept exact under concurrent workers: per (arm, user) the requests
# and acceptances, and the arm's users, sum n^2, sum a^2, sum a n, all in one atomic step.
# KEYS[1]: the arm's hash, KEYS[2]: its users' hash; ARGV: user, requests, acceptances, user, ...
USER_SUMS_LUA = """
for i = 1, #ARGV, 3 do
  local user, dn, da = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local n0 = tonumber(redis.call('HGET', KEYS[2], 'n:' .. user) or '0')
  local a0 = tonumber(redis.call('HGET', KEYS[2], 'a:' .. user) or '0')
  local n1, a1 = n0 + dn, a0 + da
  redis.call('HSET', KEYS[2], 'n:' .. user, n1, 'a:' .. user, a1)
  if n0 == 0 then redis.call('HINCRBY', KEYS[1], 'users', 1) end
  redis.call('HINCRBY', KEYS[1], 'sum_n2', n1 * n1 - n0 * n0)
  redis.call('HINCRBY', KEYS[1], 'sum_a2', a1 * a1 - a0 * a0)
  redis.call('HINCRBY', KEYS[1], 'sum_an', a1 * n1 - a0 * n0)
end
return 1
"""


def counts_of(actions, response: str, latency_ms: int | None) -> dict[str, int]:
    """One request's increments: the fields of `ArmStats` it adds to."""
    acts = set(actions)
    out = {"requests": 1}
    if acts & set(ACCEPTING):
        out["accepted"] = 1
    for name in ("corrected", "regenerated", "abandoned", "thumbs_up", "thumbs_down"):
        if name in acts:
            out[name] = 1
    if degenerate(response):
        out["empty"] = 1
    if latency_ms is not None and latency_ms >= 0:
        out["latency_ms_sum"] = int(latency_ms)
        out["latency_n"] = 1
    return out


def degenerate(response: str) -> bool:
    """Empty, whitespace, or one token repeated: a response no user could use."""
    words = (response or "").split()
    return not words or (len(words) >= 4 and len(set(words)) == 1)


def _variance(p: float, n: int) -> float:
    p = min(max(p, 0.5 / (n + 1)), 1 - 0.5 / (n + 1))  # never zero: a run of all-accept is not certainty
    return p * (1 - p) / n


def msprt(theta: float, variance: float, tau: float, theta0: float = 0.0) -> float:
    """The mixture likelihood ratio Lambda for H0: theta = theta0 (docs/concepts/rollout.md#design-notes)."""
    if variance <= 0:
        return 0.0
    t2 = tau * tau
    exponent = t2 * (theta - theta0) ** 2 / (2 * variance * (variance + t2))
    return math.sqrt(variance / (variance + t2)) * math.exp(min(exponent, 700.0))


@dataclass(frozen=True)
class Comparison:
    diff: float  # candidate acceptance minus incumbent acceptance
    likelihood_ratio: float  # Lambda for no difference
    significant: bool  # Lambda >= 1 / alpha

    def metrics(self) -> dict[str, float]:
        return {"acceptance_diff": self.diff, "likelihood_ratio": min(self.likelihood_ratio, 1e12)}


def combined(pairs: Sequence[tuple[ArmStats, ArmStats]]) -> tuple[float, float]:
    """(difference, variance) of candidate minus incumbent acceptance over ramp stages: each
    stage's difference, weighted by the inverse of its variance. Stages without both arms say nothing."""
    weight = total = 0.0
    for inc, cand in pairs:
        if inc.requests and cand.requests:
            v = inc.variance() + cand.variance()
            weight += 1.0 / v
            total += (cand.acceptance - inc.acceptance) / v
    if weight <= 0:
        return 0.0, 0.0
    return total / weight, 1.0 / weight


def compare(
    incumbent: ArmStats | Sequence[tuple[ArmStats, ArmStats]],
    candidate: ArmStats | None = None,
    policy: RolloutPolicy | None = None,
) -> Comparison:
    """The test of no difference: over one (incumbent, candidate) pair, or over a list of ramp
    stages' pairs (`compare(stages, policy=policy)`)."""
    pairs = [(incumbent, candidate)] if candidate is not None else list(incumbent)
    diff, v = combined(pairs)
    if v <= 0:
        return Comparison(0.0, 0.0, False)
    lam = msprt(diff, v, policy.tau)
    return Comparison(diff, lam, lam >= 1.0 / policy.alpha)


@dataclass(frozen=True)
class Verdict:
    action: str  # hold | ramp | promote | rollback | retire | watched
    reason: str
    comparison: Comparison | None = None


def decide(
    stage: int,
    stage_requests: int,
    incumbent: ArmStats,
    candidate: ArmStats,
    policy: RolloutPolicy,
    stages: Sequence[tuple[ArmStats, ArmStats]] | None = None,
) -> Verdict:
    """During the A/B test. `stage` indexes `policy.ramp`; `stage_requests` are the candidate's
    requests since that stage began; `incumbent` and `candidate` are the arms over the whole test
    (guardrails, enough traffic), `stages` the arms per ramp stage (the test; default: one stage)."""
    if candidate.requests >= policy.guard_min_requests:
        if candidate.error_rate > policy.max_error_rate:
            return Verdict("rollback", f"guardrail:error_rate:{candidate.error_rate:.3f}>{policy.max_error_rate}")
        if (
            incumbent.mean_latency_ms
            and candidate.mean_latency_ms > policy.max_latency_ratio * incumbent.mean_latency_ms
        ):
            ratio = candidate.mean_latency_ms / incumbent.mean_latency_ms
            return Verdict("rollback", f"guardrail:latency:{ratio:.2f}x>{policy.max_latency_ratio}x")
    c = compare(stages if stages else [(incumbent, candidate)], policy=policy)
    enough = min(incumbent.requests, candidate.requests) >= policy.min_requests
    if enough and c.significant:
        if c.diff > 0:
            return Verdict("promote", f"won:acceptance{c.diff:+.4f}", c)
        return Verdict("rollback", f"lost:acceptance{c.diff:+.4f}", c)
    if min(incumbent.requests, candidate.requests) >= policy.max_requests:
        return Verdict("retire", f"inconclusive:acceptance{c.diff:+.4f}", c)
    if stage + 1 < len(policy.ramp) and stage_requests >= policy.stage_min_requests:
        return Verdict("ramp", f"stage_complete:{policy.ramp[stage]}->{policy.ramp[stage + 1]}", c)
    return Verdict("hold", "collecting", c)


def watch(baseline: float, after: ArmStats, policy: RolloutPolicy, baseline_variance: float = 0.0) -> Verdict:
    """After a promotion, with no control arm left: roll back as soon as acceptance is shown to have
    fallen below the incumbent's (measured in the test) by more than `acceptance_drop` (the seed's
    negative flywheel), the same mSPRT against the baseline, with the uncertainty of both sides: the
    baseline is itself an estimate (`baseline_variance`, the incumbent arm's). Watching ends after
    `watch_requests` requests of the new production model."""
    if not after.requests:
        return Verdict("hold", "watching")
    theta = after.acceptance - baseline
    lam = msprt(theta, after.variance() + baseline_variance, policy.tau, -policy.acceptance_drop)
    c = Comparison(theta, lam, lam >= 1.0 / policy.alpha)
    if theta < -policy.acceptance_drop and c.significant and after.requests >= policy.guard_min_requests:
        return Verdict("rollback", f"guardrail:acceptance_drop:{theta:+.4f}<-{policy.acceptance_drop}", c)
    if after.error_rate > policy.max_error_rate and after.requests >= policy.guard_min_requests:
        return Verdict("rollback", f"guardrail:error_rate:{after.error_rate:.3f}>{policy.max_error_rate}", c)
    if after.requests >= policy.watch_requests:
        return Verdict("watched", f"held:acceptance{theta:+.4f}", c)
    return Verdict("hold", "watching", c)
