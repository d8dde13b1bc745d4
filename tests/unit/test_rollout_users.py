"""The A/B test's error rate under the correlation real traffic has: users, not requests, are
randomised, and each user has an acceptance rate of their own and many requests.

Simulated: 400 users whose acceptance rates spread from near 0 to near 1 (Beta(0.6, 0.9), mean 0.4),
about 40 requests each (Poisson), half the users in each arm, requests in a random order, and no
difference between the arms. The sequential test is looked at every 200 requests, as the
controller does, through a ramp of two stages (a 25 % then a 50 % share, with acceptance drifting
down over time for everyone). Counted: runs in which it declared a difference. Treating requests as
independent (the analysis before users were the unit) does that far more often than alpha; the
user-level, stage-stratified analysis stays at or below it."""

from __future__ import annotations

import math

import numpy as np

from flywheel.policy import RolloutPolicy
from streams.rollout.analysis import ArmStats, compare

POLICY = RolloutPolicy()
RUNS = 300
LOOK_EVERY = 200


def arm(users: np.ndarray, accepted: np.ndarray, members: np.ndarray, with_users: bool) -> ArmStats:
    """An arm's counts from per-user request and acceptance counts (the users in `members`)."""
    n, a = users[members], accepted[members]
    seen = n > 0
    base = dict(requests=int(n.sum()), accepted=int(a.sum()))
    if not with_users:  # the counts the controller kept before users were the unit
        return ArmStats(**base)
    n, a = n[seen], a[seen]
    return ArmStats(
        **base, users=int(seen.sum()), sum_n2=int((n * n).sum()), sum_a2=int((a * a).sum()), sum_an=int((a * n).sum())
    )


def one_run(rng: np.random.Generator) -> tuple[bool, bool]:
    """(the request-level analysis decided, the user-level one decided) for one A/A test."""
    g = 400
    rate = rng.beta(0.6, 0.9, g)
    in_candidate = rng.random(g) < 0.5
    per_user = rng.poisson(40, g)
    order = rng.permutation(np.repeat(np.arange(g), per_user))
    drift = np.linspace(0.0, -0.15, len(order))  # acceptance falls over the test for everyone
    accepted = rng.random(len(order)) < np.clip(rate[order] + drift, 0.0, 1.0)
    # two ramp stages: the candidate serves a quarter of its users first, half after the midpoint
    half = len(order) // 2
    early = rng.random(g) < 0.5  # the candidate's users in stage 0 (a 25 % share overall)
    serves = np.where(np.arange(len(order)) < half, in_candidate[order] & early[order], in_candidate[order])
    incumbent_users = np.arange(g)  # a user not served the candidate in stage 0 counts for the incumbent there
    decided = [False, False]
    for m in range(LOOK_EVERY, len(order) + 1, LOOK_EVERY):
        stages = []
        for lo, hi in ((0, min(m, half)), (half, m)):
            if hi <= lo:
                continue
            u, acc, cand = order[lo:hi], accepted[lo:hi], serves[lo:hi]
            counts = [np.bincount(u[sel], minlength=g) for sel in (~cand, cand)]
            accs = [np.bincount(u[sel], weights=acc[sel], minlength=g).astype(np.int64) for sel in (~cand, cand)]
            stages.append((counts, accs))
        for k, with_users in enumerate((False, True)):
            if decided[k]:
                continue
            if with_users:
                pairs = [
                    (arm(c[0], a[0], incumbent_users, True), arm(c[1], a[1], incumbent_users, True)) for c, a in stages
                ]
            else:  # pooled over the stages, requests independent: the analysis before this one
                c0 = sum(c[0] for c, _ in stages)
                c1 = sum(c[1] for c, _ in stages)
                a0 = sum(a[0] for _, a in stages)
                a1 = sum(a[1] for _, a in stages)
                pairs = [(arm(c0, a0, incumbent_users, False), arm(c1, a1, incumbent_users, False))]
            inc_n = sum(p[0].requests for p in pairs)
            cand_n = sum(p[1].requests for p in pairs)
            if min(inc_n, cand_n) >= POLICY.min_requests and compare(pairs, policy=POLICY).significant:
                decided[k] = True
    return decided[0], decided[1]


def test_users_as_the_unit_keep_the_false_decision_rate_at_alpha_where_requests_do_not():
    rng = np.random.default_rng(23)
    runs = [one_run(rng) for _ in range(RUNS)]
    before = sum(r[0] for r in runs) / RUNS
    now = sum(r[1] for r in runs) / RUNS
    slack = 2 * math.sqrt(POLICY.alpha * (1 - POLICY.alpha) / RUNS)  # two standard errors at alpha
    print(
        f"false decisions over {RUNS} A/A runs: requests as the unit {before:.3f}, users as the unit {now:.3f} "
        f"(alpha {POLICY.alpha})"
    )
    assert before > POLICY.alpha + 2 * slack, before  # the old analysis fails under real correlation ...
    assert now <= POLICY.alpha, now  # ... the new one holds its stated error rate


def test_the_user_level_variance_matches_the_spread_of_many_draws():
    """The cluster-robust variance of an arm's acceptance agrees with the variance of acceptance
    across repeated draws of the same kind of users (within 25 %)."""
    rng = np.random.default_rng(5)
    estimates, variances = [], []
    for _ in range(400):
        g = 200
        rate = rng.beta(0.6, 0.9, g)
        n = rng.poisson(30, g)
        a = rng.binomial(n, rate)
        s = arm(n, a, np.arange(g), True)
        estimates.append(s.acceptance)
        variances.append(s.variance())
    empirical = float(np.var(estimates))
    assert abs(float(np.mean(variances)) / empirical - 1) < 0.25
    # and the request-level variance is far too small for such users
    assert ArmStats(requests=int(n.sum()), accepted=int(a.sum())).variance() < empirical / 5
