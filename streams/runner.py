"""What every batch-at-a-time operator over the candidate topics shares.

Decoding into typed candidates (or dead letters with their reason and original bytes), work off
the event loop in one worker thread (models and Redis are blocking), and retrying through broker
and Redis trouble: the batch is not acknowledged meanwhile, so nothing is dropped and the worker
does not die.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec, DecodeError
from schemas.records import DeadLetter, InvalidEvent, ModelEvent, TrainingCandidate

RETRY_MAX_S = 30.0


class BatchRunner:
    def __init__(self, settings: Settings, codec: Codec, redis_client: Any, send: Callable[..., Any], name: str):
        self.settings = settings
        self.codec = codec
        self.redis = redis_client
        self.send = send  # async (topic, key, value, partition) -> awaitable of the broker's ack
        self.log = logging.getLogger(f"flywheel.{name}")
        self.name = name
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def _off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _retrying(self, what: str, attempt: Callable[[], Any]):
        delay = 0.2
        while True:
            try:
                return await attempt()
            except Exception as exc:
                self.log.error(f"{self.name} retrying", extra={"step": what, "error": type(exc).__name__,
                                                               "detail": str(exc)[:200], "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def _decode(self, events: Sequence[Any]) -> tuple[list[tuple[TrainingCandidate, Any]], list[DeadLetter]]:
        candidates, dead = [], []
        for event in events:
            m = event.message
            headers = message_headers(m)
            try:
                c = TrainingCandidate.from_dict(self.codec.decode("candidate", m.value or b"", headers))
                if not c.request_id:
                    raise InvalidEvent("candidate.request_id must be a non-empty string")
                candidates.append((c, m))
            except (DecodeError, InvalidEvent, TypeError) as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else "invalid_candidate"
                dead.append(DeadLetter(reason=reason, detail=str(exc)[:500], source_topic=m.topic,
                                       source_partition=m.partition, source_offset=m.offset, key=m.key,
                                       value=m.value or b"", headers=headers, failed_at=int(time.time() * 1000)))
        return candidates, dead

    async def _send_dead(self, dead: Sequence[DeadLetter]) -> list:
        acks = []
        for dl in dead:
            acks.append(await self.send(self.settings.topic_deadletter, dl.key, self.codec.encode("deadletter", dl.to_dict()),
                                        dl.source_partition))
            self.log.warning("dead letter", extra={"reason": dl.reason, "detail": dl.detail, "topic": dl.source_topic,
                                                   "partition": dl.source_partition, "offset": dl.source_offset})
        return acks

    async def _announce(self, events: Sequence[ModelEvent]) -> None:
        """Decisions on `flywheel.models`, acknowledged by the broker before the caller goes on."""
        acks = [await self.send(self.settings.topic_models, (e.version or "").encode(), self.codec.encode("model_event", e.to_dict()),
                                None) for e in events]
        if acks:
            await asyncio.gather(*acks)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def message_headers(message) -> dict[str, bytes]:
    return {k.lower(): v for k, v in message.headers} if message.headers else {}
