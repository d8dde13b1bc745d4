"""Moves verdicts from the queue's Redis outbox to `flywheel.review.verdicts`.

An outbox entry is deleted only after the broker acknowledged its event, so a crash re-sends
rather than loses. A re-sent verdict carries the same `verdict_id` and key, and readers keep one
per id. One relay at a time holds a short Redis lock, so two web replicas do not both send, and
one flush at a time runs in a process. After a failed flush the producer's queue is purged, so a
broker outage does not send the same verdicts once per retry when it ends.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any, Callable

from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import Settings
from schemas.codec import Codec
from streams.review.queue import ReviewQueue

log = logging.getLogger("flywheel.review")

LOCK_MS = 15_000


class RelayError(RuntimeError):
    pass


class VerdictRelay:
    def __init__(self, settings: Settings, queue: ReviewQueue, codec: Codec | None = None,
                 on_sent: Callable[[list], None] | None = None):
        self.topic = settings.topic_verdicts
        self.queue = queue
        self.codec = codec or Codec()
        self.on_sent = on_sent
        conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
        self.producer = Producer({**conf, "bootstrap.servers": settings.broker_url, "client.id": "flywheel-review",
                                  "logger": logging.getLogger("flywheel.review.librdkafka")})
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
                entries = self.queue.outbox(500)
                if not entries:
                    return sent
                failures: list[Any] = []

                def delivered(err, _msg):
                    if err is not None:
                        failures.append(err)

                for _, verdict in entries:
                    self.producer.produce(self.topic, key=verdict.request_id.encode(),
                                          value=self.codec.encode("verdict", verdict.to_dict()), on_delivery=delivered)
                left = self.producer.flush(timeout)
                if left or failures:
                    self.producer.purge(in_queue=True, in_flight=False)  # the outbox keeps them for the next try
                    self.producer.poll(0)
                    raise RelayError(f"{left} verdicts not acknowledged, {len(failures)} failed"
                                     + (f": {failures[0]}" if failures else ""))
                self.queue.ack([eid for eid, _ in entries])
                sent += len(entries)
                if self.on_sent:
                    self.on_sent([v for _, v in entries])
                redis.pexpire(self._lock, LOCK_MS)
        finally:
            if redis.get(self._lock) == self._me.encode():
                redis.delete(self._lock)

    def close(self) -> None:
        self.producer.flush(5)
