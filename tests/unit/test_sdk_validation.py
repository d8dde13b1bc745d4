"""FlywheelProducer refuses bad events at the call, before anything is queued; no broker needed."""

from __future__ import annotations

import socket
import time

import pytest

from flywheel.sdk import (
    DEFAULT_CONFIG,
    BackpressureError,
    DeliveryError,
    EventTooLarge,
    FlywheelError,
    FlywheelProducer,
)
from flywheel.settings import Settings
from schemas.records import InvalidEvent

T = 1_700_000_000_000
SECRET = "SECRET-PROMPT-TEXT"


@pytest.fixture
def silent_bootstrap():
    """A socket that accepts connections and never answers: nothing can be sent, and unlike a refused
    port it raises no librdkafka error events, which len(Producer) would count as queued."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def producer(silent_bootstrap):
    p = FlywheelProducer(Settings(kafka_bootstrap=silent_bootstrap, max_event_bytes=4096), config={"log_level": 0})
    yield p
    p._producer.purge()
    p._producer.poll(0)


def interaction(**over):
    kw = dict(
        request_id="r-1",
        session_id="s-1",
        user_id="u-1",
        model_version="m-1",
        prompt=SECRET,
        response="4",
        event_time=T,
    )
    kw.update(over)
    return kw


def action(**over):
    kw = dict(request_id="r-1", user_id="u-1", action="accepted", event_time=T)
    kw.update(over)
    return kw


INTERACTION_CASES = [
    ("request_id", dict(request_id="")),
    ("request_id", dict(request_id="   ")),
    ("request_id", dict(request_id=None)),
    ("request_id", dict(request_id=42)),
    ("request_id", dict(request_id="x" * 300)),
    ("user_id", dict(user_id="")),
    ("model_version", dict(model_version="")),
    ("prompt", dict(prompt=b"bytes")),
    ("response", dict(response=None)),
    ("event_time", dict(event_time=1.7e12)),
    ("event_time", dict(event_time=-5)),
    ("event_time", dict(event_time=True)),
    ("event_time", dict(event_time=1_700_000_000)),  # seconds, not ms
    ("session_id", dict(session_id=5)),
    ("variant", dict(variant=None)),
    ("task_type", dict(task_type=3)),
    ("latency_ms", dict(latency_ms="fast")),
    ("latency_ms", dict(latency_ms=True)),
    ("uncertainty", dict(uncertainty="high")),
    ("retrieved_context", dict(retrieved_context=[SECRET, 3])),
    ("retrieved_context", dict(retrieved_context=SECRET)),
    ("metadata", dict(metadata={"k": 1})),
    ("metadata", dict(metadata=[("k", "v")])),
]

ACTION_CASES = [
    ("request_id", dict(request_id="")),
    ("request_id", dict(request_id=None)),
    ("action", dict(action="liked")),
    ("action", dict(action=None)),
    ("correction", dict(action="corrected")),
    ("correction", dict(action="corrected", correction="  ")),
    ("rating", dict(action="rated")),
    ("rating", dict(action="rated", rating=7)),
    ("rating", dict(action="rated", rating="5")),
    ("rating", dict(action="thumbs_up", rating="5")),
    ("correction", dict(correction=12)),
    ("session_id", dict(session_id=None)),
    ("event_time", dict(event_time="now")),
    ("user_id", dict(user_id=7)),
]


def _assert_clear(exc: Exception, field: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert field in msg, msg
    assert SECRET not in msg  # privacy: prompt/context text never reaches an error message


CASES = [("log_interaction", interaction, f, o) for f, o in INTERACTION_CASES] + [
    ("log_action", action, f, o) for f, o in ACTION_CASES
]


@pytest.mark.parametrize("call,build,field,over", CASES, ids=[f"{c[0][4:]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_invalid_event_raises_before_sending(producer, call, build, field, over):
    with pytest.raises(InvalidEvent) as info:
        getattr(producer, call)(**build(**over))
    _assert_clear(info.value, field)
    assert len(producer._producer) == 0


def test_unknown_action_lists_the_known_ones(producer):
    with pytest.raises(InvalidEvent, match=r"action\.action must be one of accepted, copied.*got 'liked'"):
        producer.log_action(**action(action="liked"))


def test_oversized_event_names_size_and_limit(producer):
    with pytest.raises(EventTooLarge) as info:
        producer.log_interaction(**interaction(response="word " * 1000))
    msg = str(info.value)
    assert "over the limit of 4096" in msg and "largest field: response" in msg
    size = int(msg.split("encodes to ")[1].split(" bytes")[0])
    assert size > 4096
    assert "word word" not in msg and isinstance(info.value, InvalidEvent)
    assert len(producer._producer) == 0


def test_valid_events_are_queued_without_blocking(producer):
    began = time.monotonic()
    producer.log_interaction(
        **interaction(retrieved_context=["a"], latency_ms=12, uncertainty=0.2, metadata={"k": "v"})
    )
    producer.log_action(**action(action="rated", rating=4))
    producer.log_action(**action(action="corrected", correction="5", event_time=None))
    assert time.monotonic() - began < 0.5
    assert len(producer._producer) == 3 and producer.pending == 3


def test_heartbeat_rejects_bad_time_before_metadata(producer):
    for bad in (0, -1, "123", 1.5, True):
        with pytest.raises(InvalidEvent, match="event_time_ms"):
            producer.heartbeat(bad)
    assert len(producer._producer) == 0


def test_closed_producer_refuses_events():
    p = FlywheelProducer(Settings(kafka_bootstrap="127.0.0.1:1"), config={"log_level": 0})
    p.close(timeout=0)
    with pytest.raises(FlywheelError, match="closed"):
        p.log_action(**action())
    p.close()  # idempotent


def test_close_reports_undelivered_and_purges():
    seen = []
    p = FlywheelProducer(
        Settings(kafka_bootstrap="127.0.0.1:1"),
        config={"log_level": 0},
        on_delivery_error=lambda rid, err: seen.append((rid, err.name())),
    )
    p.log_action(**action(request_id="r-9"))
    began = time.monotonic()
    with pytest.raises(DeliveryError, match="1 events still queued") as info:
        p.close(timeout=0.2)
    assert info.value.remaining == 1
    assert time.monotonic() - began < 5  # confluent-kafka's own close() would wait forever
    assert seen == [("r-9", "_PURGE_QUEUE")] and p.delivery_errors == 1
    assert p.recent_failures[0].request_id == "r-9"


def test_callback_exception_does_not_escape():
    def boom(rid, err):
        raise RuntimeError("app bug")

    p = FlywheelProducer(Settings(kafka_bootstrap="127.0.0.1:1"), config={"log_level": 0}, on_delivery_error=boom)
    p.log_action(**action())
    with pytest.raises(DeliveryError):
        p.close(timeout=0)
    assert p.delivery_errors == 1


def test_bounded_backpressure():
    p = FlywheelProducer(
        Settings(kafka_bootstrap="127.0.0.1:1"),
        max_block_s=0.2,
        config={"log_level": 0, "queue.buffering.max.messages": 1},
    )
    p.log_action(**action())
    began = time.monotonic()
    with pytest.raises(BackpressureError, match="send queue full") as info:
        p.log_action(**action(request_id="r-2"))
    assert 0.15 < time.monotonic() - began < 2
    assert isinstance(info.value, BufferError)
    with pytest.raises(DeliveryError):
        p.close(timeout=0)


def test_config_defaults_and_overrides(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    p = FlywheelProducer(config={"linger.ms": 50, "log_level": 0})  # settings from the environment
    assert p.settings.kafka_bootstrap == "127.0.0.1:1"
    assert p.config["partitioner"] == "murmur2_random" and p.config["enable.idempotence"] is True
    assert p.config["acks"] == "all" and p.config["compression.type"] == "lz4"
    assert p.config["linger.ms"] == 50 and DEFAULT_CONFIG["linger.ms"] == 5
    p.close(timeout=0)


def test_bytes_match_the_worked_example_in_the_docs(producer):
    """docs/wire-format.md spells these bytes out; a schema change must update the document."""
    from schemas.records import UserAction

    a = UserAction(request_id="r-1", user_id="u-7", event_time=1_700_000_000_000, action="accepted", session_id="s-1")
    expected = bytes.fromhex("c301 09f5de8f27756222 06722d31 06752d37 80a0abfef962 00 00 00 06732d31")
    assert producer.encode(a) == expected
    assert producer.codec.current("interaction").fingerprint.hex() == "7874b0ffac231c35"
