"""The review sampler: about `share` of each task type, priorities first, audits, minimums, budget, determinism.

The draw is a hash of seed and request id, so every test here is deterministic; tolerances are set
at about four standard deviations of the binomial share, so they hold for any seed, not just this one.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from schemas.records import TrainingCandidate
from flywheel.policy import ReviewPolicy
from streams.review.items import SAMPLE_CLASSES
from streams.review.sampler import ReviewSampler, SampleDecision

T0 = 1_760_000_000_000


def cand(i: int | str, task: str = "chat", action: str = "accepted", version: str = "v1", **kw) -> TrainingCandidate:
    return TrainingCandidate(
        request_id=f"r-{i}",
        timestamp=kw.pop("timestamp", T0),
        user_id="u",
        session_id="s",
        prompt="p",
        response="r",
        user_action=action,
        task_type=task,
        model_version=version,
        **kw,
    )


def policy(**kw) -> ReviewPolicy:
    return dataclasses.replace(ReviewPolicy(), **kw)


def rate(decisions: list[SampleDecision]) -> float:
    return sum(d.sampled for d in decisions) / len(decisions)


def test_share_per_task_type_is_the_policy_share_without_priority_classes():
    s = ReviewSampler(ReviewPolicy())
    tasks = ("chat", "code", "summarise", "qa")
    by_task: dict[str, list[SampleDecision]] = {t: [] for t in tasks}
    for i in range(20_000):
        t = tasks[i % 4]
        by_task[t].append(s.decide(cand(i, task=t), True))
    for t, ds in by_task.items():
        # 5,000 per task type: the sd of a 7 % share is 0.0036, so +-0.015 is about 4 sd
        assert rate(ds) == pytest.approx(0.07, abs=0.015), t
        assert all(d.probability == pytest.approx(0.07, abs=1e-9) for d in ds)
        assert all(d.classes == ["random"] for d in ds)


def test_corrections_are_sampled_first_and_far_more_often_than_random_ones():
    s = ReviewSampler(ReviewPolicy())
    ds = [
        s.decide(
            cand(
                i,
                action="corrected" if i % 50 == 0 else "accepted",
                correction="better" if i % 50 == 0 else "",
                uncertainty=0.9 if i % 100 == 0 else None,
            ),
            True,
        )
        for i in range(20_000)
    ]
    corr = [d for i, d in enumerate(ds) if i % 50 == 0]
    rand = [d for i, d in enumerate(ds) if i % 50 != 0]
    assert rate(corr) > 0.9  # 2 % corrections fit in the budget: p = 1 once the fractions settle
    assert rate(rand) < 0.06  # the rest of the 7 % goes to random items
    assert rate(ds) == pytest.approx(0.07, abs=0.01)
    assert all(d.classes[0] == "correction" for d in corr)
    assert ds[100].classes == ["correction", "uncertainty"]  # every match, in priority order
    assert all(d.item.sampled_for == d.classes and d.item.priority == 0 for d in corr if d.sampled)
    # sft_correction labels count as corrections too
    assert s.decide(cand("lab", label="sft_correction"), True).classes[0] == "correction"


def test_uncertain_answers_are_a_priority():
    s = ReviewSampler(ReviewPolicy())
    ds = [s.decide(cand(i, uncertainty=0.9 if i % 25 == 0 else 0.1), True) for i in range(20_000)]
    unc = [d for i, d in enumerate(ds) if i % 25 == 0]
    rest = [d for i, d in enumerate(ds) if i % 25 != 0]
    assert all(d.classes == ["uncertainty"] for d in unc)
    assert all(d.classes == ["random"] for d in rest)  # 0.1 < uncertainty_threshold
    assert rate(unc) > 0.9 and rate(rest) < 0.04


def _two_versions(s: ReviewSampler, v2_accept: int) -> list[tuple[str, SampleDecision]]:
    """v1 on 3 of 4 requests, accepting 7 in 10; v2 on the rest, accepting v2_accept in 10."""
    out, seen = [], {"v1": 0, "v2": 0}
    for i in range(8_000):
        v = "v2" if i % 4 == 0 else "v1"
        j = seen[v]
        seen[v] += 1
        accepted = j % 10 < (7 if v == "v1" else v2_accept)
        out.append((v, s.decide(cand(i, action="accepted" if accepted else "regenerated", version=v), True)))
    return out


def test_a_version_whose_acceptance_changed_is_flagged_and_sampled_more():
    out = _two_versions(ReviewSampler(ReviewPolicy()), v2_accept=3)
    v1 = [d for v, d in out if v == "v1"]
    v2 = [d for v, d in out if v == "v2"]
    assert not any("changed" in d.classes for d in v1)  # v1 is the baseline (most traffic)
    assert not any("changed" in d.classes for d in v2[:29])  # fewer than changed_min_samples outcomes
    assert all("changed" in d.classes for d in v2[100:])
    assert rate(v2) > 3 * rate(v1)


def test_equal_acceptance_is_not_changed():
    out = _two_versions(ReviewSampler(ReviewPolicy()), v2_accept=7)
    assert not any("changed" in d.classes for _, d in out)


def test_an_explicit_baseline_model_is_used():
    out = _two_versions(ReviewSampler(policy(baseline_model="v2")), v2_accept=3)
    assert all("changed" in d.classes for v, d in out[1_000:] if v == "v1")
    assert not any("changed" in d.classes for v, d in out if v == "v2")


def _rare_stream(s: ReviewSampler, n: int = 10_000) -> list[tuple[str, SampleDecision]]:
    out = []
    for i in range(n):
        t = "rare" if i % 100 == 0 else "chat"  # 1 % of traffic: below rare_share
        out.append((t, s.decide(cand(i, task=t), True)))
    return out


def test_a_rare_task_type_gets_its_minimum_per_window():
    out = _rare_stream(ReviewSampler(ReviewPolicy()))
    rare = [d for t, d in out if t == "rare"]
    assert not rare[0].classes.count("rare_task")  # no traffic yet to judge a share on
    assert all("rare_task" in d.classes for d in rare[5:])
    assert sum(d.sampled for d in rare) >= 20  # at 7 % alone, 100 would give about 7
    forced = [d for d in rare if d.probability == 1.0]
    assert 10 <= len(forced) <= 20 and all(d.sampled for d in forced)  # the draw took the others anyway
    assert not any("rare_task" in d.classes for t, d in out if t == "chat")


def test_the_rare_minimum_counts_what_other_workers_sampled():
    s = ReviewSampler(ReviewPolicy())
    s.sync_window(s.window_of(T0), {"rare": 20})
    rare = [d for t, d in _rare_stream(s) if t == "rare"]
    assert not any(d.probability == 1.0 for d in rare)
    assert sum(d.sampled for d in rare) < 20


def test_the_budget_stops_sampling():
    s = ReviewSampler(policy(budget_per_window=10))
    ds = [s.decide(cand(i), True) for i in range(5_000)]
    assert sum(d.sampled for d in ds) == 10
    assert sum(d.skipped == "budget" for d in ds) > 100
    # a full budget reported by the other workers stops this one at once
    s2 = ReviewSampler(policy(budget_per_window=10))
    s2.sync_window(s2.window_of(T0), {"chat": 6, "code": 4})
    assert not any(s2.decide(cand(i), True).sampled for i in range(2_000))
    # the next window has its own budget
    later = T0 + 7 * 86_400_000
    assert any(s2.decide(cand(f"n{i}", timestamp=later), True).sampled for i in range(2_000))


def test_audit_never_shows_excluded_stages_and_samples_quality_rejects_at_audit_share():
    s = ReviewSampler(ReviewPolicy())
    toxic = [s.decide(cand(f"t{i}", reasons=["toxic"]), False) for i in range(5_000)]
    assert not any(d.sampled for d in toxic)
    assert all(d.skipped == "excluded" and d.probability == 0.0 for d in toxic)
    assert not s.decide(cand("pii", reasons=["low_quality", "pii_detected"]), False).sampled
    assert s.decide(cand("fe", reasons=["filter_error:toxicity"]), False).skipped == "excluded"
    low = [s.decide(cand(f"q{i}", reasons=["low_quality"]), False) for i in range(20_000)]
    assert rate(low) == pytest.approx(0.01, abs=0.003)  # sd 0.0007 over 20,000
    assert all(d.probability == 0.01 and d.classes[0] == "gate_audit" for d in low)
    assert all(d.item.gate_passed is False for d in low if d.sampled)
    # a stage not excluded by the policy is audited, even as a filter error
    assert s.decide(cand("fe2", reasons=["filter_error:grounding"]), False).skipped == ""


def test_decisions_are_deterministic_and_survive_a_snapshot():
    def stream():
        for i in range(6_000):
            passed = i % 7 != 0
            yield (
                cand(
                    i,
                    task="rare" if i % 50 == 0 else "chat" if i % 3 else "code",
                    action=("accepted", "regenerated", "corrected")[i % 3],
                    correction="x",
                    version="v2" if i % 5 == 0 else "v1",
                    uncertainty=(i % 10) / 10,
                    reasons=[] if passed else ["low_quality"],
                ),
                passed,
                f"candidates/0/{i}",
            )

    def key(d: SampleDecision):
        return d.sampled, d.classes, d.probability, d.skipped, d.item.to_json() if d.item else None

    batch = list(stream())
    a = [key(d) for d in ReviewSampler(ReviewPolicy()).decide_batch(batch)]
    b = [key(d) for d in ReviewSampler(ReviewPolicy()).decide_batch(batch)]
    assert a == b and sum(x[0] for x in a) > 100
    first = ReviewSampler(ReviewPolicy())
    first.decide_batch(batch[:3_000])
    resumed = ReviewSampler(ReviewPolicy())
    resumed.restore(first.to_json().encode())
    assert [key(d) for d in resumed.decide_batch(batch[3_000:])] == a[3_000:]
    other_seed = [key(d) for d in ReviewSampler(ReviewPolicy(), seed="other").decide_batch(batch)]
    assert other_seed != a


def test_overlap_share():
    s = ReviewSampler(policy(audit_share=1.0))
    ds = [s.decide(cand(i, reasons=["low_quality"]), False) for i in range(5_000)]
    items = [d.item for d in ds]
    assert all(items)
    twice = sum(i.reviews_needed == 2 for i in items) / len(items)
    assert twice == pytest.approx(0.10, abs=0.02)  # sd 0.0042 over 5,000
    assert {i.reviews_needed for i in items} == {1, 2}


def test_a_disabled_policy_samples_nothing():
    s = ReviewSampler(policy(enabled=False))
    ds = [s.decide(cand(i, action="corrected"), True) for i in range(500)]
    assert not any(d.sampled for d in ds)
    assert all(d.skipped == "disabled" and d.probability == 0.0 and d.item is None for d in ds)


def test_the_item_records_the_probability_the_draw_used():
    s = ReviewSampler(policy(audit_share=1.0))
    first = s.decide(cand("first"), True)
    assert first.probability == pytest.approx(0.07)
    rejected = s.decide(cand("rej", reasons=["too_short"]), False, source="candidates/3/42")
    assert rejected.sampled and rejected.item.probability == rejected.probability == 1.0
    item = rejected.item
    assert item.item_id == "r-rej" and item.source == "candidates/3/42" and item.window == s.window_of(T0)
    assert item.candidate["request_id"] == "r-rej" and item.sampled_for == ["gate_audit"]
    ds = [
        s.decide(cand(i, action="corrected" if i % 9 == 0 else "copied", correction="x"), True) for i in range(3_000)
    ]
    sampled = [d for d in ds if d.sampled]
    assert sampled and all(d.item.probability == d.probability for d in sampled)
    assert len({round(d.probability, 6) for d in sampled}) > 1  # corrections and random items differ
    assert all(0.0 < d.probability <= 1.0 for d in ds)


def test_classes_follow_the_shared_order_and_memory_is_bounded():
    s = ReviewSampler(ReviewPolicy(), max_tracked=5)
    for i in range(2_000):
        d = s.decide(cand(i, task=f"t{i % 20}", version=f"m{i % 30}"), True)
        assert d.classes == sorted(d.classes, key=SAMPLE_CLASSES.index)
    saved = json.loads(s.to_json())
    assert len(saved["tasks"]) <= 6 and "other" in saved["tasks"]
    assert all(len(t["versions"]) <= 6 for t in saved["tasks"].values())


def test_window_of_uses_the_policy_window():
    s = ReviewSampler(policy(), window_days=1)
    assert s.window_of(T0) == T0 // 86_400_000
    assert s.window_of(T0 + 86_400_000) == s.window_of(T0) + 1


def test_a_long_tail_never_pushes_the_review_share_past_ten_percent():
    """Forty rare task types each want their minimum; the window's share still stays under the seed's 10 %."""
    s = ReviewSampler(ReviewPolicy())
    decisions = []
    for i in range(6_000):
        task = f"tail-{i % 40}" if i % 3 == 0 else "chat"  # a third of traffic over 40 rare types
        decisions.append(s.decide(cand(i, task=task), True))
    share = rate(decisions)
    assert 0.07 <= share <= 0.10, share
    assert any(d.probability == 1.0 for d in decisions)  # the minimum still acts, within the ceiling
