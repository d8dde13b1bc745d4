"""A record can fail; a worker cannot, on the real broker and Redis: malformed records beside valid
ones on the gate's input, the review sampler's, the verdict relay's outbox and the trainer's
dataset-ready topic. Each consumer stays up, every bad record is on the dead-letter topic with a
reason (counted), and every valid one is processed.

Some of these records stopped a consumer for good before: a JSON candidate whose request id is a
lone surrogate decodes, but no Redis key or Avro record can hold it, so the gate retried its
batch for ever; one outbox entry that did not decode failed every flush of the relay, and every
verdict behind it waited; a ready event naming a dataset that was never published failed its
cycle on every retry."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.topics import create_topics
from schemas.codec import MAGIC, Codec
from schemas.records import DatasetReady, ModelEvent, ReviewVerdict, TrainingCandidate
from tests.integration.helpers import WorkerProcess, forget_redis, metric_value, read_all, wait_for

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
JSON = {"content-type": b"application/json"}
CODEC = Codec()


class Lenient(Codec):
    """Reads a topic this test put poison on too: what does not decode reads as None."""

    def decode(self, name, data, headers=None):
        try:
            return super().decode(name, data, headers)
        except Exception:
            return None


LENIENT = Lenient()


def produce(s, records) -> None:
    """(topic, key, value, headers) in order, each on partition 0 unless the topic has one only."""
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    for topic, key, value, headers in records:
        p.produce(topic, key=key, value=value, headers=headers or None)
    assert p.flush(30) == 0


def candidate(i: int) -> TrainingCandidate:
    return TrainingCandidate(
        request_id=f"ok-{i:03d}",
        timestamp=T0 + i * 1000,
        user_id=f"u{i % 7}",
        session_id=f"s{i}",
        prompt=f"How do I reset my password, case {i}?",
        response=f"Open the settings page, choose security, then reset password and follow the e-mail link, case {i}. "
        * 3,
        user_action="accepted",
        task_type="support",
        model_version="m1",
        actions=["accepted"],
    )


def poison_candidates(s) -> dict[bytes, tuple[bytes, dict, set[str]]]:
    """Malformed records for a candidate topic: key -> (value, headers, acceptable reasons)."""
    valid = CODEC.encode("candidate", candidate(999).to_dict())

    def as_json(c: TrainingCandidate, **changes) -> dict:  # JSON has no bytes: such fields take their defaults
        return {**{k: v for k, v in c.to_dict().items() if not isinstance(v, bytes)}, **changes}

    surrogate = as_json(candidate(998), request_id="\ud800")
    empty_id = as_json(candidate(997), request_id="  ")
    return {
        b"poison-bytes": (b"not avro at all", {}, {"undecodable"}),
        b"poison-marker": (MAGIC + CODEC.current("candidate").fingerprint + b"\xff\xfe garbage", {}, {"undecodable"}),
        b"poison-truncated": (valid[: len(valid) // 2], {}, {"undecodable"}),
        b"poison-deep-json": (b"[" * 100_000 + b"]" * 100_000, JSON, {"too_deep", "invalid_json"}),
        # invalid_event too: since candidate v3 the codec refuses every JSON candidate (its bytes field's
        # default, "", reads as a str); either way the record is dead-lettered and nothing waits behind it
        b"poison-surrogate": (json.dumps(surrogate).encode(), JSON, {"unencodable", "invalid_event"}),
        b"poison-empty-id": (json.dumps(empty_id).encode(), JSON, {"invalid_candidate", "invalid_event"}),
        b"poison-other-event": (
            CODEC.encode("model_event", ModelEvent(event_id="e", event_type="candidate", created_at=T0).to_dict()),
            {},
            {"invalid_event"},
        ),
    }


@pytest.fixture
def poison_settings(settings):
    s = settings.replace(roles="gate,review", gate_batch_size=64, gate_batch_ms=100, worker_id="poison-0")
    create_topics(s)
    yield s
    forget_redis(s)


def test_the_gate_and_the_review_sampler_dead_letter_poison_and_go_on(poison_settings, tmp_path):
    s = poison_settings
    valid = [candidate(i) for i in range(40)]
    bad = poison_candidates(s)
    records, poison = [], sorted(bad.items())
    for i, c in enumerate(valid):  # poison between valid records, in the same batches
        records.append((s.topic_candidates, c.request_id.encode(), CODEC.encode("candidate", c.to_dict()), {}))
        if i % 5 == 2 and poison:
            key, (value, headers, _) = poison.pop()
            records.append((s.topic_candidates, key, value, headers))
    assert not poison
    review_bad = {
        b"review-bytes": (b"\x00\x01 not a decision", {}, {"undecodable"}),
        b"review-surrogate": (bad[b"poison-surrogate"][0], JSON, {"unencodable", "invalid_event"}),
    }
    worker = WorkerProcess(s, tmp_path)
    try:
        produce(s, records + [(s.topic_passed, k, v, h) for k, (v, h, _) in review_bad.items()])

        def decided() -> set[bytes]:
            return {
                k
                for k, _, d in read_all(s, s.topic_passed, "candidate", LENIENT)
                + read_all(s, s.topic_rejected, "candidate")
                if d is not None
            }

        wait_for(
            lambda: {c.request_id.encode() for c in valid} <= decided(),
            240,
            interval=2,
            what="a decision on every valid candidate",
        )
        wait_for(
            lambda: len(read_all(s, s.topic_deadletter, "deadletter")) >= len(bad) + len(review_bad),
            120,
            what="a dead letter for every poison record",
        )
        wait_for(
            lambda: metric_value(worker.metrics(), "flywheel_review_considered_total") >= len(valid),
            120,
            what="every decision considered by the review sampler",
        )
        metrics = worker.metrics()
        assert worker.proc.poll() is None, worker.log_tail()  # still running
    finally:
        assert worker.stop() == 0

    dead = {k: d for k, _, d in read_all(s, s.topic_deadletter, "deadletter")}
    for key, (value, headers, reasons) in [*bad.items(), *review_bad.items()]:
        d = dead[key]
        assert d["reason"] in reasons, (key, d["reason"], d["detail"])
        assert d["value"] == value and d["headers"] == headers and d["detail"]
        assert d["source_topic"] == (s.topic_candidates if key in bad else s.topic_passed)
        assert "\ud800" not in d["detail"] and "password" not in d["detail"]
    assert len(dead) == len(bad) + len(review_bad)  # once each: nothing dead-lettered twice

    passed = [r for r in read_all(s, s.topic_passed, "candidate", LENIENT) if r[2] is not None]
    rejected = read_all(s, s.topic_rejected, "candidate")
    assert sorted(k for k, _, _ in passed + rejected if k.startswith(b"ok-")) == sorted(
        c.request_id.encode() for c in valid
    )
    assert metric_value(metrics, "flywheel_consumer_deadletters_total", consumer="gate") == len(bad)
    assert metric_value(metrics, "flywheel_consumer_deadletters_total", consumer="review") == len(review_bad)
    assert metric_value(metrics, "flywheel_gate_decisions_total") == len(valid)


def test_the_verdict_relay_dead_letters_outbox_entries_it_cannot_send_and_sends_the_rest(settings):
    from flywheel.metrics import ConsumerMetrics
    from streams.review.queue import ReviewQueue, review_prefix
    from streams.review.relay import VerdictRelay

    s = settings
    create_topics(s)
    client = redis.Redis.from_url(s.redis_url)
    queue = ReviewQueue(client, review_prefix(s))
    outbox = f"{queue.prefix}:outbox"

    def verdict(i: int, **changes) -> dict:
        v = ReviewVerdict(f"req-{i}:alice", f"req-{i}", "alice", 4, 4, 5, True, T0, T0, True, task_type="qa").to_dict()
        return {**v, **changes}

    entries = [
        ("good-1", {"verdict": json.dumps(verdict(1))}),
        ("not-json", {"verdict": b"\xff not json"}),
        ("a-list", {"verdict": json.dumps([verdict(2)])}),
        ("no-field", {"other": b"x"}),
        ("bad-score", {"verdict": json.dumps(verdict(3, accuracy=9))}),
        ("bad-type", {"verdict": json.dumps(verdict(4, quality_score="high"))}),
        ("surrogate", {"verdict": json.dumps(verdict(5, reviewer="\ud800"))}),
        ("missing", {"verdict": json.dumps({"request_id": "req-6"})}),
        ("good-2", {"verdict": json.dumps(verdict(7))}),
    ]
    for _, fields in entries:
        client.xadd(outbox, fields)
    metrics = ConsumerMetrics()
    relay = VerdictRelay(s, queue, metrics=metrics)
    try:
        assert relay.flush() == 2 and relay.flush() == 0  # the poison did not hold the verdicts behind it
    finally:
        relay.close()
    assert client.xlen(outbox) == 0
    sent = read_all(s, s.topic_verdicts, "verdict")
    assert sorted(d["request_id"] for _, _, d in sent) == ["req-1", "req-7"]
    dead = [d for _, _, d in read_all(s, s.topic_deadletter, "deadletter")]
    assert len(dead) == len(entries) - 2
    assert {d["source_topic"] for d in dead} == {s.topic_verdicts} and {d["source_offset"] for d in dead} == {-1}
    assert sorted(d["reason"] for d in dead) == sorted(["invalid_event"] * 5 + ["unencodable"] * 2)
    assert all("outbox entry" in d["detail"] for d in dead)
    total = sum(
        metrics.registry.get_sample_value("flywheel_consumer_deadletters_total", {"consumer": "relay", "reason": r})
        or 0
        for r in ("invalid_event", "unencodable")
    )
    assert total == len(dead)
    client.close()


def test_the_trainer_dead_letters_poison_ready_events_and_handles_the_valid_one(settings, monkeypatch):
    from flywheel.datastore import DatasetStore, manifest_json
    from trainer.service import TrainerService, build

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # polls that wait for records instead of resting between empty ones: this is about what a record
    # does to the trainer, not how it idles (resting, it may take a minute to come to seven records)
    s = settings.replace(empty_fetch_backoff_ms=0)
    create_topics(s)
    store = DatasetStore(s.datasets_url)
    staging = store.staging("ds-ok")
    with store.fs.open(f"{staging}/manifest.json", "wb") as f:
        f.write(manifest_json({"dataset_id": "ds-ok", "shards": [], "counts": {"records": 0}}))
    store.publish("ds-ok")

    def ready(dataset_id: str, **changes) -> dict:
        return {
            **DatasetReady(
                dataset_id=dataset_id,
                uri=f"{s.datasets_url}/{dataset_id}",
                window_start=T0,
                window_end=T0 + 7 * 86_400_000,
                lag_ms=1000,
                policy_version="p@1",
                counts={"records": 1},
                first_event_time=T0,
                sealed_at=T0,
            ).to_dict(),
            **changes,
        }

    bad = {
        b"bytes": (b"garbage", {}, "undecodable"),
        b"deep": (b"[" * 100_000 + b"]" * 100_000, JSON, {"too_deep", "invalid_json"}),
        b"path": (json.dumps(ready("../../etc")).encode(), JSON, "invalid_event"),
        b"time": (CODEC.encode("dataset_ready", ready("ds-ok", first_event_time=-(2**63))), {}, "invalid_event"),
        b"other": (
            CODEC.encode("model_event", ModelEvent(event_id="e", event_type="candidate", created_at=T0).to_dict()),
            {},
            "invalid_event",
        ),
        b"unknown": (CODEC.encode("dataset_ready", ready("ds-never-published")), {}, "unknown_dataset"),
    }
    produce(
        s,
        [(s.topic_datasets_ready, k, v, h) for k, (v, h, _) in bad.items()]
        + [(s.topic_datasets_ready, b"ds-ok", CODEC.encode("dataset_ready", ready("ds-ok")), {})],
    )

    registry, _golden, cycle, ds_store, _ = build(s)
    svc = TrainerService(s, cycle, registry, ds_store)
    stop = threading.Event()
    runner = threading.Thread(target=svc.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(
            lambda: [e for _, _, e in read_all(s, s.topic_models, "model_event")],
            120,
            what="the valid event's outcome",
        )
        wait_for(
            lambda: len(read_all(s, s.topic_deadletter, "deadletter")) >= len(bad),
            60,
            what="every poison event dead-lettered",
        )
        assert runner.is_alive()  # the trainer stays up
    finally:
        stop.set()
        runner.join(30)
    (event,) = [e for _, _, e in read_all(s, s.topic_models, "model_event")]
    assert event["dataset_id"] == "ds-ok" and event["event_type"] == "refused"  # no golden set: processed, not trained
    dead = {k: d for k, _, d in read_all(s, s.topic_deadletter, "deadletter")}
    assert set(dead) == set(bad)
    for key, (value, _headers, reasons) in bad.items():
        assert dead[key]["reason"] in ({reasons} if isinstance(reasons, str) else reasons), (key, dead[key])
        assert dead[key]["value"] == value and dead[key]["source_topic"] == s.topic_datasets_ready
    assert registry.dataset_outcome("ds-ok")["outcome"] == "refused"
