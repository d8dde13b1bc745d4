"""The review page's pure parts, without Redis or a broker: form validation, escaping, the pages it
renders, and the verdict it builds from a lease. The app itself (sign-in, CSRF, lost leases, health,
metrics, the relay) is tested on a real Redis and a real broker in
tests/integration/test_review_app.py."""

from __future__ import annotations

import re

import pytest

from schemas.records import ReviewVerdict
from streams.review.items import ReviewItem
from streams.review.queue import Lease, QueueStats
from streams.review.web import (
    FormError,
    VerdictForm,
    build_verdict,
    esc,
    parse_verdict_form,
    render_empty,
    render_item,
    render_login,
)

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
T0 = 1_767_225_600_000


def item(prompt="What is 2+2?", probability=0.5, **candidate) -> ReviewItem:
    c = {
        "request_id": "req-1",
        "timestamp": T0,
        "prompt": prompt,
        "response": "4",
        "task_type": "math",
        "model_version": "m-1",
        "quality_score": 0.9,
        "scores": {"quality": 0.9},
        "reasons": ["ok_reason"],
        "policy_version": "p-3",
        "correction": "",
        "retrieved_context": None,
    }
    c.update(candidate)
    return ReviewItem(
        "req-1",
        c,
        gate_passed=False,
        sampled_for=["gate_audit", "random"],
        probability=probability,
        window=3,
        reviews_needed=2,
        source="topic/1/42",
    )


def lease(it=None, lease_id="L1", round_=1, started_ms=T0) -> Lease:
    return Lease(it or item(), lease_id, T0 + 600_000, round_, started_ms)


STATS = QueueStats(ready=4, leased=1, oldest_age_s=3.0, outbox=0, counts={})


# -- pure functions ---------------------------------------------------------------------------------------


def test_parse_verdict_form_accepts_1_to_5_and_pass_or_fail():
    f = parse_verdict_form(
        {"accuracy": "1", "helpfulness": "5", "safety": " 3 ", "passed": "0", "item_id": "req-1", "lease_id": "L1"}
    )
    assert f == VerdictForm("req-1", "L1", {"accuracy": 1, "helpfulness": 5, "safety": 3}, False)
    assert (
        parse_verdict_form(
            {"accuracy": "2", "helpfulness": "2", "safety": "2", "passed": "1", "item_id": "i", "lease_id": "l"}
        ).passed
        is True
    )


@pytest.mark.parametrize(
    "change, words",
    [
        ({"accuracy": ""}, "accuracy is missing"),
        ({"helpfulness": "0"}, "helpfulness must be a whole number from 1 to 5"),
        ({"safety": "6"}, "safety must be"),
        ({"safety": "²"}, "safety must be"),
        ({"accuracy": "3.0"}, "accuracy must be"),
        ({"accuracy": "-1"}, "accuracy must be"),
        ({"passed": "maybe"}, "choose pass or fail"),
        ({"lease_id": ""}, "reload the page"),
        ({"item_id": "x" * 600}, "reload the page"),
    ],
)
def test_parse_verdict_form_refuses_with_one_line(change, words):
    form = {
        "accuracy": "3",
        "helpfulness": "3",
        "safety": "3",
        "passed": "1",
        "item_id": "req-1",
        "lease_id": "L1",
        **change,
    }
    with pytest.raises(FormError) as err:
        parse_verdict_form(form)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_every_value_on_the_item_page_is_escaped():
    it = item(
        prompt=XSS,
        response=XSS,
        correction=XSS,
        task_type=XSS,
        model_version=XSS,
        retrieved_context=[XSS, "plain"],
        scores={XSS: 0.5},
        reasons=[XSS],
        policy_version=XSS,
        user_action=XSS,
    )
    it.sampled_for = ["random", XSS]
    it.item_id = XSS
    html = render_item(lease(it, lease_id='"><script>'), STATS, 7, "rev<iewer>", 'cs"rf', "NONCE123")
    assert "window.__xss" in html  # shown ...
    assert "<img" not in html and 'onerror="' not in html  # ... never as markup
    assert len(re.findall(r"<script", html)) == 1 and '<script nonce="NONCE123">' in html
    assert esc(XSS) in html and html.count(esc(XSS)) >= 10
    assert 'value="cs&quot;rf"' in html and 'value="&quot;&gt;&lt;script&gt;"' in html
    assert "rev&lt;iewer&gt;" in html


def test_item_page_shows_what_a_reviewer_needs():
    it = item(correction="It is four.", retrieved_context=["passage one", "passage two"])
    html = render_item(lease(it, round_=2), STATS, 7, "alice", "tok", "n")
    for text in (
        "What is 2+2?",
        "It is four.",
        "passage one",
        "passage two",
        "quality",
        "0.9",
        "ok_reason",
        "rejected",
        "gate_audit, random",
        "probability 0.5",
        "math",
        "m-1",
        'id="queue-depth">5<',
        'id="own-count">7<',
        'id="round">2<',
        "second reviewer",
        'name="csrf" value="tok"',
        'name="lease_id" value="L1"',
        'name="item_id" value="req-1"',
        'action="/verdict"',
        'action="/skip"',
        'action="/logout"',
    ):
        assert text in html, text
    for name in ("accuracy", "helpfulness", "safety"):
        assert all(f'name="{name}" value="{v}"' in html for v in range(1, 6))
    # no correction, no context: no empty sections
    bare = render_item(lease(item()), STATS, 0, "alice", "", "n")
    assert 'id="correction"' not in bare and 'id="context"' not in bare and 'action="/logout"' not in bare


def test_empty_and_login_pages():
    html = render_empty(STATS, 2, "alice", "tok", "n")
    assert "Nothing to review" in html and 'id="queue-depth">5<' in html and 'id="own-count">2<' in html
    html = render_login("n", 'lo"gin', "bad <token>")
    assert (
        'name="login_csrf" value="lo&quot;gin"' in html and "bad &lt;token&gt;" in html and 'type="password"' in html
    )


def test_build_verdict_maps_the_item_and_the_lease():
    form = VerdictForm("req-1", "L1", {"accuracy": 4, "helpfulness": 3, "safety": 5}, True)
    v = build_verdict(lease(round_=2, started_ms=T0 + 500), "alice", form, now_ms=T0 + 90_500)
    assert v == ReviewVerdict(
        verdict_id="req-1:alice",
        request_id="req-1",
        reviewer="alice",
        accuracy=4,
        helpfulness=3,
        safety=5,
        passed=True,
        reviewed_at=T0 + 90_500,
        event_time=T0,
        gate_passed=False,
        task_type="math",
        model_version="m-1",
        quality_score=0.9,
        gate_scores={"quality": 0.9},
        gate_reasons=["ok_reason"],
        policy_version="p-3",
        sampled_for=["gate_audit", "random"],
        sample_probability=0.5,
        review_round=2,
        seconds_spent=90.0,
        source="topic/1/42",
    )
    v.check()
    # the time counts from the lease's start, to the millisecond, and never goes below zero
    assert build_verdict(lease(started_ms=T0 + 500), "alice", form, now_ms=T0 + 1_750).seconds_spent == 1.25
    assert build_verdict(lease(started_ms=T0 + 5_000), "alice", form, now_ms=T0 + 1_000).seconds_spent == 0.0
