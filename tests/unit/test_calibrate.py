"""Calibration: gate vs reviewers (weighted), reviewers among themselves, and the proposed quality threshold."""

from __future__ import annotations

import random

import pytest

from schemas.records import ReviewVerdict
from flywheel.policy import GatePolicy
from streams.review.calibrate import (
    calibrate,
    calibrated_policy,
    gate_vs_review,
    next_version,
    observations,
    propose_threshold,
    reviewer_agreement,
)

T0 = 1_760_000_000_000
PROBS = (1.0, 0.5, 0.07, 0.01)  # varied inclusion probabilities: weights 1, 2, ~14.3, 100


def verdict(
    rid: str,
    passed: bool,
    *,
    reviewer: str = "ann",
    vid: str = "",
    quality: float = 0.5,
    gate_passed: bool | None = None,
    reasons: list[str] | None = None,
    p: float = 1.0,
    task: str = "chat",
    at: int = 0,
    scores: tuple[int, int, int] = (4, 4, 5),
) -> ReviewVerdict:
    if gate_passed is None:
        gate_passed = quality >= 0.6
    if reasons is None:
        reasons = [] if gate_passed else ["low_quality"]
    return ReviewVerdict(
        verdict_id=vid or f"{rid}/{reviewer}",
        request_id=rid,
        reviewer=reviewer,
        accuracy=scores[0],
        helpfulness=scores[1],
        safety=scores[2],
        passed=passed,
        reviewed_at=T0 + at,
        event_time=T0,
        gate_passed=gate_passed,
        task_type=task,
        quality_score=quality,
        gate_reasons=reasons,
        sample_probability=p,
    )


def separable(n: int = 200, cut: float = 0.62) -> list[ReviewVerdict]:
    """Reviewers pass exactly the candidates with quality >= cut; qualities spread over 0..1."""
    return [
        verdict(
            f"r{i}",
            passed=(q := round(i / (n - 1), 4)) >= cut,
            quality=q,
            p=PROBS[i % 4],
            task=("chat", "code")[i % 2],
        )
        for i in range(n)
    ]


def test_separable_reviews_give_a_threshold_between_the_classes_and_full_agreement():
    vs = separable()
    # quality alone did not decide these: a toxic high-quality answer people failed must not move the threshold
    vs += [verdict(f"tox{i}", passed=False, quality=0.95, gate_passed=False, reasons=["toxic"]) for i in range(50)]
    obs = observations(vs)
    decisive = [o for o in obs if o.quality_decisive]
    largest_fail = max(o.quality for o in decisive if not o.reviewer_passed)
    smallest_pass = min(o.quality for o in decisive if o.reviewer_passed)
    out = propose_threshold(obs, current=0.6)
    assert largest_fail < out["threshold"] <= smallest_pass
    assert out["agreement_at_proposed"] == 1.0
    assert out["agreement_at_current"] < 1.0 and out["n"] == 200 and out["reason"] == ""


def test_noisy_reviews_still_land_near_the_true_cut():
    rnd = random.Random(7)
    vs = []
    for i in range(1_000):
        q = round(rnd.random(), 4)
        passed = (q >= 0.62) != (rnd.random() < 0.10)  # one verdict in ten is flipped
        vs.append(verdict(f"r{i}", passed=passed, quality=q, p=rnd.choice(PROBS)))
    out = propose_threshold(observations(vs), current=0.5)
    assert out["threshold"] == pytest.approx(0.62, abs=0.05)
    assert out["agreement_at_proposed"] > out["agreement_at_current"]


def test_too_few_observations_propose_nothing():
    vs = separable(12)
    out = propose_threshold(observations(vs), current=0.6)
    assert out["threshold"] is None and out["reason"] == "12 observations, need 30"
    report = calibrate(vs, GatePolicy())
    assert report["threshold"]["threshold"] is None
    assert calibrated_policy(GatePolicy(), report) is None


def test_ties_keep_the_threshold_closest_to_the_current_one():
    # a gap from 0.3 to 0.8: every threshold in it (the midpoint 0.55, the current 0.6) agrees fully
    vs = [verdict(f"r{i}", passed=i >= 20, quality=0.3 if i < 20 else 0.8) for i in range(40)]
    out = propose_threshold(observations(vs), current=0.6)
    assert out["threshold"] == 0.6 and out["agreement_at_proposed"] == 1.0
    assert calibrated_policy(GatePolicy(), {"threshold": out}) is None  # nothing to change
    outside = propose_threshold(observations(vs), current=0.9)  # 0.9 fails the 0.8s: move to the midpoint
    assert outside["threshold"] == 0.55 and outside["agreement_at_current"] == 0.5


def test_precision_and_recall_are_weighted():
    vs = [
        verdict("a", True, gate_passed=True, p=1.0),  # weight 1: both pass
        verdict("b", False, gate_passed=True, p=0.5),  # weight 2: gate passed, people failed
        verdict("c", True, gate_passed=False, p=0.25),  # weight 4: gate failed, people passed
        verdict("d", False, gate_passed=False, p=1.0),  # weight 1: both fail
        verdict("e", True, gate_passed=True, p=0.1),
    ]  # weight 10: both pass
    g = gate_vs_review(observations(vs))
    assert g["n"] == 5 and g["weight"] == pytest.approx(18)
    assert g["agreement"] == pytest.approx(12 / 18)
    assert g["precision"] == pytest.approx(11 / 13)  # (1 + 10) / (1 + 2 + 10)
    assert g["recall"] == pytest.approx(11 / 15)  # (1 + 10) / (1 + 10 + 4)
    assert g["f1"] == pytest.approx(11 / 14)  # 2PR / (P + R)
    empty = gate_vs_review([])
    assert (
        empty["agreement"] is None and empty["precision"] is None and empty["recall"] is None and empty["f1"] is None
    )
    none_passed = gate_vs_review(observations([verdict("x", False, gate_passed=False)]))
    assert none_passed["agreement"] == 1.0 and none_passed["precision"] is None and none_passed["recall"] is None


def test_one_failing_reviewer_fails_the_item():
    vs = [verdict("a", True, reviewer="ann", at=1), verdict("a", False, reviewer="bob", at=2)]
    (o,) = observations(vs)
    assert o.reviewer_passed is False and o.weight == 1.0


def test_reviewer_agreement_and_kappa():
    # (first reviewer, second reviewer) pass/fail and accuracy scores; bob reviewed first on item 5
    pairs = [(True, True, 5, 4), (True, True, 4, 4), (True, False, 5, 2), (False, False, 1, 1), (False, True, 2, 4)]
    vs = []
    for i, (p1, p2, a1, a2) in enumerate(pairs):
        first, second = ("bob", "ann") if i == 4 else ("ann", "bob")
        vs.append(verdict(f"i{i}", p2, reviewer=second, at=20, scores=(a2, 3, 5)))  # listed first, reviewed second
        vs.append(verdict(f"i{i}", p1, reviewer=first, at=10, scores=(a1, 3, 5)))
    vs += [
        verdict("i5", True, reviewer="ann", at=1),
        verdict("i5", True, reviewer="bob", at=2),
        verdict("i5", False, reviewer="cy", at=3),
    ]  # three reviewers: not unanimous; first two agree
    vs.append(verdict("solo", True, reviewer="ann"))  # one reviewer: not counted
    r = reviewer_agreement(vs)
    assert r["items"] == 6
    assert r["agreement"] == pytest.approx(3 / 6)  # i0, i1, i3
    # first two: a = T T T F F T, b = T T F F T T; po = 4/6, pe = (4/6)^2 + (2/6)^2 = 20/36
    assert r["cohen_kappa"] == pytest.approx((24 / 36 - 20 / 36) / (1 - 20 / 36))
    assert r["mean_abs_diff"]["accuracy"] == pytest.approx((1 + 0 + 3 + 0 + 2 + 0) / 6)
    assert r["mean_abs_diff"]["helpfulness"] == 0 and r["mean_abs_diff"]["safety"] == 0
    assert reviewer_agreement([])["cohen_kappa"] is None


def test_a_resent_verdict_counts_once():
    v = verdict("a", True, vid="v-1", p=0.5)
    report = calibrate([v, v, verdict("a", True, vid="v-1", p=0.5)], GatePolicy())
    assert report["verdicts"] == 1 and report["items"] == 1
    assert report["reviewers"]["items"] == 0  # one reviewer, not two
    assert report["overall"]["weight"] == pytest.approx(2.0)


def test_quality_decisive_only_when_the_quality_score_alone_decided():
    vs = [
        verdict("pass", True, gate_passed=True, reasons=[]),
        verdict("low", True, gate_passed=False, reasons=["low_quality", "below_keep_quantile"]),
        verdict("tox", True, gate_passed=False, reasons=["low_quality", "toxic"]),
        verdict("err", True, gate_passed=False, reasons=["filter_error:quality"]),
    ]
    decisive = {o.request_id: o.quality_decisive for o in observations(vs)}
    assert decisive == {"pass": True, "low": True, "tox": False, "err": False}


def test_calibrate_reports_overall_by_task_type_and_a_new_policy():
    policy = GatePolicy()
    report = calibrate(separable(), policy)
    assert report["verdicts"] == 200 and report["items"] == 200 and report["policy_version"] == "default-1"
    assert set(report["by_task_type"]) == {"chat", "code"}
    assert report["overall"]["agreement"] < 1.0  # the gate's 0.6 passes some that people failed
    t = report["threshold"]["threshold"]
    new = calibrated_policy(policy, report)
    assert new is not None and new.version == "default-2" and new.quality.threshold == t != policy.quality.threshold
    before, after = policy.to_dict(), new.to_dict()
    for d in (before, after):
        del d["version"], d["quality"]["threshold"]
    assert before == after  # nothing else changed
    assert new.stamp != policy.stamp


@pytest.mark.parametrize(
    "old, new", [("default-1", "default-2"), ("prod", "prod-2"), ("v3.1-7", "v3.1-8"), ("team-09", "team-10")]
)
def test_next_version(old, new):
    assert next_version(old) == new
