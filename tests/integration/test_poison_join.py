"""Poison through a real broker and real worker processes: a stream mixing realistic traffic with
every malformed class a producer writes (nesting a parser cannot follow, numbers that are no
time, oversized maps, garbage and truncated Avro, far-future events and ticks, ticks that are no
number), across a clean restart and a kill -9. The worker stays up; every bad record is on the
dead-letter topic with its reason; every good request yields exactly one candidate with the
label its traffic intends, also the requests after a future-dated event on the same partition."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from flywheel.sdk import FlywheelProducer
from flywheel.simulate import Traffic, TrafficSpec, generate, send
from flywheel.topics import create_topics
from schemas import Codec
from schemas.codec import TICK_HEADER

from tests.integration.helpers import WorkerProcess, end_offsets, read_all, wait_for

pytestmark = pytest.mark.integration
JSON = [("content-type", b"application/json")]
YEAR_3000_MS = 32_503_680_000_000 - 1


def poison(settings, round_: int) -> list[tuple[str, bytes | None, bytes, list | None, int | None, str]]:
    """(topic, key, value, headers, partition, reason): one of every class, keyed so it is findable."""
    now = int(time.time() * 1000)
    codec = Codec()
    good = {
        "session_id": "s",
        "user_id": "u-poison",
        "event_time": now - 3_600_000,
        "model_version": "m",
        "prompt": "a question",
        "response": "an answer",
    }
    inter, act = settings.topic_interactions, settings.topic_actions

    def interaction_json(rid: str, **fields) -> bytes:
        return json.dumps({**good, "request_id": rid, **fields}).encode()

    def k(name: str) -> bytes:
        return f"poison-{round_}-{name}".encode()

    avro = codec.encode("interaction", {**good, "request_id": k("cut").decode()})
    out = [
        (inter, k("deep"), b"[" * 60_000 + b"]" * 60_000, JSON, None, "too_deep"),  # ~120 KB, under the size limit
        (
            inter,
            k("nested-map"),
            interaction_json(
                k("nested-map").decode(), metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}
            ),
            JSON,
            None,
            "too_deep",
        ),
        (
            inter,
            k("keys"),
            interaction_json(k("keys").decode(), metadata={f"k{i}": "v" for i in range(500)}),
            JSON,
            None,
            "too_many_keys",
        ),
        (
            inter,
            k("items"),
            interaction_json(k("items").decode(), retrieved_context=["doc"] * 5000),
            JSON,
            None,
            "too_many_items",
        ),
        (
            act,
            k("bigint"),
            json.dumps({"request_id": k("bigint").decode(), "user_id": "u", "action": "accepted"})
            .encode()
            .replace(b'"action"', b'"event_time": ' + b"9" * 5000 + b', "action"'),
            JSON,
            None,
            "int_out_of_range",
        ),
        (
            act,
            k("inf"),
            json.dumps({"request_id": k("inf").decode(), "user_id": "u", "action": "accepted"})
            .encode()
            .replace(b'"action"', b'"event_time": 1e999, "action"'),
            JSON,
            None,
            "not_finite",
        ),
        (
            act,
            k("float-time"),
            json.dumps(
                {"request_id": k("float-time").decode(), "user_id": "u", "event_time": now - 1.5, "action": "accepted"}
            ).encode(),
            JSON,
            None,
            "invalid_event",
        ),
        (inter, k("garbage"), bytes(range(256)) * 3, None, None, "undecodable"),
        (inter, k("cut"), avro[: len(avro) // 2], None, None, "undecodable"),
        (
            inter,
            k("future"),
            codec.encode("interaction", {**good, "request_id": k("future").decode(), "event_time": YEAR_3000_MS}),
            None,
            None,
            "future_event",
        ),
        (
            act,
            k("future-act"),
            json.dumps(
                {
                    "request_id": k("future-act").decode(),
                    "user_id": "u",
                    "event_time": now + 86_400_000,
                    "action": "accepted",
                }
            ).encode(),
            JSON,
            None,
            "future_event",
        ),
    ]
    for p in range(settings.partitions):  # a far-future tick and a tick that is no number on every partition
        out.append((inter, None, b"", [(TICK_HEADER, str(YEAR_3000_MS).encode())], p, "future_event"))
        out.append((act, None, b"", [(TICK_HEADER, str(now + 7 * 86_400_000).encode())], p, "future_event"))
        out.append((act, None, b"", [(TICK_HEADER, b"1e999")], p, "invalid_event"))
    return out


def produce_poison(settings, records) -> None:
    p = Producer(
        {"bootstrap.servers": settings.broker_url, "partitioner": "murmur2_random", "message.max.bytes": 1_000_000}
    )
    for topic, key, value, headers, partition, _ in records:
        kw = {"partition": partition} if partition is not None else {}
        p.produce(topic, key=key, value=value, headers=headers, **kw)
    p.flush(30)


def part(traffic: Traffic, lo: float, hi: float) -> Traffic:
    n = len(traffic.events)
    return Traffic(events=traffic.events[int(n * lo) : int(n * hi)], expected=traffic.expected)


def test_poison_among_real_traffic_across_a_restart_and_a_kill_9(settings, tmp_path):
    settings = settings.replace(worker_id="worker-0")
    create_topics(settings)
    spec = TrafficSpec(
        requests=3_000, seed=11, event_rate=0.2, duplicate_rate=0.05, out_of_order_rate=0.1, late_rate=0.03
    )
    traffic = generate(spec, settings.settle_window_ms)
    rounds = [poison(settings, r) for r in range(3)]
    late = set()
    worker = WorkerProcess(settings, tmp_path, "first")
    try:
        with FlywheelProducer(settings) as sdk:
            # round 0: poison first, then a third of the traffic; a clean restart
            produce_poison(settings, rounds[0])
            send(part(traffic, 0, 1 / 3), sdk, settle_window_ms=settings.settle_window_ms, tail_ticks=False)
            wait_for(lambda: end_offsets(settings, settings.topic_candidates) > 300, 120, what="the first candidates")
            assert worker.proc.poll() is None, worker.log_tail()
            assert worker.stop() == 0, worker.log_tail()
            # round 1: poison, a third of the traffic, and a kill -9 mid-stream
            worker = WorkerProcess(settings, tmp_path, "second")
            produce_poison(settings, rounds[1])
            send(part(traffic, 1 / 3, 2 / 3), sdk, settle_window_ms=settings.settle_window_ms, tail_ticks=False)
            wait_for(
                lambda: end_offsets(settings, settings.topic_candidates) > 1_300,
                120,
                what="candidates of the second third",
            )
            assert worker.proc.poll() is None, worker.log_tail()
            worker.kill9()
            # round 2: poison, the rest of the traffic and its closing ticks, read by a restarted worker
            produce_poison(settings, rounds[2])
            send(part(traffic, 2 / 3, 1), sdk, settle_window_ms=settings.settle_window_ms, tail_ticks=True)
        worker = WorkerProcess(settings, tmp_path, "third")
        wait_for(
            lambda: len({k for k, _, _ in read_all(settings, settings.topic_candidates, "candidate")}) >= 3_000,
            240,
            interval=2,
            what="3,000 distinct candidates",
        )
        time.sleep(2)
        assert worker.proc.poll() is None, worker.log_tail()
        # every good request: exactly one candidate (copies after the kill are byte-identical), the intended label
        by_id: dict[str, set[bytes]] = {}
        labels = {}
        for key, value, cand in read_all(settings, settings.topic_candidates, "candidate"):
            by_id.setdefault(cand["request_id"], set()).add(value)
            labels[cand["request_id"]] = cand["user_action"]
        assert set(by_id) == set(traffic.expected), "a poison record became a candidate, or a request was lost"
        assert all(len(v) == 1 for v in by_id.values()), "different candidates for one request"
        wrong = {rid: (labels[rid], want) for rid, want in traffic.expected.items() if labels[rid] != want}
        assert not wrong, f"{len(wrong)} labels differ from the traffic's, e.g. {list(wrong.items())[:5]}"
        # every poison record: on the dead-letter topic with its reason
        letters = read_all(settings, settings.topic_deadletter, "deadletter")
        found = Counter()
        for _, _, d in letters:
            if d["key"] and d["key"].startswith(b"poison-"):
                found[(d["key"], d["reason"])] += 1
            elif TICK_HEADER in (d["headers"] or {}):
                found[("tick", d["source_topic"], d["source_partition"], d["headers"][TICK_HEADER], d["reason"])] += 1
            elif d["reason"] in ("late_action", "orphan_action"):
                late.add(d["key"])
        for records in rounds:
            for topic, key, value, headers, partition, reason in records:
                ident = (key, reason) if key is not None else ("tick", topic, partition, headers[0][1], reason)
                assert found[ident] >= 1, f"{ident} is not on the dead-letter topic"
        # the late actions the traffic makes on purpose are there, and no orphans beyond them
        assert late, "the traffic's late actions should be dead-lettered"
    finally:
        if worker.proc.poll() is None:
            assert worker.stop() == 0, worker.log_tail()
