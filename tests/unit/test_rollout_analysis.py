"""The A/B analysis on constructed streams where the better variant is known: it wins; equal
variants: no false rollout beyond the stated error rate over many simulated runs; a worse candidate:
rolled back. And the guardrails."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from flywheel.policy import GatePolicy, PolicyError, RolloutPolicy
from streams.rollout.analysis import ArmStats, compare, counts_of, decide, degenerate, msprt, watch

POLICY = RolloutPolicy(max_requests=5000)


def arm(requests: int, acceptance: float, **kw) -> ArmStats:
    return ArmStats(requests=requests, accepted=round(requests * acceptance), **kw)


def simulate(p_inc: float, p_cand: float, policy: RolloutPolicy, rng: random.Random, step: int = 100):
    """One rollout: traffic in steps of `step` requests split by the current weight, until a decision."""
    inc, cand = [0, 0], [0, 0]
    stage, stage_start = 0, 0
    while True:
        weight = policy.ramp[stage]
        for _ in range(step):
            if rng.random() < weight:
                cand[0] += 1
                cand[1] += rng.random() < p_cand
            else:
                inc[0] += 1
                inc[1] += rng.random() < p_inc
        v = decide(stage, cand[0] - stage_start, ArmStats(inc[0], inc[1]), ArmStats(cand[0], cand[1]), policy)
        if v.action == "ramp":
            stage, stage_start = stage + 1, cand[0]
        elif v.action != "hold":
            return v.action, cand[0] + inc[0]


def test_msprt_is_one_without_evidence_and_grows_with_it():
    assert msprt(0.0, 0.01, 0.05) < 1.0
    assert msprt(0.1, 0.0001, 0.05) > msprt(0.05, 0.0001, 0.05) > 1.0
    # the same difference is stronger evidence with more data (smaller variance)
    assert msprt(0.05, 0.0001, 0.05) > msprt(0.05, 0.001, 0.05)
    assert msprt(-0.1, 0.0001, 0.05, theta0=-0.1) < 1.0  # no evidence against the null it is at


def test_counts_of_one_request():
    assert counts_of(["copied", "thumbs_up"], "SELECT 1;", 120) == {
        "requests": 1,
        "accepted": 1,
        "thumbs_up": 1,
        "latency_ms_sum": 120,
        "latency_n": 1,
    }
    assert counts_of([], "", None) == {"requests": 1, "empty": 1}
    assert counts_of(["regenerated", "abandoned"], "ok fine", -1) == {"requests": 1, "regenerated": 1, "abandoned": 1}
    assert degenerate("no no no no") and degenerate("   ") and not degenerate("no no no") and not degenerate("a b c d")


def test_arm_stats_round_trip_a_redis_hash():
    s = ArmStats.from_hash({b"requests": b"10", b"accepted": b"4", b"latency_ms_sum": b"1000", b"latency_n": b"5"})
    assert s.acceptance == 0.4 and s.mean_latency_ms == 200 and ArmStats.from_hash(s.to_dict()) == s


def test_a_clearly_better_candidate_wins_and_a_worse_one_is_rolled_back():
    better = decide(2, 0, arm(2000, 0.50), arm(2000, 0.58), POLICY)
    assert better.action == "promote" and better.reason.startswith("won:") and better.comparison.diff > 0
    worse = decide(0, 0, arm(2000, 0.50), arm(2000, 0.42), POLICY)
    assert worse.action == "rollback" and worse.reason.startswith("lost:")


def test_too_few_requests_decide_nothing_and_a_full_stage_ramps():
    assert decide(0, 50, arm(60, 0.2), arm(60, 0.9), POLICY).action == "hold"  # under min_requests
    ramp = decide(0, POLICY.stage_min_requests, arm(3000, 0.5), arm(200, 0.5), POLICY)
    assert ramp.action == "ramp" and ramp.reason == "stage_complete:0.05->0.25"
    assert decide(2, 10_000, arm(3000, 0.5), arm(3000, 0.5), POLICY).action == "hold"  # the last stage holds
    assert decide(2, 0, arm(5000, 0.5), arm(5000, 0.5), POLICY).action == "retire"  # max_requests: inconclusive


def test_guardrails_roll_back_on_errors_and_latency():
    errors = decide(0, 0, arm(500, 0.5), arm(100, 0.5, empty=10), POLICY)
    assert errors.action == "rollback" and errors.reason.startswith("guardrail:error_rate")
    slow = decide(
        0,
        0,
        arm(500, 0.5, latency_ms_sum=500 * 100, latency_n=500),
        arm(100, 0.5, latency_ms_sum=100 * 200, latency_n=100),
        POLICY,
    )
    assert slow.action == "rollback" and slow.reason.startswith("guardrail:latency:2.00x")


def test_after_a_promotion_a_drop_in_acceptance_rolls_back_and_a_held_level_ends_the_watch():
    dropped = watch(0.60, arm(800, 0.45), POLICY)
    assert dropped.action == "rollback" and dropped.reason.startswith("guardrail:acceptance_drop")
    assert watch(0.60, arm(800, 0.58), POLICY).action == "hold"  # within the bound: no evidence of a drop beyond it
    assert watch(0.60, arm(POLICY.watch_requests, 0.59), POLICY).action == "watched"
    assert watch(0.60, ArmStats(), POLICY).action == "hold"


def test_the_better_variant_wins_over_simulated_runs():
    rng = random.Random(1)
    outcomes = [simulate(0.50, 0.58, POLICY, rng)[0] for _ in range(100)]
    assert outcomes.count("promote") >= 90 and outcomes.count("rollback") == 0


def test_a_worse_candidate_is_rolled_back_over_simulated_runs_early_in_the_ramp():
    rng = random.Random(2)
    runs = [simulate(0.50, 0.40, POLICY, rng) for _ in range(100)]
    assert sum(a == "rollback" for a, _ in runs) >= 95 and not any(a == "promote" for a, _ in runs)


def test_equal_variants_are_falsely_rolled_out_at_most_at_the_stated_error_rate():
    rng = random.Random(3)
    n = 400
    outcomes = [simulate(0.5, 0.5, POLICY, rng)[0] for _ in range(n)]
    false_rollouts = outcomes.count("promote") / n
    false_decisions = (outcomes.count("promote") + outcomes.count("rollback")) / n
    slack = 2 * math.sqrt(POLICY.alpha * (1 - POLICY.alpha) / n)  # two standard errors of the estimate
    assert false_decisions <= POLICY.alpha + slack, outcomes
    assert false_rollouts <= POLICY.alpha / 2 + slack
    assert outcomes.count("retire") >= n * 0.85  # the rest end inconclusive at max_requests


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("ramp", (0.5, 0.25), r"\[rollout\] ramp"),
        ("ramp", (), r"\[rollout\] ramp"),
        ("ramp", (0.5, 1.0), r"\[rollout\] ramp"),
        ("alpha", 0.0, r"\[rollout\] alpha"),
        ("max_latency_ratio", 0.9, r"\[rollout\] max_latency_ratio"),
        ("max_requests", 10, r"\[rollout\] max_requests"),
        ("watch_requests", 0, r"\[rollout\] watch_requests"),
    ],
)
def test_policy_refuses_bad_rollout_keys(key, value, message):
    with pytest.raises(PolicyError, match=message):
        GatePolicy().with_version("t", rollout={key: value})


def test_compare_without_traffic_is_no_evidence():
    c = compare(ArmStats(), arm(100, 0.5), POLICY)
    assert not c.significant and c.diff == 0.0
    assert replace(POLICY, alpha=0.5).alpha == 0.5
