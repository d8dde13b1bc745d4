"""The wire format against a real broker: the SDK's bytes, hand-built bytes from a plain client, ticks."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.sdk import TICK_HEADER, DeliveryError, FlywheelError, FlywheelProducer
from flywheel.simulate import TrafficSpec, generate, send
from flywheel.topics import create_topics
from schemas.codec import Codec, headers_dict

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
codec = Codec()


def read_all(settings, topic: str, count: int, timeout: float = 15.0) -> list:
    """Every record of `topic` from the beginning, once `count` have arrived."""
    c = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"wire-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
        assert len(out) == count, f"{topic}: {len(out)} of {count} records arrived"
        extra = c.poll(0.3)  # nothing beyond what was expected
        assert extra is None, extra
        return out
    finally:
        c.close()


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java DefaultPartitioner: murmur2(key) & 0x7fffffff % partitions."""
    m, h = 0x5BD1E995, (0x9747B28C ^ len(key)) & 0xFFFFFFFF
    n4 = len(key) // 4
    for i in range(n4):
        k = int.from_bytes(key[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[4 * n4 :]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def test_sdk_events_decode_and_copartition(settings):
    create_topics(settings)
    ids = [f"req-{i}-ü" for i in range(30)]
    with FlywheelProducer(settings) as p:
        for i, rid in enumerate(ids):
            p.log_interaction(
                request_id=rid,
                session_id="s",
                user_id="u",
                model_version="m",
                prompt=f"what is {i}+1?",
                response=str(i + 1),
                event_time=T0 + i,
                task_type="math",
                metadata={"k": "v"},
            )
            p.log_action(
                request_id=rid,
                user_id="u",
                action="rated" if i % 2 else "accepted",
                rating=4.0 if i % 2 else None,
                event_time=T0 + 1000 + i,
            )
        assert p.flush(10) == 60 and p.delivery_errors == 0 and p.pending == 0
    partitions = {}
    for topic, name in ((settings.topics.interactions, "interaction"), (settings.topics.actions, "action")):
        for m in read_all(settings, topic, len(ids)):
            record = codec.decode(name, m.value(), headers_dict(m.headers()))
            assert m.key() == record["request_id"].encode("utf-8")
            assert m.partition() == java_partition(m.key(), settings.partitions)
            partitions.setdefault(record["request_id"], set()).add(m.partition())
    assert set(partitions) == set(ids)
    assert all(len(ps) == 1 for ps in partitions.values())  # same partition number in both topics
    assert len({next(iter(ps)) for ps in partitions.values()}) > 1  # and spread over several


def crc64_avro(data: bytes) -> int:
    """The Avro specification's Rabin fingerprint, as docs/wire-format.md states it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_plain_client_avro_and_json_decode(settings):
    create_topics(settings)
    raw = json.loads((Path(__file__).parents[2] / "schemas" / "avro" / "action.v1.avsc").read_text())
    parsed = fastavro.parse_schema(raw)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fp = crc64_avro(canonical.encode()).to_bytes(8, "little")
    assert fp == codec.current("action").fingerprint
    body = io.BytesIO()
    record = {
        "request_id": "hand-1",
        "user_id": "u",
        "event_time": T0,
        "action": "corrected",
        "correction": "five",
        "rating": None,
        "session_id": "s",
    }
    fastavro.schemaless_writer(body, parsed, record)
    avro_value = b"\xc3\x01" + fp + body.getvalue()
    json_value = json.dumps({"request_id": "hand-2", "user_id": "u", "event_time": T0, "action": "thumbs_up"}).encode()

    p = Producer({"bootstrap.servers": settings.broker_url, "partitioner": "murmur2_random"})
    p.produce(settings.topics.actions, key=b"hand-1", value=avro_value)
    p.produce(
        settings.topics.actions, key=b"hand-2", value=json_value, headers=[("content-type", b"application/json")]
    )
    assert p.flush(10) == 0
    got = {
        m.key(): codec.decode("action", m.value(), headers_dict(m.headers()))
        for m in read_all(settings, settings.topics.actions, 2)
    }
    assert got[b"hand-1"] == record
    assert got[b"hand-2"] == {
        "request_id": "hand-2",
        "user_id": "u",
        "event_time": T0,
        "action": "thumbs_up",
        "correction": None,
        "rating": None,
        "session_id": "",
    }  # defaults filled in
    assert codec.encode("action", record) == avro_value  # the SDK writes the very same bytes


def test_heartbeat_reaches_every_partition(settings):
    create_topics(settings)
    with FlywheelProducer(settings) as p:
        assert p.heartbeat(T0 + 5) == 2 * settings.partitions
        p.flush(10)
    for topic in (settings.topics.interactions, settings.topics.actions):
        msgs = read_all(settings, topic, settings.partitions)
        assert sorted(m.partition() for m in msgs) == list(range(settings.partitions))
        for m in msgs:
            assert headers_dict(m.headers())[TICK_HEADER] == str(T0 + 5).encode()
            assert not m.value()


def test_missing_topic_fails_loudly(settings):
    """No create_topics: the SDK must not auto-create a 1-partition topic that breaks co-partitioning."""
    errors = []
    p = FlywheelProducer(
        settings,
        config={"message.timeout.ms": 1500},
        on_delivery_error=lambda rid, err: errors.append((rid, err.name())),
    )
    with pytest.raises(FlywheelError, match="not usable"):
        p.heartbeat(T0)
    p.log_action(request_id="r-1", user_id="u", action="accepted", event_time=T0)
    with pytest.raises(DeliveryError, match="1 events failed") as info:
        p.flush(10)
    assert info.value.failures[0].request_id == "r-1" and errors == [("r-1", "_MSG_TIMED_OUT")]
    assert p.delivery_errors == 1
    p.close()  # the failure was reported once, by that flush
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": settings.broker_url}).list_topics(timeout=5).topics
    assert settings.topics.actions not in topics


def test_simulated_traffic_lands(settings):
    create_topics(settings)
    t = generate(TrafficSpec(60, seed=1, start_ms=T0, duplicate_rate=0.2), settings.settle_window_ms)
    with FlywheelProducer(settings) as p:
        counts = send(t, p, settle_window_ms=settings.settle_window_ms)
    assert counts["ticks"] == 2 * settings.partitions
    inter = read_all(settings, settings.topics.interactions, counts["interactions"] + settings.partitions)
    acts = read_all(settings, settings.topics.actions, counts["actions"] + settings.partitions)
    decoded = [codec.decode("interaction", m.value()) for m in inter if m.value()]
    assert {r["request_id"] for r in decoded} == set(t.expected)
    assert sum(1 for m in acts if m.value()) == counts["actions"]
