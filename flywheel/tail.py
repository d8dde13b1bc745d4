"""`flywheel tail`: decoded events from a topic as JSON lines, for people and scripts."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Iterator, TextIO

from confluent_kafka import Consumer, TopicPartition

from flywheel.settings import Settings
from schemas.codec import TICK_HEADER, Codec, DecodeError, headers_dict


def event_type_of(settings: Settings, topic: str) -> str | None:
    return {
        settings.topic_interactions: "interaction",
        settings.topic_actions: "action",
        settings.topic_candidates: "candidate",
        settings.topic_deadletter: "deadletter",
        settings.topic_passed: "candidate",
        settings.topic_rejected: "candidate",
        settings.topic_verdicts: "verdict",
        settings.topic_datasets_ready: "dataset_ready",
        settings.topic_erasure: "erasure",
        settings.topic_models: "model_event",
    }.get(topic)


def resolve_topic(settings: Settings, name: str) -> str:
    """Accept a logical name (interactions, actions, candidates, passed, rejected, verdicts, datasets, erasure, models, deadletter) or a full topic name."""
    logical = {
        "interactions": settings.topic_interactions,
        "actions": settings.topic_actions,
        "candidates": settings.topic_candidates,
        "deadletter": settings.topic_deadletter,
        "passed": settings.topic_passed,
        "rejected": settings.topic_rejected,
        "verdicts": settings.topic_verdicts,
        "datasets": settings.topic_datasets_ready,
        "erasure": settings.topic_erasure,
        "models": settings.topic_models,
    }
    return logical.get(name, name)


def _jsonable(value):
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def read(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = True,
    max_events: int | None = None,
    idle_timeout: float = 5.0,
    codec: Codec | None = None,
    to_end: bool = False,
) -> Iterator[dict]:
    """Yield decoded events until `max_events` or `idle_timeout` seconds pass with nothing new, or,
    with `to_end`, until every partition's end as of the start has been read.
    Reads without a consumer group commit, so tailing never moves anyone's offsets."""
    codec = codec or Codec()
    name = event_type_of(settings, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"flywheel-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise SystemExit(f"flywheel: error: topic {topic!r} does not exist")
        consumer.assign([TopicPartition(topic, p, -2 if from_beginning else -1) for p in md.partitions])
        marks = (
            {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in md.partitions}
            if to_end
            else {}
        )
        ends = {p: high for p, (low, high) in marks.items() if high > low}
        seen, last = 0, time.monotonic()
        while max_events is None or seen < max_events:
            if to_end and not ends:
                return
            msg = consumer.poll(0.2)
            if msg is None:
                if time.monotonic() - last > idle_timeout:
                    return
                continue
            if msg.error():
                continue
            last = time.monotonic()
            seen += 1
            offset, key, value = msg.offset() or 0, msg.key(), msg.value()
            if to_end and offset + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
            meta = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": offset,
                "key": key.decode(errors="replace") if key else None,
            }
            headers = headers_dict(msg.headers())
            if TICK_HEADER in headers:
                tick = headers[TICK_HEADER]
                yield (
                    {**meta, "tick": int(tick)}
                    if tick.isdigit() and len(tick) <= 16
                    else {**meta, "error": "invalid_tick"}
                )
                continue
            if value is None:  # a tombstone: nothing to decode
                yield {**meta, "tombstone": True}
                continue
            try:
                event = codec.decode(name, value, headers) if name else None
                yield {**meta, "event": _jsonable(event) if event is not None else {"raw": _jsonable(value)}}
            except DecodeError as exc:
                yield {**meta, "error": exc.reason, "detail": exc.detail}
    finally:
        consumer.close()


def tail(settings: Settings, topic: str, out: TextIO, **kw) -> int:
    n = 0
    for event in read(settings, resolve_topic(settings, topic), **kw):
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
        out.flush()
        n += 1
    return n
