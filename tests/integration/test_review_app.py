"""The review app's answers over real HTTP (aiohttp's test server), on a real Redis and the embedded
broker: sign-in, CSRF and the headers of every answer, lost leases, an item the verdict schema
refuses, the session cookie and sign-out, health, metrics and their route labels, and the verdict
relay (flushed right after a verdict; its errors logged, never raised). No fakes: a real
ReviewQueue and Reviewers under a key prefix of each test's own, and real VerdictRelays."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from flywheel.embedded import free_port
from flywheel.topics import create_topics
from streams.review.accounts import Reviewers, Session
from streams.review.items import ReviewItem
from streams.review.queue import ReviewQueue
from streams.review.relay import VerdictRelay
from streams.review.web import COOKIE, State, VerdictForm, build_verdict, create_review_app, flush_relay
from tests.integration.helpers import read_all

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
SCORES = {"accuracy": "4", "helpfulness": "4", "safety": "4", "passed": "1"}


def item(n: int = 1, probability: float = 0.5, reviews_needed: int = 2, **candidate) -> ReviewItem:
    c = {
        "request_id": f"req-{n}",
        "timestamp": T0 + n,
        "prompt": f"What is {n}+{n}?",
        "response": str(2 * n),
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
        f"req-{n}",
        c,
        gate_passed=False,
        sampled_for=["gate_audit", "random"],
        probability=probability,
        window=3,
        reviews_needed=reviews_needed,
        source=f"topic/1/{40 + n}",
    )


# -- fixtures: a real Redis, a real queue and real accounts under a prefix of the test's own ----------------


@pytest.fixture
def queue(client, prefix):
    return ReviewQueue(client, prefix)


@pytest.fixture
def reviewers(client, prefix):
    return Reviewers(client, prefix)


def signed_in(reviewers: Reviewers, name: str) -> tuple[str, str, Session, dict[str, str]]:
    """A new reviewer: their token, a session id, the session, and the headers of a browser holding it."""
    token = reviewers.add(name)
    sid, session = reviewers.open_session(name)
    return token, sid, session, {"Cookie": f"{COOKIE}={sid}", "Accept": "text/html"}


def run_app(check, queue, reviewers, relay=None) -> None:
    async def main():
        app = create_review_app(None, queue, reviewers, relay=relay, registry=CollectorRegistry())
        async with TestClient(TestServer(app)) as http:
            await check(http)

    asyncio.run(main())


def field(body: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', body)
    assert m, f"no {name} field in the page: {body[:300]}"
    return m.group(1)


async def lease_form(http, headers) -> dict[str, str]:
    """GET / (which leases the next item) and the form fields that name that lease."""
    resp = await http.get("/", headers=headers)
    body = await resp.text()
    assert resp.status == 200, body[:300]
    return {"item_id": field(body, "item_id"), "lease_id": field(body, "lease_id")}


def counts(queue: ReviewQueue) -> dict[str, int]:
    return queue.stats().counts


# -- sign-in, CSRF, headers -----------------------------------------------------------------------------------


def test_auth_csrf_and_the_headers_of_every_answer(queue, reviewers):
    assert queue.enqueue([item()]) == ["queued"]
    _, _, alice, session = signed_in(reviewers, "alice")
    bob_token, _, bob, _ = signed_in(reviewers, "bob")

    async def check(http):
        resp = await http.get("/", headers={"Accept": "text/html"})
        assert resp.status == 401 and 'action="/login"' in await resp.text()
        resp = await http.post("/verdict", data={"csrf": alice.csrf, "item_id": "req-1", "lease_id": "L1", **SCORES})
        assert resp.status == 401 and queue.outbox() == []
        resp = await http.get("/", headers={"Authorization": "Basic abc"})
        assert resp.status == 401
        resp = await http.get("/", headers={"Authorization": "Bearer fwr_not-a-token"})
        assert resp.status == 401
        resp = await http.get("/", headers={"Cookie": f"{COOKIE}=forged-session-id", "Accept": "text/html"})
        assert resp.status == 401

        resp = await http.get("/", headers=session)
        body = await resp.text()
        assert resp.status == 200 and "What is 1+1?" in body and 'id="reviewer">alice<' in body
        nonce = re.search(r"script-src 'nonce-([^']+)'", resp.headers["Content-Security-Policy"]).group(1)
        assert f'<script nonce="{nonce}">' in body
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        good = {"csrf": alice.csrf, "item_id": field(body, "item_id"), "lease_id": field(body, "lease_id"), **SCORES}
        assert good["item_id"] == "req-1" and field(body, "csrf") == alice.csrf

        # another session's (valid) CSRF token, and none at all, are refused
        for form in ({**good, "csrf": bob.csrf}, {k: v for k, v in good.items() if k != "csrf"}):
            resp = await http.post("/verdict", data=form, headers=session, allow_redirects=False)
            assert resp.status == 403
        resp = await http.post("/verdict", data={**good, "safety": "9"}, headers=session, allow_redirects=False)
        assert resp.status == 400 and "safety must be" in await resp.text()
        assert queue.outbox() == [] and counts(queue).get("verdicts", 0) == 0
        resp = await http.post("/verdict", data=good, headers=session, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/"
        [(_, v)] = queue.outbox()
        assert (v.reviewer, v.accuracy, v.passed, v.verdict_id, v.review_round) == ("alice", 4, True, "req-1:alice", 1)

        # a bearer token carries no ambient credential: no CSRF token needed (bob: the overlap item's second round)
        bearer = {"Authorization": f"Bearer {bob_token}"}
        form = await lease_form(http, bearer)
        assert form["item_id"] == "req-1"
        resp = await http.post("/verdict", data={**form, **SCORES}, headers=bearer, allow_redirects=False)
        assert resp.status == 303
        assert [(v.reviewer, v.review_round) for _, v in queue.outbox()] == [("alice", 1), ("bob", 2)]

    run_app(check, queue, reviewers)


# -- lost leases and refused verdicts ---------------------------------------------------------------------------


def test_lost_leases_answer_409_and_record_nothing(queue, reviewers):
    assert queue.enqueue([item(1, reviews_needed=1), item(2, reviews_needed=1)]) == ["queued", "queued"]
    _, _, alice, session = signed_in(reviewers, "alice")

    async def check(http):
        form = {"csrf": alice.csrf, **await lease_form(http, session), **SCORES}
        assert form["item_id"] == "req-1"
        resp = await http.post("/verdict", data={**form, "lease_id": "L-old"}, headers=session, allow_redirects=False)
        assert resp.status == 409 and "lease ended; it went back to the queue" in await resp.text()
        assert queue.outbox() == []

        # the same form sent eight times at once (a double click, and more): one verdict, seven 409s. Requests
        # that re-find the lease after the first verdict are refused there; those that found it before are
        # refused by the queue's submit (the lease ended between the two): which ones do is up to the threads
        answers = await asyncio.gather(
            *(http.post("/verdict", data=form, headers=session, allow_redirects=False) for _ in range(8))
        )
        assert sorted(r.status for r in answers) == [303] + [409] * 7
        assert [v.request_id for _, v in queue.outbox()] == ["req-1"] and counts(queue)["verdicts"] == 1
        # and once more, later: that lease is used up
        resp = await http.post("/verdict", data=form, headers=session, allow_redirects=False)
        assert resp.status == 409 and len(queue.outbox()) == 1

        form = {"csrf": alice.csrf, **await lease_form(http, session)}
        assert form["item_id"] == "req-2"
        resp = await http.post("/skip", data={**form, "lease_id": "L-old"}, headers=session, allow_redirects=False)
        assert resp.status == 409 and counts(queue).get("skipped", 0) == 0 and queue.stats().leased == 1
        resp = await http.post("/skip", data=form, headers=session, allow_redirects=False)
        assert resp.status == 303 and counts(queue)["skipped"] == 1
        assert (queue.stats().ready, queue.stats().leased) == (1, 0)  # back in the queue, not for alice

        # nothing left for alice: no lease to record a verdict on
        resp = await http.post("/verdict", data={**form, **SCORES}, headers=session, allow_redirects=False)
        assert resp.status == 409 and len(queue.outbox()) == 1
        resp = await http.get("/", headers=session)
        assert resp.status == 200 and "Nothing to review" in await resp.text()

    run_app(check, queue, reviewers)


def test_an_item_the_verdict_schema_refuses_is_a_400_not_a_crash(queue, reviewers):
    # sampled with probability 0: no verdict can carry it (its weight 1/p would be infinite)
    assert queue.enqueue([item(probability=0.0)]) == ["queued"]
    _, _, alice, session = signed_in(reviewers, "alice")

    async def check(http):
        form = {"csrf": alice.csrf, **await lease_form(http, session), **SCORES}
        resp = await http.post("/verdict", data=form, headers=session, allow_redirects=False)
        assert resp.status == 400 and "sample_probability" in await resp.text()
        assert queue.outbox() == [] and counts(queue).get("verdicts", 0) == 0
        assert (await http.get("/healthz")).status == 200  # the app goes on

    run_app(check, queue, reviewers)


# -- the session cookie ---------------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(client, prefix, queue, reviewers):
    token = reviewers.add("alice")
    sessions = lambda: list(client.scan_iter(f"{prefix}:session:*"))  # noqa: E731

    async def check(http):
        resp = await http.get("/login")
        body = await resp.text()
        login_csrf = field(body, "login_csrf")
        assert resp.cookies["flywheel_login"].value == login_csrf
        resp = await http.post("/login", data={"token": "fwr_bad", "login_csrf": login_csrf}, allow_redirects=False)
        assert resp.status == 401 and "That token was not accepted." in await resp.text()
        resp = await http.post("/login", data={"token": token, "login_csrf": "other"}, allow_redirects=False)
        assert resp.status == 403
        resp = await http.post(
            "/login",
            data={"token": token, "login_csrf": login_csrf},
            headers={"Referer": "http://evil.example/page"},
            allow_redirects=False,
        )
        assert resp.status == 403
        assert sessions() == [] and COOKIE not in resp.cookies
        resp = await http.post(
            "/login",
            data={"token": token, "login_csrf": login_csrf},
            headers={"Origin": "null"},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookie = resp.cookies[COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        assert int(cookie["max-age"]) == reviewers.session_s
        sid = cookie.value
        session = reviewers.session(sid)
        assert session is not None and session.reviewer == "alice" and len(sessions()) == 1
        resp = await http.get("/", headers={"Accept": "text/html"})  # the cookie jar holds the session now
        assert resp.status == 200 and field(await resp.text(), "csrf") == session.csrf

        resp = await http.post("/logout", data={"csrf": "wrong"}, allow_redirects=False)
        assert resp.status == 403 and reviewers.session(sid) is not None
        resp = await http.post("/logout", data={"csrf": session.csrf}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/login"
        assert reviewers.session(sid) is None and sessions() == []
        resp = await http.get("/", headers={"Cookie": f"{COOKIE}={sid}"})
        assert resp.status == 401

    run_app(check, queue, reviewers)


# -- health and metrics -----------------------------------------------------------------------------------------


def test_health_metrics_and_bounded_route_labels(queue, reviewers):
    queue.enqueue([item()])
    _, _, _, session = signed_in(reviewers, "alice")

    async def check(http):
        resp = await http.get("/healthz")
        assert resp.status == 200 and (await resp.text()).strip() == "ok"
        assert (await http.get("/items/req-1/secret")).status == 404
        assert (await http.put("/")).status == 405
        resp = await http.get("/", headers=session)
        assert resp.status == 200 and "req-1" in await resp.text()
        text = await (await http.get("/metrics")).text()
        assert 'flywheel_review_http_requests_total{route="/healthz",status="200"} 1.0' in text
        assert 'flywheel_review_http_requests_total{route="other",status="404"} 1.0' in text
        assert 'flywheel_review_http_requests_total{route="/",status="200"} 1.0' in text
        assert "req-1" not in text
        routes = set(re.findall(r'flywheel_review_http_requests_total\{route="([^"]*)"', text))
        assert routes <= {"/", "/login", "/logout", "/verdict", "/skip", "/healthz", "/metrics", "other"}

    run_app(check, queue, reviewers)


def test_healthz_answers_503_while_redis_is_down():
    # nothing listens there; no retries (redis-py's default backs off for seconds before it gives up)
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    prefix = f"test-review-app-{uuid.uuid4().hex[:10]}:review"

    async def check(http):
        started = time.monotonic()
        resp = await http.get("/healthz")
        assert resp.status == 503 and (await resp.text()).strip() == "redis unavailable"
        assert time.monotonic() - started < 2
        text = await (await http.get("/metrics")).text()
        assert 'flywheel_review_http_requests_total{route="/healthz",status="503"} 1.0' in text

    try:
        run_app(check, ReviewQueue(down, prefix), Reviewers(down, prefix))
    finally:
        down.close()


# -- the relay ---------------------------------------------------------------------------------------------------


def test_relay_errors_are_logged_once_a_while_and_never_raised(settings, queue, reviewers, caplog):
    # two verdicts waiting in the outbox, recorded the way the page records them
    queue.enqueue([item(1, reviews_needed=1), item(2, reviews_needed=1)])
    for _ in range(2):
        lease = queue.lease("alice")
        form = VerdictForm(lease.item.item_id, lease.lease_id, {"accuracy": 3, "helpfulness": 3, "safety": 3}, False)
        queue.submit(lease, "alice", build_verdict(lease, "alice", form, int(time.time() * 1000)))
    assert queue.stats().outbox == 2

    # a real relay whose broker does not answer (nothing listens on its port); its flushes wait 0.3 s, not 10
    away = VerdictRelay(settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}"), queue)
    away.flush = functools.partial(away.flush, timeout=0.3)
    create_topics(settings)
    back = VerdictRelay(settings, queue)
    state = State(queue, reviewers, away, CollectorRegistry())

    async def main():
        sent = [await flush_relay(state) for _ in range(3)]
        assert queue.stats().outbox == 2  # nothing lost while the broker was away
        state.relay = back  # the broker is back
        return sent + [await flush_relay(state)]

    try:
        with caplog.at_level(logging.INFO, logger="flywheel.review"):
            assert asyncio.run(main()) == [0, 0, 0, 2]
    finally:
        away.close()
        back.close()
    events = [getattr(rec, "event", "") for rec in caplog.records]
    assert events.count("relay_failed") == 1 and "relay_recovered" in events and "relay_sent" in events
    failed = next(rec for rec in caplog.records if getattr(rec, "event", "") == "relay_failed")
    assert failed.levelno == logging.ERROR and failed.error
    assert queue.stats().outbox == 0
    records = read_all(settings, settings.topic_verdicts, "verdict")
    assert sorted(v["verdict_id"] for _, _, v in records) == ["req-1:alice", "req-2:alice"]


def test_the_app_flushes_the_relay_right_after_a_verdict(settings, queue, reviewers):
    create_topics(settings)
    relay = VerdictRelay(settings, queue)
    assert queue.enqueue([item(1, reviews_needed=1), item(2, reviews_needed=1)]) == ["queued", "queued"]
    _, _, alice, session = signed_in(reviewers, "alice")

    async def outbox_empty(within: float) -> float:
        started = time.monotonic()
        while queue.stats().outbox and time.monotonic() - started < within:
            await asyncio.sleep(0.01)
        assert queue.stats().outbox == 0, f"the outbox still holds a verdict after {within} s"
        return time.monotonic() - started

    async def check(http):
        # the first verdict connects the relay's producer to the broker
        form = {"csrf": alice.csrf, **await lease_form(http, session), **SCORES}
        assert (await http.post("/verdict", data=form, headers=session, allow_redirects=False)).status == 303
        await outbox_empty(20)
        # the relay's next tick is about a second away now: the second verdict must go before it
        form = {"csrf": alice.csrf, **await lease_form(http, session), **SCORES, "passed": "0"}
        assert (await http.post("/verdict", data=form, headers=session, allow_redirects=False)).status == 303
        assert await outbox_empty(2) < 0.6, "the verdict waited for the relay's tick: the app did not wake it"

    try:
        run_app(check, queue, reviewers, relay=relay)
    finally:
        relay.close()
    records = read_all(settings, settings.topic_verdicts, "verdict")
    got = {v["request_id"]: v for _, _, v in records}
    assert set(got) == {"req-1", "req-2"} and len(records) == 2
    assert (got["req-1"]["passed"], got["req-2"]["passed"]) == (True, False)
    for key, _, v in records:
        assert (
            key.decode() == v["request_id"]
            and v["reviewer"] == "alice"
            and v["verdict_id"] == f"{v['request_id']}:alice"
        )
        assert v["sample_probability"] == 0.5 and v["gate_passed"] is False and v["task_type"] == "math"
