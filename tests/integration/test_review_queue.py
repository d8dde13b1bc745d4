"""The review queue, reviewer accounts and the verdict relay against a real Redis (and broker)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import redis as redis_lib

from schemas.records import ReviewVerdict
from streams.review.accounts import AccountError, Reviewers
from streams.review.items import ReviewItem
from streams.review.queue import LeaseLost, ReviewQueue


class Clock:
    def __init__(self, t: float = 1_790_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def item(i: int, cls: str = "random", need: int = 1, task: str = "qa", window: int = 2900) -> ReviewItem:
    cand = {
        "request_id": f"r{i}",
        "timestamp": 1_760_000_000_000 + i,
        "task_type": task,
        "prompt": f"prompt {i}",
        "response": "response",
        "quality_score": 0.7,
        "scores": {"quality": 0.7},
        "reasons": [],
    }
    return ReviewItem(f"r{i}", cand, True, [cls], 0.07, window, reviews_needed=need, source=f"t/0/{i}")


def verdict(lease, reviewer: str, passed: bool = True) -> ReviewVerdict:
    c = lease.item.candidate
    return ReviewVerdict(
        f"{lease.item.item_id}:{reviewer}",
        lease.item.item_id,
        reviewer,
        4,
        4,
        5,
        passed,
        int(time.time() * 1000),
        c["timestamp"],
        True,
        task_type=c["task_type"],
        review_round=lease.round,
    )


def test_priority_order_then_first_come(client, prefix):
    q = ReviewQueue(client, prefix, clock=Clock())
    assert (
        q.enqueue(
            [
                item(1, "random"),
                item(2, "rare_task"),
                item(3, "correction"),
                item(4, "uncertainty"),
                item(5, "correction"),
            ]
        )
        == ["queued"] * 5
    )
    order = []
    while (lease := q.lease("alice")) is not None:
        order.append(lease.item.item_id)
        q.submit(lease, "alice", verdict(lease, "alice"))
    assert order == ["r3", "r5", "r4", "r2", "r1"]


def test_enqueue_is_idempotent_and_budget_holds(client, prefix):
    q = ReviewQueue(client, prefix, clock=Clock())
    assert q.enqueue([item(1), item(2)], budget=3) == ["queued", "queued"]
    assert q.enqueue([item(1), item(3), item(4)], budget=3) == ["duplicate", "queued", "budget"]
    assert q.window_counts(2900) == {"*": 3, "qa": 3}
    assert q.enqueue([item(5, window=2901)], budget=3) == ["queued"]  # a new window, a new budget
    s = q.stats()
    assert (s.ready, s.counts["queued"], s.counts["over_budget"]) == (4, 4, 1)


def test_one_reviewer_at_a_time_and_reload_keeps_the_lease(client, prefix):
    q = ReviewQueue(client, prefix, clock=Clock())
    q.enqueue([item(1), item(2)])
    a = q.lease("alice")
    assert q.lease("alice") == a  # a reload shows the same item
    b = q.lease("bob")
    assert b.item.item_id != a.item.item_id
    assert q.lease("carol") is None
    assert q.stats().leased == 2


def test_expired_lease_returns_and_late_verdict_is_refused(client, prefix):
    clock = Clock()
    q = ReviewQueue(client, prefix, lease_ms=60_000, clock=clock)
    q.enqueue([item(1)])
    a = q.lease("alice")
    clock.t += 61
    b = q.lease("bob")
    assert b is not None and b.item.item_id == "r1" and q.stats().counts["expired"] == 1
    with pytest.raises(LeaseLost):
        q.submit(a, "alice", verdict(a, "alice"))
    assert q.submit(b, "bob", verdict(b, "bob")) == 1
    assert [v.reviewer for _, v in q.outbox()] == ["bob"]
    with pytest.raises(LeaseLost):  # a double submit (a resent form) records nothing more
        q.submit(b, "bob", verdict(b, "bob"))
    assert len(q.outbox()) == 1


def test_expired_lease_not_yet_taken_still_accepts_its_verdict(client, prefix):
    clock = Clock()
    q = ReviewQueue(client, prefix, lease_ms=60_000, clock=clock)
    q.enqueue([item(1)])
    a = q.lease("alice")
    clock.t += 61  # nobody reaped it yet: the item is still alice's
    assert q.submit(a, "alice", verdict(a, "alice")) == 1


def test_real_time_expiry(client, prefix):
    q = ReviewQueue(client, prefix, lease_ms=300)
    q.enqueue([item(1)])
    assert q.lease("alice") is not None
    assert q.lease("bob") is None
    time.sleep(0.4)
    assert q.lease("bob").item.item_id == "r1"


def test_overlap_goes_to_a_second_reviewer_never_the_same_one(client, prefix):
    q = ReviewQueue(client, prefix, clock=Clock())
    q.enqueue([item(1, need=2)])
    a = q.lease("alice")
    q.submit(a, "alice", verdict(a, "alice", passed=True))
    assert q.lease("alice") is None  # alice judged it already
    b = q.lease("bob")
    assert (b.item.item_id, b.round) == ("r1", 2)
    q.submit(b, "bob", verdict(b, "bob", passed=False))
    s = q.stats()
    assert (s.depth, s.counts["completed"], s.counts["disagree"], s.counts.get("agree", 0)) == (0, 1, 1, 0)
    assert client.hget(f"{prefix}:items", "r1") is None  # the text is gone once fully reviewed
    assert q.enqueue([item(1, need=2)]) == ["duplicate"]  # and it never comes back


def test_skip_returns_the_item_for_others_only(client, prefix):
    q = ReviewQueue(client, prefix, clock=Clock())
    q.enqueue([item(1, "correction"), item(2)])
    a = q.lease("alice")
    assert a.item.item_id == "r1" and q.release(a, "alice")
    assert q.lease("alice").item.item_id == "r2"
    assert q.lease("bob").item.item_id == "r1"  # back in its place, first in line
    assert not q.release(a, "alice")  # an old lease cannot release anything


def test_survives_restart_of_every_client(client, prefix, redis_url):
    clock = Clock()
    q = ReviewQueue(client, prefix, clock=clock)
    q.enqueue([item(i) for i in range(5)])
    a = q.lease("alice")
    fresh_client = redis_lib.Redis.from_url(redis_url)  # a restarted web process: nothing in memory
    q2 = ReviewQueue(fresh_client, prefix, clock=clock)
    assert q2.lease("alice") == a
    q2.submit(a, "alice", verdict(a, "alice"))
    assert q2.stats().ready == 4 and q2.reviewer_count("alice") == 1
    fresh_client.close()


def test_concurrent_reviewers_never_share_an_item(client, prefix, redis_url):
    n_items, reviewers = 120, [f"rev{i}" for i in range(6)]
    ReviewQueue(client, prefix).enqueue([item(i, need=2 if i % 4 == 0 else 1) for i in range(n_items)])
    judged: list[tuple[str, str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(name: str):
        try:
            c = redis_lib.Redis.from_url(redis_url)
            q = ReviewQueue(c, prefix)
            deadline = time.monotonic() + 60
            # nothing for me now is not the end: an overlap item's second place opens only at its first verdict
            while time.monotonic() < deadline:
                lease = q.lease(name)
                if lease is None:
                    if q.stats().depth == 0:
                        break
                    time.sleep(0.01)
                    continue
                q.submit(lease, name, verdict(lease, name))
                with lock:
                    judged.append((lease.item.item_id, name))
            c.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    per_item = Counter(i for i, _ in judged)
    assert len(per_item) == n_items
    wrong = {f"r{i}": per_item[f"r{i}"] for i in range(n_items) if per_item[f"r{i}"] != (2 if i % 4 == 0 else 1)}
    assert not wrong, f"verdicts per item, where not as needed: {wrong}"
    assert len(set(judged)) == len(judged)  # nobody judged one item twice
    q = ReviewQueue(client, prefix)
    assert q.stats().depth == 0 and len(q.outbox(1000)) == len(judged)


def test_reviewer_accounts_store_only_hashes(client, prefix):
    accounts = Reviewers(client, prefix)
    token = accounts.add("alice")
    assert accounts.authenticate(token) == "alice"
    assert accounts.authenticate(token + "x") is None and accounts.authenticate("") is None
    dump = b"".join(
        v for k in client.scan_iter(f"{prefix}:*") if client.type(k) == b"hash" for v in client.hgetall(k).values()
    ) + b"".join(client.hkeys(f"{prefix}:tokens"))
    assert token.encode() not in dump
    with pytest.raises(AccountError, match="exists"):
        accounts.add("alice")
    with pytest.raises(AccountError, match="must be"):
        accounts.add("a|b")
    sid, session = accounts.open_session("alice")
    assert accounts.session(sid) == session and accounts.session("nope") is None
    assert [r["name"] for r in accounts.list()] == ["alice"]
    accounts.remove("alice")
    assert accounts.authenticate(token) is None and accounts.session(sid) is None
    with pytest.raises(AccountError, match="no reviewer"):
        accounts.remove("alice")


@pytest.fixture
def relay_settings(settings):
    from tests.integration.helpers import forget_redis

    yield settings
    forget_redis(settings)


def test_relay_moves_verdicts_to_the_topic_once(relay_settings, client):
    settings = relay_settings
    from flywheel.topics import create_topics
    from streams.review.relay import VerdictRelay
    from tests.integration.helpers import read_all

    create_topics(settings)
    prefix = f"{settings.app_id}:review"
    q = ReviewQueue(client, prefix)
    q.enqueue([item(i) for i in range(3)])
    for name in ("alice", "bob", "carol"):
        lease = q.lease(name)
        q.submit(lease, name, verdict(lease, name, passed=name != "bob"))
    relay = VerdictRelay(settings, q)
    assert relay.flush() == 3 and relay.flush() == 0
    assert q.stats().outbox == 0
    got = read_all(settings, settings.topic_verdicts, "verdict")
    assert sorted((k.decode(), d["reviewer"], d["passed"]) for k, _, d in got) == [
        ("r0", "alice", True),
        ("r1", "bob", False),
        ("r2", "carol", True),
    ]
    relay.close()


def test_relay_waits_out_a_broker_outage_and_sends_each_verdict_once(relay_settings, client, tmp_path):
    settings = relay_settings
    from flywheel.embedded import EmbeddedBroker, free_port
    from flywheel.topics import create_topics
    from streams.review.relay import RelayError, VerdictRelay
    from tests.integration.helpers import read_all

    port = free_port()
    down = settings.replace(kafka_bootstrap=f"127.0.0.1:{port}")
    q = ReviewQueue(client, f"{settings.app_id}:review")
    q.enqueue([item(1)])
    lease = q.lease("alice")
    q.submit(lease, "alice", verdict(lease, "alice"))
    relay = VerdictRelay(down, q)
    for _ in range(3):  # the broker is not there: each try fails, the verdict stays in the outbox
        with pytest.raises(RelayError):
            relay.flush(timeout=0.5)
        assert q.stats().outbox == 1
    broker = EmbeddedBroker(tmp_path / "late-broker", port=port)
    try:
        create_topics(down)
        assert relay.flush(timeout=30) == 1 and q.stats().outbox == 0
        relay.close()
        got = read_all(down, down.topic_verdicts, "verdict")
        assert [(k, d["reviewer"]) for k, _, d in got] == [(b"r1", "alice")]  # once, not once per failed try
    finally:
        broker.stop()
