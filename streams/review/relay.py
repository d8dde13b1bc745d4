"""Moves verdicts from the queue's Redis outbox to `flywheel.review.verdicts`.

An outbox entry is deleted only after the broker acknowledged its event, so a crash re-sends
rather than loses. A re-sent verdict carries the same `verdict_id` and key, and readers keep one
per id. One relay at a time holds a short Redis lock, so two web replicas do not both send, and
one flush at a time runs in a process. After a failed flush the producer's queue is purged, so a
broker outage does not send the same verdicts once per retry when it ends.

An outbox entry that cannot be sent (not JSON, not a verdict, a verdict that breaks its rules or
does not encode) would otherwise fail every flush and hold every verdict behind it: it goes to the
dead-letter topic instead (source: the verdicts topic, partition and offset -1, the entry's id in
the detail; value: the entry's bytes), is counted, and leaves the outbox with the batch.
`outbox_entry` is the per-record path, testable without Redis or a broker.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Any, Callable, Mapping

from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import DeadLetter, InvalidEvent, ReviewVerdict
from flywheel.deadletter import DeadLetters, Source
from flywheel.metrics import ConsumerMetrics, consumer_metrics
from streams.review.queue import ReviewQueue

log = logging.getLogger("flywheel.review")

LOCK_MS = 15_000


class RelayError(RuntimeError):
    pass


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def outbox_entry(codec: Codec, fields: Mapping[Any, Any]) -> tuple[ReviewVerdict, bytes, bytes]:
    """One outbox entry (its stream fields) -> (verdict, key, Avro value); raises when the entry is
    not a verdict the relay can send."""
    raw = fields.get(b"verdict", fields.get("verdict"))
    if raw is None:
        raise InvalidEvent("outbox entry has no verdict field")
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise InvalidEvent(f"outbox verdict is a JSON {type(obj).__name__}, not an object")
    verdict = ReviewVerdict.from_dict(obj).check()
    value = codec.encode("verdict", verdict.to_dict())  # first: it names the field a lone surrogate is in
    codec.decode("verdict", value)  # what its readers would refuse (a NaN, say) must not reach them
    return verdict, verdict.request_id.encode(), value


def entry_source(topic: str, fields: Mapping[Any, Any]) -> Source:
    """Where a dead outbox entry came from: bound for `topic`, never on it (partition, offset -1)."""
    raw = fields.get(b"verdict", fields.get("verdict"))
    value = raw if isinstance(raw, bytes) else _text(raw).encode("utf-8", "replace") if raw is not None else b""
    return Source(topic, -1, -1, None, value)


def relay_record(
    codec: Codec, topic: str, entry_id: Any, fields: Mapping[Any, Any], dead: DeadLetters
) -> tuple[ReviewVerdict, bytes, bytes] | DeadLetter:
    """One outbox entry: (verdict, key, value) to send, or its dead letter (counted once sent)."""
    try:
        return outbox_entry(codec, fields)
    except Exception as exc:  # this entry's fault: it must not hold the others
        return dead.letter(
            entry_source(topic, fields), exc, count=False, where=f"relay, outbox entry {_text(entry_id)}"
        )


class VerdictRelay:
    def __init__(
        self,
        settings: Settings,
        queue: ReviewQueue,
        codec: Codec | None = None,
        on_sent: Callable[[list], None] | None = None,
        metrics: ConsumerMetrics | None = None,
    ):
        self.topic = settings.topic_verdicts
        self.deadletter_topic = settings.topic_deadletter
        self.dead = DeadLetters("relay", metrics or consumer_metrics(), log)
        self.queue = queue
        self.codec = codec or Codec()
        self.on_sent = on_sent
        conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
        self.producer = Producer(
            {
                **conf,
                "bootstrap.servers": settings.broker_url,
                "client.id": "flywheel-review",
                "logger": logging.getLogger("flywheel.review.librdkafka"),
            }
        )
        self._lock = f"{queue.prefix}:relay-lock"
        self._me = secrets.token_hex(8)
        self._local = threading.Lock()

    def flush(self, timeout: float = 10.0) -> int:
        """Sends what the outbox holds; returns how many verdicts reached the broker."""
        if not self._local.acquire(blocking=False):
            return 0  # a flush of this process is running
        try:
            return self._flush(timeout)
        finally:
            self._local.release()

    def _flush(self, timeout: float) -> int:
        redis = self.queue.redis
        if not redis.set(self._lock, self._me, nx=True, px=LOCK_MS):
            return 0  # another replica is sending
        try:
            sent = 0
            while True:
                entries = redis.xrange(f"{self.queue.prefix}:outbox", "-", "+", count=500)
                if not entries:
                    return sent
                failures: list[Any] = []

                def delivered(err, _msg):
                    if err is not None:
                        failures.append(err)

                verdicts, dead = [], []
                for eid, fields in entries:
                    got = relay_record(self.codec, self.topic, eid, fields, self.dead)
                    if isinstance(got, DeadLetter):
                        self.producer.produce(
                            self.deadletter_topic,
                            value=self.codec.encode("deadletter", got.to_dict()),
                            on_delivery=delivered,
                        )
                        dead.append(got)
                        continue
                    verdict, key, value = got
                    self.producer.produce(self.topic, key=key, value=value, on_delivery=delivered)
                    verdicts.append(verdict)
                left = self.producer.flush(timeout)
                if left or failures:
                    self.producer.purge(in_queue=True, in_flight=False)  # the outbox keeps them for the next try
                    self.producer.poll(0)
                    raise RelayError(
                        f"{left} verdicts not acknowledged, {len(failures)} failed"
                        + (f": {failures[0]}" if failures else "")
                    )
                self.queue.ack([_text(eid) for eid, _ in entries])
                for dl in dead:
                    self.dead.sent(dl)
                sent += len(verdicts)
                if self.on_sent and verdicts:
                    self.on_sent(verdicts)
                redis.pexpire(self._lock, LOCK_MS)
        finally:
            if redis.get(self._lock) == self._me.encode():
                redis.delete(self._lock)

    def close(self) -> None:
        self.producer.flush(5)
