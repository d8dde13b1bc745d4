"""The review sampler in a real worker: gate decisions on the broker in, items in the Redis queue out,
prioritised, never twice (not even after a kill -9 and a replay), bad records to the dead letters."""

from __future__ import annotations

import pytest
import redis
from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import TrainingCandidate
from streams.review.queue import ReviewQueue, review_prefix
from tests.integration.helpers import WorkerProcess, forget_redis, metric_value, read_all, settled, wait_for

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01


@pytest.fixture
def review_settings(settings):
    s = settings.replace(roles="review", gate_batch_size=64, gate_batch_ms=100, worker_id="review-0")
    yield s
    forget_redis(s)


def candidate(
    i: int, action: str = "accepted", task: str = "qa", reasons: list[str] | None = None
) -> TrainingCandidate:
    return TrainingCandidate(
        request_id=f"req-{i:05d}",
        timestamp=T0 + i * 1000,
        user_id=f"u{i % 50}",
        session_id=f"s{i}",
        prompt=f"question {i}",
        response=f"answer {i} " * 10,
        user_action=action,
        task_type=task,
        correction="better answer" if action == "corrected" else "",
        label="sft_correction" if action == "corrected" else "sft_positive",
        model_version="m1",
        quality_score=0.8 if reasons is None else 0.3,
        scores={"quality": 0.8 if reasons is None else 0.3},
        reasons=reasons or [],
        policy_version="default-1@x",
    )


def produce(s, records: list[tuple[str, bytes, bytes]]) -> None:
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    for topic, key, value in records:
        p.produce(topic, key=key, value=value)
    assert p.flush(30) == 0


def test_sampler_queues_prioritised_items_once_and_survives_kill(review_settings, tmp_path):
    s = review_settings
    create_topics(s)
    codec = Codec()
    passed = [
        candidate(i, "corrected" if i % 10 == 0 else "accepted") for i in range(1500)
    ]  # room under the 10 % ceiling
    rare = [candidate(5000 + i, task="rare") for i in range(20)]  # 1.3 % of traffic: the long tail
    audit = [candidate(2000 + i, reasons=["low_quality"]) for i in range(300)]
    toxic = [candidate(3000 + i, reasons=["toxic"]) for i in range(100)]

    def encoded(topic, cands):
        return [(topic, c.request_id.encode(), codec.encode("candidate", c.to_dict())) for c in cands]

    worker = WorkerProcess(s, tmp_path)
    try:
        produce(s, encoded(s.topic_passed, passed) + [(s.topic_passed, b"bad", b"not avro at all")])
        wait_for(
            lambda: metric_value(worker.metrics(), "flywheel_review_considered_total") >= len(passed),
            120,
            what="the common traffic considered",
        )
        produce(s, encoded(s.topic_passed, rare) + encoded(s.topic_rejected, audit + toxic))
        total = len(passed) + len(rare) + len(audit) + len(toxic)
        wait_for(
            lambda: metric_value(worker.metrics(), "flywheel_review_considered_total") >= total,
            120,
            what=f"{total} candidates considered",
        )
        first = worker.metrics()
        worker.kill9()  # the batch offsets may not be committed: the replay must queue nothing twice
    finally:
        worker.stop()

    client = redis.Redis.from_url(s.redis_url)
    q = ReviewQueue(client, review_prefix(s))
    stats = q.stats()
    queued = stats.counts["queued"]
    items = {}
    while (lease := q.lease("checker")) is not None:  # drain in priority order
        items[lease.item.item_id] = lease.item
        q.release(lease, "checker")
    assert len(items) == queued == stats.ready
    assert metric_value(first, "flywheel_review_sampled_total") == queued

    ids = set(items)
    corrections = {c.request_id for c in passed if c.user_action == "corrected"}
    rare = {c.request_id for c in rare}
    assert not ids & {c.request_id for c in toxic}  # never put what the toxicity filter caught before people
    assert len(ids & corrections) > 0.3 * len(corrections)  # corrections first
    assert rare <= ids  # 20 rare items, all below the rare minimum per window
    share = len(ids & ({c.request_id for c in passed} - corrections)) / (len(passed) - len(corrections))
    assert 0.005 < share < 0.07  # the random remainder
    audits = ids & {c.request_id for c in audit}
    assert 0 <= len(audits) <= 15
    for i in audits:
        assert items[i].sampled_for[0] == "gate_audit" and not items[i].gate_passed
    for it in items.values():
        assert 0 < it.probability <= 1 and it.source.count("/") == 2 and it.sampled_for
        if it.item_id in corrections:
            assert it.sampled_for[0] == "correction"

    dead = read_all(s, s.topic_deadletter, "deadletter")
    assert [(k, d["reason"], d["value"]) for k, _, d in dead] == [(b"bad", "undecodable", b"not avro at all")]

    # restart after the kill: whatever is replayed, nothing is queued twice. The draw is the same on a
    # replay, but the probability follows the statistics since the last snapshot, so a replayed candidate
    # that was not sampled before may be now: once, as a new item, never a second copy of a queued one.
    worker = WorkerProcess(s, tmp_path)
    try:
        produce(
            s, [(s.topic_passed, c.request_id.encode(), codec.encode("candidate", c.to_dict())) for c in passed[:100]]
        )
        wait_for(
            lambda: metric_value(worker.metrics(), "flywheel_review_considered_total") >= 100,
            120,
            what="replayed candidates considered",
        )
        second = settled(worker.metrics, "flywheel_review_considered_total")  # replays of the killed run too
    finally:
        assert worker.stop() == 0
    grown = q.stats().counts["queued"] - queued
    assert grown == metric_value(second, "flywheel_review_sampled_total")
    again = set()
    while (lease := q.lease("second-checker")) is not None:
        assert lease.item.item_id not in again
        again.add(lease.item.item_id)
        q.release(lease, "second-checker")
    assert ids <= again and len(again) == len(ids) + grown
    assert again - ids <= {c.request_id for c in passed} - ids and grown <= 10
