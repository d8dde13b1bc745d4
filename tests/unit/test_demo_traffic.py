"""The demo's simulated app and users (pure): repeatable by seed, long-tailed task mix, toxic and
personal-data traffic at their rates, no golden prompt ever asked, and users who react only to
whether the answer they got is right."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from flywheel.demo.traffic import DemoSpec, is_right, reaction, requests_for_day
from trainer import synthetic
from trainer.contamination import ContaminationIndex

DAY = 86_400_000


def day(spec: DemoSpec, seed: int = 1):
    return requests_for_day(spec, 0, 10 * DAY, random.Random(seed))


def test_a_day_is_repeatable_ordered_and_inside_its_traffic_hours():
    spec = DemoSpec(requests_per_day=500)
    a, b = day(spec), day(spec)
    assert [(r.request_id, r.prompt, r.event_time) for r in a] == [(r.request_id, r.prompt, r.event_time) for r in b]
    times = [r.event_time for r in a]
    assert times == sorted(times) and 10 * DAY <= times[0] and times[-1] < 10 * DAY + spec.traffic_hours * 3_600_000
    assert len({r.request_id for r in a}) == 500


def test_task_mix_long_tail_and_gate_traffic():
    spec = DemoSpec(requests_per_day=5000)
    reqs = day(spec)
    mix = Counter(r.task_type for r in reqs)
    assert mix["qa"] > mix["sql"] > mix["support"] > mix["currency"] > 0.08 * len(reqs)
    assert 0.005 < sum(r.toxic for r in reqs) / len(reqs) < 0.02
    assert 0.015 < sum(r.personal for r in reqs) / len(reqs) < 0.05
    for r in reqs:
        task = synthetic.task(r.task_type)
        assert r.expected in {task.answer(s) for s in task.subjects()}


def test_no_demo_prompt_is_a_golden_prompt_or_near_one():
    golden = synthetic.golden(tuple(DemoSpec().task_mix))
    index = ContaminationIndex(golden, 0.8)
    hits = [r.prompt for r in day(DemoSpec(requests_per_day=2000)) if index.check(r.prompt)]
    assert not hits, hits[:3]


def test_users_react_to_rightness_only():
    rng = random.Random(3)
    right = Counter(k for _ in range(2000) for _, k in reaction(rng, True))
    wrong = Counter(k for _ in range(2000) for _, k in reaction(rng, False))
    assert set(right) <= {"accepted", "copied", "thumbs_up"} and right["accepted"] > right["copied"] > 0
    assert (
        set(wrong) <= {"corrected", "regenerated", "abandoned", "thumbs_down"}
        and wrong["corrected"] > wrong["abandoned"]
    )
    assert all(d < 30 * 60_000 for _ in range(500) for d, _ in reaction(rng, False))  # inside the settle window
    assert is_right("sql", "SELECT COUNT(*)   FROM users", "SELECT COUNT(*) FROM users;")
    assert is_right("qa", "Paris", "Paris") and not is_right("qa", "Rome", "Paris")
    assert is_right(
        "support",
        "Sure. Hold the router power button for ten seconds, then plug it in again.",
        "Hold the router power button for ten seconds, then plug it in again.",
    )


def test_bad_specs_are_refused():
    for kw, msg in [
        ({"weeks": 0}, "weeks"),
        ({"requests_per_day": 5}, "requests per day"),
        ({"task_mix": {"poetry": 1.0}}, "unknown task types"),
    ]:
        with pytest.raises(ValueError, match=msg):
            DemoSpec(**kw).check()


def test_users_are_not_oracles_and_each_has_habits_of_their_own():
    from flywheel.demo.traffic import UserTraits, correction

    spec = DemoSpec()
    users = [UserTraits.draw(spec, f"user-{i:04d}") for i in range(400)]
    assert UserTraits.draw(spec, "user-0001") == users[1]  # the same user, the same habits
    for name, mean in (
        ("idle", spec.idle_rate),
        ("gullible", spec.wrong_accept_rate),
        ("sloppy", spec.bad_correction_rate),
        ("feedback", spec.feedback_rate),
    ):
        values = [getattr(u, name) for u in users]
        assert abs(sum(values) / len(values) - mean) < 0.03 and max(values) - min(values) > 0.2, name
    rng = random.Random(4)
    gullible, careful = UserTraits(gullible=0.9), UserTraits(gullible=0.0)
    took = lambda u: sum(any(k in ("accepted", "copied") for _, k in reaction(rng, False, u)) for _ in range(2000))  # noqa: E731
    assert took(gullible) > 1400 and took(careful) == 0  # wrong answers accepted: noise in the labels
    assert sum(reaction(rng, True, UserTraits(idle=0.5)) == [] for _ in range(2000)) > 900
    q = day(spec)[0]
    typed = Counter(
        "right" if c == q.expected else "partial" if q.expected.startswith(c) else "wrong"
        for c in (correction(rng, q, UserTraits(sloppy=0.5)) for _ in range(2000))
    )
    assert typed["right"] > 900 and typed["wrong"] > 350 and typed["partial"] > 350
