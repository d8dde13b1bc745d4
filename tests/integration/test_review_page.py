"""The review page in a real headless Chromium, on a real Redis and the embedded broker: sign in,
judge items with the keyboard only, verdicts on the verdicts topic; escaping and CSP against an
XSS payload; sign-in, CSRF, validation and lost leases over plain HTTP; the figures on the page
and on /metrics."""

from __future__ import annotations

import asyncio
import gc
import http.client
import os
import re
import threading
import time
import uuid
from html import unescape
from urllib.parse import urlencode

import pytest
import redis

from flywheel.embedded import free_port, wait_for_port
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import TrainingCandidate
from streams.review.accounts import Reviewers
from streams.review.items import ReviewItem
from streams.review.queue import ReviewQueue, review_prefix
from streams.review.web import COOKIE, create_review_app, serve
from tests.integration.helpers import metric_value, read_all, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T0 = 1_767_225_600_000  # 2026-01-01
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("FLYWHEEL_SKIP_BROWSER") == "1":
            pytest.skip(f"{CHROMIUM} is missing and FLYWHEEL_SKIP_BROWSER=1")
        pytest.fail(
            f"the review page tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium); "
            "set FLYWHEEL_SKIP_BROWSER=1 to skip them instead",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


class ReviewSite:
    """The review app served in-process, on its own loop in a background thread."""

    def __init__(self, settings, with_relay: bool):
        self.settings = settings
        self.client = redis.Redis.from_url(settings.redis_url)
        self.prefix = review_prefix(settings)
        self.queue = ReviewQueue(self.client, self.prefix, lease_ms=settings.review_lease_s * 1000)
        self.reviewers = Reviewers(self.client, self.prefix, session_s=settings.review_session_h * 3600)
        self.relay = None
        if with_relay:
            from streams.review.relay import VerdictRelay

            create_topics(settings)
            self.relay = VerdictRelay(settings, self.queue)
        self.app = create_review_app(settings, self.queue, self.reviewers, relay=self.relay)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="review-site", daemon=True)
        self._thread.start()
        wait_for_port("127.0.0.1", self.port)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            self._stop = asyncio.Event()
            await serve(self.app, "127.0.0.1", self.port, self._stop)

        self._loop.run_until_complete(main())
        self._loop.close()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the review server did not stop"
        if self.relay:
            self.relay.close()
            self.relay = self.app = None  # let the producer go while the broker is up (no connect noise at exit)
        for key in self.client.scan_iter(f"{self.prefix}:*", count=1000):
            self.client.delete(key)
        self.client.close()


@pytest.fixture
def site_factory(settings):
    sites: list[ReviewSite] = []

    def start(with_relay: bool = False) -> ReviewSite:
        sites.append(ReviewSite(settings, with_relay))
        return sites[-1]

    yield start
    for s in sites:
        s.close()
    sites.clear()
    gc.collect()


def make_item(n: int, run: str, prompt: str = "", reviews_needed: int = 1, **candidate) -> ReviewItem:
    request_id = f"req-{run}-{n}"
    fields = dict(
        request_id=request_id,
        timestamp=T0 + n,
        user_id="u-1",
        session_id="s-1",
        prompt=prompt or f"What is {n} plus {n}?",
        response=f"It is {2 * n}.",
        user_action="accepted",
        task_type="qa",
        quality_score=0.82,
        model_version="m-2026-01",
        policy_version="policy-7",
        scores={"quality": 0.82, "toxicity": 0.01},
        reasons=[],
        retrieved_context=[f"passage about {n}"],
    )
    fields.update(candidate)
    return ReviewItem(
        item_id=request_id,
        candidate=TrainingCandidate(**fields).to_dict(),
        gate_passed=True,
        sampled_for=["random"],
        probability=0.25,
        window=0,
        reviews_needed=reviews_needed,
        source=f"t/0/{n}",
    )


# -- helpers ----------------------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: str):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def field(self, name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', self.body)
        assert m, f"no {name} field in the page: {self.body[:400]}"
        return unescape(m.group(1))


def call(site: ReviewSite, method: str, path: str, form: dict | None = None, headers: dict | None = None) -> Reply:
    """One request, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=15)
    try:
        hdrs = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.getheaders(), r.read().decode())
    finally:
        conn.close()


def cookie_value(reply: Reply, name: str) -> str:
    for c in reply.cookies():
        if c.startswith(name + "="):
            return c.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie in {reply.cookies()}")


def sign_in(page, site: ReviewSite, token: str, start: str = "/login") -> None:
    """Through the sign-in page, or through the 401 page any other page shows when signed out."""
    response = page.goto(site.base + start)
    assert response.status == (200 if start == "/login" else 401)
    page.fill("#token", token)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == site.base + "/"


def figures(page) -> tuple[int, int]:
    return int(page.inner_text("#queue-depth")), int(page.inner_text("#own-count"))


def judge(page, scores: tuple[int, int, int], key: str) -> None:
    """Scores with digits, then p (pass) or x (fail); waits for the next page."""
    for digit in scores:
        page.keyboard.press(str(digit))
    with page.expect_navigation():
        page.keyboard.press(key)


# -- the tests -----------------------------------------------------------------------------------------------


def test_three_items_judged_with_the_keyboard_reach_the_verdicts_topic(site_factory, page):
    site = site_factory(with_relay=True)
    run = uuid.uuid4().hex[:6]
    assert site.queue.enqueue([make_item(i, run) for i in (1, 2, 3)]) == ["queued"] * 3
    token = site.reviewers.add("alice")

    sign_in(page, site, token)
    assert page.inner_text("#reviewer") == "alice"
    assert "nothing to review" not in page.inner_text("body").lower()
    legend = page.inner_text("#legend")
    for key in ("1", "5", "Backspace", "p", "x", "s"):
        assert key in legend

    # the first item: p with a score missing shows a message and does not submit
    first = page.inner_text("#item-id")
    assert page.get_attribute("#verdict", "data-current") == "accuracy"
    # keys typed into a text field stay there
    page.evaluate(
        "() => { const i = document.createElement('input'); i.type = 'text'; i.id = 'note';"
        " document.querySelector('main').prepend(i); i.focus(); }"
    )
    page.keyboard.type("4px1s")
    assert page.input_value("#note") == "4px1s"
    assert page.locator("#verdict input:checked").count() == 0
    assert page.get_attribute("#verdict", "data-current") == "accuracy" and page.inner_text("#item-id") == first
    page.evaluate("() => document.getElementById('note').remove()")
    page.keyboard.press("4")
    assert page.get_attribute("#verdict", "data-current") == "helpfulness"
    assert page.get_attribute(".row.current", "data-score") == "helpfulness"
    page.keyboard.press("p")
    page.wait_for_selector("#message:not(:empty)")
    assert "helpfulness" in page.inner_text("#message") and "safety" in page.inner_text("#message")
    assert page.inner_text("#item-id") == first
    assert site.queue.stats().counts.get("verdicts", 0) == 0
    # 2 on helpfulness, Backspace back to it, 5 instead, then 3 on safety
    page.keyboard.press("2")
    assert page.get_attribute("#verdict", "data-current") == "safety"
    page.keyboard.press("Backspace")
    assert page.get_attribute("#verdict", "data-current") == "helpfulness"
    judge(page, (5, 3), "p")

    given = {first: (4, 5, 3, True)}
    plan = [((2, 1, 5), "x", False), ((5, 5, 4), "p", True)]
    for scores, key, passed in plan:
        item_id = page.inner_text("#item-id")
        assert item_id not in given, "the page showed an item judged already"
        judge(page, scores, key)
        given[item_id] = (*scores, passed)
    assert page.locator("#empty").count() == 1, "after three verdicts the queue should be empty"
    assert set(given) == {f"req-{run}-{i}" for i in (1, 2, 3)}
    assert figures(page) == (0, 3)

    wait_for(lambda: site.queue.stats().outbox == 0, 20, what="the relay to empty the outbox")
    records = read_all(site.settings, site.settings.topic_verdicts, "verdict", Codec())
    assert len(records) == 3
    got = {v["request_id"]: v for _, _, v in records}
    assert set(got) == set(given)
    for key, _, v in records:
        assert key.decode() == v["request_id"]
        assert v["verdict_id"] == f"{v['request_id']}:alice"
        assert v["reviewer"] == "alice"
        assert (v["accuracy"], v["helpfulness"], v["safety"], v["passed"]) == given[v["request_id"]]
        n = int(v["request_id"].rsplit("-", 1)[1])
        assert v["event_time"] == T0 + n
        assert v["gate_passed"] is True and v["sample_probability"] == 0.25 and v["sampled_for"] == ["random"]
        assert v["review_round"] == 1 and v["task_type"] == "qa" and v["model_version"] == "m-2026-01"
        assert v["gate_scores"] == {"quality": 0.82, "toxicity": 0.01} and v["quality_score"] == 0.82
        assert v["policy_version"] == "policy-7" and v["source"] == f"t/0/{n}"
        assert 0 <= v["seconds_spent"] < 60
        assert abs(v["reviewed_at"] - time.time() * 1000) < 120_000
    stats = site.queue.stats()
    assert (stats.counts["verdicts"], stats.counts["passed"], stats.counts["failed"], stats.counts["completed"]) == (
        3,
        2,
        1,
        3,
    )


def test_an_xss_payload_shows_as_text_and_never_runs(site_factory, page):
    site = site_factory()
    run = uuid.uuid4().hex[:6]
    item = make_item(
        1,
        run,
        prompt=f"Explain this: {XSS}",
        response=XSS,
        correction=XSS,
        task_type=XSS,
        model_version=XSS,
        retrieved_context=[XSS],
        scores={XSS: 0.5},
        reasons=[XSS],
    )
    item.sampled_for = ["random", XSS]
    site.queue.enqueue([item])
    token = site.reviewers.add("carol")

    sign_in(page, site, token)
    response = page.reload()
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert page.reload().headers["content-security-policy"] != csp, "the nonce must change per response"
    page.wait_for_timeout(300)  # time for an injected image's onerror, had it been parsed

    assert page.inner_text("#prompt").endswith(f"Explain this: {XSS}")
    for selector in ("#response", "#correction", "#context", "#gate", "#about", "#sampled-for"):
        assert XSS in page.inner_text(selector), selector
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main img").count() == 0
    assert page.locator("script").count() == 1  # the page's own, which did run (its nonce matched)
    assert page.evaluate("document.documentElement.getAttribute('data-shortcuts')") == "on"


def test_sign_in_csrf_validation_and_lost_leases_over_http(site_factory):
    site = site_factory()
    run = uuid.uuid4().hex[:6]
    site.queue.enqueue([make_item(i, run) for i in (1, 2)])
    token = site.reviewers.add("alice")
    site.reviewers.add("bob")
    nothing_written = lambda: site.queue.stats().counts.get("verdicts", 0) == 0 and site.queue.stats().outbox == 0  # noqa: E731

    # no credentials
    r = call(site, "GET", "/", headers={"Accept": "text/html"})
    assert r.status == 401 and 'action="/login"' in r.body and r.header("WWW-Authenticate").startswith("Bearer")
    assert "script-src 'nonce-" in r.header("Content-Security-Policy")
    assert call(site, "GET", "/", headers={"Accept": "application/json"}).status == 401
    assert (
        call(site, "POST", "/verdict", form={"accuracy": 3, "helpfulness": 3, "safety": 3, "passed": 1}).status == 401
    )
    assert call(site, "POST", "/skip", form={}).status == 401
    assert call(site, "GET", "/", headers={"Authorization": "Bearer fwr_not-a-real-token"}).status == 401
    assert call(site, "GET", "/", headers={"Cookie": f"{COOKIE}=forged-session-id"}).status == 401
    assert call(site, "GET", "/healthz").body.strip() == "ok"

    # sign-in: a wrong token, a missing form token, another site, then the right one
    form_page = call(site, "GET", "/login")
    login_csrf, login_cookie = form_page.field("login_csrf"), cookie_value(form_page, "flywheel_login")
    jar = {"Cookie": f"flywheel_login={login_cookie}"}
    r = call(site, "POST", "/login", form={"token": "fwr_wrong", "login_csrf": login_csrf}, headers=jar)
    assert (
        r.status == 401
        and "That token was not accepted." in r.body
        and not any(c.startswith(COOKIE) for c in r.cookies())
    )
    assert call(site, "POST", "/login", form={"token": token, "login_csrf": login_csrf}).status == 403
    r = call(
        site,
        "POST",
        "/login",
        form={"token": token, "login_csrf": login_csrf},
        headers={**jar, "Origin": "http://evil.example"},
    )
    assert r.status == 403 and not any(c.startswith(COOKIE) for c in r.cookies())
    r = call(
        site, "POST", "/login", form={"token": token, "login_csrf": login_csrf}, headers={**jar, "Origin": site.base}
    )
    assert r.status == 303 and r.header("Location") == "/"
    session_cookie = next(c for c in r.cookies() if c.startswith(COOKIE + "="))
    attrs = session_cookie.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    sid = cookie_value(r, COOKIE)
    cookie = {"Cookie": f"{COOKIE}={sid}", "Accept": "text/html"}

    page_ = call(site, "GET", "/", headers=cookie)
    assert page_.status == 200 and page_.header("Cache-Control") == "no-store"
    csrf, item_id, lease_id = page_.field("csrf"), page_.field("item_id"), page_.field("lease_id")
    assert item_id == f"req-{run}-1"
    # a bearer token sees the same lease (a reload renews it, it does not take another item)
    bearer = call(site, "GET", "/", headers={"Authorization": f"Bearer {token}"})
    assert bearer.status == 200 and bearer.field("lease_id") == lease_id and bearer.field("item_id") == item_id

    good = {
        "csrf": csrf,
        "item_id": item_id,
        "lease_id": lease_id,
        "accuracy": "4",
        "helpfulness": "4",
        "safety": "5",
        "passed": "1",
    }
    # CSRF: wrong, missing, and from another site
    assert call(site, "POST", "/verdict", form={**good, "csrf": "nope"}, headers=cookie).status == 403
    assert (
        call(site, "POST", "/verdict", form={k: v for k, v in good.items() if k != "csrf"}, headers=cookie).status
        == 403
    )
    assert call(site, "POST", "/verdict", form=good, headers={**cookie, "Origin": "http://evil.example"}).status == 403
    # scores: out of range, missing, not a number; pass/fail missing
    for bad, words in (
        ({"accuracy": "7"}, "accuracy must be a whole number from 1 to 5"),
        ({"helpfulness": ""}, "helpfulness is missing"),
        ({"safety": "2.5"}, "safety must be"),
        ({"passed": ""}, "choose pass or fail"),
    ):
        r = call(site, "POST", "/verdict", form={**good, **bad}, headers=cookie)
        assert r.status == 400 and words in r.body, (bad, r.status)
    assert nothing_written()

    # the lease expires and bob takes the item: alice's verdict is refused
    later = ReviewQueue(
        site.client,
        site.prefix,
        lease_ms=site.queue.lease_ms,
        clock=lambda: time.time() + site.queue.lease_ms / 1000 + 5,
    )
    bobs = later.lease("bob")
    assert bobs is not None and bobs.item.item_id == item_id
    r = call(site, "POST", "/verdict", form=good, headers=cookie)
    assert r.status == 409 and "lease ended; it went back to the queue" in r.body and 'href="/"' in r.body
    assert nothing_written()

    # alice's next item: a verdict after a reload and a second counts from the lease's start
    page_ = call(site, "GET", "/", headers=cookie)
    assert page_.field("item_id") == f"req-{run}-2"
    time.sleep(1.1)
    page_ = call(site, "GET", "/", headers=cookie)
    good.update(item_id=page_.field("item_id"), lease_id=page_.field("lease_id"), passed="0")
    r = call(site, "POST", "/verdict", form=good, headers=cookie)
    assert r.status == 303 and r.header("Location") == "/"
    [(_, v)] = site.queue.outbox()
    assert (v.request_id, v.reviewer, v.accuracy, v.helpfulness, v.safety, v.passed) == (
        f"req-{run}-2",
        "alice",
        4,
        4,
        5,
        False,
    )
    assert 1.0 <= v.seconds_spent < 30
    # the same form again: its lease is used up
    assert call(site, "POST", "/verdict", form=good, headers=cookie).status == 409
    assert len(site.queue.outbox()) == 1

    # sign out: the cookie stops working
    assert call(site, "POST", "/logout", form={"csrf": "wrong"}, headers=cookie).status == 403
    r = call(site, "POST", "/logout", form={"csrf": csrf}, headers=cookie)
    assert r.status == 303 and r.header("Location") == "/login"
    assert call(site, "GET", "/", headers=cookie).status == 401
    assert call(site, "GET", f"/items/{item_id}").status == 404


def test_figures_on_the_page_change_after_a_verdict_and_the_empty_page(site_factory, browser, page):
    site = site_factory()
    run = uuid.uuid4().hex[:6]
    site.queue.enqueue([make_item(1, run), make_item(2, run, reviews_needed=2, correction="It is four.")])
    alice, bob = site.reviewers.add("alice"), site.reviewers.add("bob")

    sign_in(page, site, alice)
    assert figures(page) == (2, 0)
    assert page.inner_text("#round") == "1"
    judge(page, (3, 3, 3), "p")
    assert figures(page) == (1, 1)
    assert page.inner_text("#item-id") == f"req-{run}-2"
    assert page.inner_text("#correction").endswith("It is four.")
    assert "of 2" in page.inner_text(".figures")
    judge(page, (2, 2, 2), "x")
    # the overlap item went back for a second reviewer: alice has nothing left, the queue holds one
    assert page.locator("#empty").count() == 1
    assert "nothing to review" in page.inner_text("#empty").lower()
    assert figures(page) == (1, 2)
    assert page.reload().status == 200

    second = browser.new_context()
    try:
        bob_page = second.new_page()
        sign_in(bob_page, site, bob, start="/")
        assert bob_page.inner_text("#item-id") == f"req-{run}-2"
        assert bob_page.inner_text("#round") == "2" and "second reviewer" in bob_page.inner_text(".figures")
        assert figures(bob_page) == (1, 0)
        with bob_page.expect_navigation():
            bob_page.keyboard.press("s")  # skip: back to the queue, never offered to bob again
        assert bob_page.locator("#empty").count() == 1
        assert figures(bob_page) == (1, 0)
    finally:
        second.close()
    stats = site.queue.stats()
    assert (stats.ready, stats.leased, stats.counts["skipped"], stats.counts["verdicts"]) == (1, 0, 1, 2)


def test_metrics_show_the_queue_and_the_verdicts_moving(site_factory):
    site = site_factory(with_relay=True)
    run = uuid.uuid4().hex[:6]
    site.queue.enqueue([make_item(i, run) for i in (1, 2, 3)])
    token = site.reviewers.add("dave")
    auth = {"Authorization": f"Bearer {token}"}

    before = call(site, "GET", "/metrics")
    assert before.status == 200 and before.header("Content-Type").startswith("text/plain")
    assert metric_value(before.body, "flywheel_review_queue_depth", state="ready") == 3
    assert metric_value(before.body, "flywheel_review_queue_depth", state="leased") == 0
    assert metric_value(before.body, "flywheel_review_verdicts_total") == 0
    assert metric_value(before.body, "flywheel_review_queue_up") == 1

    for passed in ("1", "0"):
        page_ = call(site, "GET", "/", headers=auth)
        form = {
            "item_id": page_.field("item_id"),
            "lease_id": page_.field("lease_id"),
            "accuracy": "5",
            "helpfulness": "4",
            "safety": "5",
            "passed": passed,
        }
        assert call(site, "POST", "/verdict", form=form, headers=auth).status == 303  # a bearer needs no CSRF token
    call(site, "GET", "/", headers=auth)  # leases the third

    wait_for(lambda: site.queue.stats().outbox == 0, 20, what="the relay to empty the outbox")
    after = call(site, "GET", "/metrics").body
    assert metric_value(after, "flywheel_review_queue_depth", state="ready") == 0
    assert metric_value(after, "flywheel_review_queue_depth", state="leased") == 1
    assert metric_value(after, "flywheel_review_verdicts_total", verdict="passed") == 1
    assert metric_value(after, "flywheel_review_verdicts_total", verdict="failed") == 1
    assert metric_value(after, "flywheel_review_outbox_verdicts") == 0
    assert metric_value(after, "flywheel_review_queue_events_total", event="completed") == 2
    assert metric_value(after, "flywheel_review_http_requests_total", route="/verdict", status="303") == 2
    assert metric_value(after, "flywheel_review_http_requests_total", route="/", status="200") == 3
    assert metric_value(after, "flywheel_review_http_requests_total", route="/metrics", status="200") >= 1
    routes = set(re.findall(r'flywheel_review_http_requests_total\{route="([^"]*)"', after))
    assert routes <= {"/", "/login", "/logout", "/verdict", "/skip", "/healthz", "/metrics", "other"}
    assert run not in after  # no item ids in any label
    assert len(read_all(site.settings, site.settings.topic_verdicts, "verdict")) == 2
