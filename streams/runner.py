"""What every batch-at-a-time operator over the candidate topics shares.

Decoding into typed candidates (or dead letters with their reason and original bytes), work off
the event loop in one worker thread (models and Redis are blocking), and retrying through broker
and Redis trouble: the batch is not acknowledged meanwhile, so nothing is dropped and the worker
does not die.

And stopping between batches (`finish`): a stop lets the batch in hand finish (for at most
`FINISH_BATCH_S`), and every batch a runner has not finished by then, or is handed after the stop
began, is held: its records are never acknowledged, so never committed, and the next run reads
them again. A stop therefore waits for at most one batch, never for a backlog.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import DeadLetter, ModelEvent

RETRY_MAX_S = 30.0
FINISH_BATCH_S = 5.0  # longest a stop waits for the batch in hand before leaving it to the next run


class BatchRunner:
    def __init__(self, settings: Settings, codec: Codec, redis_client: Any, send: Callable[..., Any], name: str):
        self.settings = settings
        self.codec = codec
        self.redis = redis_client
        self.send = send  # async (topic, key, value, partition) -> awaitable of the broker's ack
        self.log = logging.getLogger(f"flywheel.{name}")
        self.name = name
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.stopping = False
        self._in_hand: Sequence[Any] | None = None  # the batch `process` is on (its agent runs one at a time)
        self._idle = asyncio.Event()
        self._idle.set()
        self.process = self._one_batch(self.process)  # the subclass's process, as the agents call it

    def _one_batch(self, process: Callable[[Sequence[Any]], Any]):
        @functools.wraps(process)
        async def run(events: Sequence[Any]) -> None:
            if self.stopping:
                hold(events)  # handed over after the stop began: left for the next run
                return
            self._in_hand = events
            self._idle.clear()
            try:
                return await process(events)
            finally:
                self._in_hand = None
                self._idle.set()

        return run

    async def finish(self, timeout: float = FINISH_BATCH_S) -> bool:
        """Take no more batches; wait up to `timeout` for the one in hand. A batch still unfinished
        then (a model still loading, Redis or the broker down) is held, whatever happens to it
        later: it stays uncommitted, as after kill -9. True when nothing was left in hand."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        events = self._in_hand
        if events is not None:
            hold(events)
            self.log.warning(
                f"{self.name} stopping with a batch unfinished", extra={"records": len(events), "waited_s": timeout}
            )
        return events is None

    async def _off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _retrying(self, what: str, attempt: Callable[[], Any]):
        delay = 0.2
        while True:
            try:
                return await attempt()
            except Exception as exc:
                self.log.error(
                    f"{self.name} retrying",
                    extra={"step": what, "error": type(exc).__name__, "detail": str(exc)[:200], "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    async def _send_dead(self, dead: Sequence[DeadLetter]) -> list:
        acks = []
        for dl in dead:
            acks.append(
                await self.send(
                    self.settings.topic_deadletter,
                    dl.key,
                    self.codec.encode("deadletter", dl.to_dict()),
                    dl.source_partition,
                )
            )
            self.log.warning(
                "dead letter",
                extra={
                    "reason": dl.reason,
                    "detail": dl.detail,
                    "topic": dl.source_topic,
                    "partition": dl.source_partition,
                    "offset": dl.source_offset,
                },
            )
        return acks

    async def _announce(self, events: Sequence[ModelEvent]) -> None:
        """Decisions on `flywheel.models`, acknowledged by the broker before the caller goes on."""
        acks = [
            await self.send(
                self.settings.topic_models,
                (e.version or "").encode(),
                self.codec.encode("model_event", e.to_dict()),
                None,
            )
            for e in events
        ]
        if acks:
            await asyncio.gather(*acks)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def hold(events: Sequence[Any]) -> None:
    """Keep a batch's records from ever being acknowledged. Faust acknowledges a record (and may
    commit its offset) once every stream that received it has acked it, which `take_events` does
    after each batch whether the agent processed it or was cancelled in it; one extra reference
    per record makes that ack a no-op."""
    for event in events:
        event.message.incref()


def message_headers(message) -> dict[str, bytes]:
    return {k.lower(): v for k, v in message.headers} if message.headers else {}
