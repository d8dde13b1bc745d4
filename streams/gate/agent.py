"""The gate's stream agent: candidates in, decisions out to the passed and rejected topics.

The agent is a short loop over time-bounded batches (`take_events`); `GateRunner.process` does the
work. Scoring runs in a worker thread, off the event loop, so heartbeats, the join and the
consumer keep going while a model works. Faust acknowledges a batch only after `process` returns,
and `process` returns only when every decision is on the broker: a crash replays the batch, never
loses it. A replayed candidate whose decision was written already (a marker in Redis, written
after the broker acknowledged) is skipped, so a restart does not decide twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

from flywheel.settings import DAY_MS, Settings
from schemas.codec import Codec
from schemas.records import DeadLetter, TrainingCandidate
from streams.gate.pipeline import Decision, Gate
from streams.metrics import GateMetrics
from streams.runner import BatchRunner, message_headers

log = logging.getLogger("flywheel.gate")

DECIDED_TTL_S = 7 * DAY_MS // 1000  # longer than any replay: the join's markers last a day
KEEP_RATE_SNAPSHOT_S = 30.0


def gate_group(settings: Settings) -> str:
    return settings.app_id  # the Faust app's consumer group


class GateRunner(BatchRunner):
    def __init__(self, settings: Settings, build: Callable[[], Gate], codec: Codec, metrics: GateMetrics,
                 redis_client: Any, send: Callable[..., Any]):
        super().__init__(settings, codec, redis_client, send, "gate")
        self.metrics = metrics
        self._build = build
        self.gate: Gate | None = None
        self.prefix = f"{settings.app_id}:gate"
        self._last_snapshot = time.monotonic()

    async def start(self) -> None:
        """Load the models (seconds) off the loop, and the keep-rate window a predecessor saved."""
        if self.gate is None:
            started = time.perf_counter()
            self.gate = await self._off_loop(self._build)
            saved = await self._retrying("restore keep rate", lambda: self._off_loop(self.redis.get, f"{self.prefix}:keeprate"))
            if saved and self.gate.keep_rate is not None:
                self.gate.keep_rate.restore(saved)
            log.info("gate ready", extra={"policy": self.gate.stamp, "stages": [s.name for s in self.gate.stages],
                                          "seconds": round(time.perf_counter() - started, 2)})

    async def process(self, events: Sequence[Any]) -> None:
        await self.start()
        started = time.perf_counter()
        candidates, dead = self._decode(events)
        fresh = await self._unseen(candidates)
        sources = [m for _, m in fresh]
        decisions = await self._retrying("decide", lambda: self._off_loop(self._decide, sources)) if fresh else []
        await self._retrying("write decisions", lambda: self._write(decisions, sources, dead))
        if decisions:
            await self._retrying("mark decided", lambda: self._off_loop(self._mark, decisions))
        self._observe(decisions, sources, len(events), started)
        if time.monotonic() - self._last_snapshot >= KEEP_RATE_SNAPSHOT_S:
            await self._snapshot()

    def _decide(self, sources) -> list[Decision]:
        """Decode afresh on every attempt: a failed attempt may have redacted its copies already."""
        return self.gate.decide([TrainingCandidate.from_dict(self.codec.decode("candidate", m.value, message_headers(m)))
                                 for m in sources])

    async def _unseen(self, candidates):
        """Drop candidates decided before (a replay), and repeats of one request inside the batch."""
        if not candidates:
            return []
        keys = [f"{self.prefix}:decided:{c.request_id}" for c, _ in candidates]
        seen = await self._retrying("check decided", lambda: self._off_loop(self.redis.mget, keys))
        fresh, ids = [], set()
        for (c, m), mark in zip(candidates, seen):
            if mark is not None or c.request_id in ids:
                self.metrics.replays.inc()
                continue
            ids.add(c.request_id)
            fresh.append((c, m))
        return fresh

    async def _write(self, decisions: list[Decision], sources, dead: list[DeadLetter]) -> None:
        s = self.settings
        acks = []
        for d, m in zip(decisions, sources):
            topic = s.topic_passed if d.passed else s.topic_rejected
            acks.append(await self.send(topic, m.key or d.candidate.request_id.encode(),
                                        self.codec.encode("candidate", d.candidate.to_dict()), m.partition))
        acks += await self._send_dead(dead)
        await asyncio.gather(*acks)

    def _mark(self, decisions: list[Decision]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for d in decisions:
            pipe.set(f"{self.prefix}:decided:{d.candidate.request_id}", b"p" if d.passed else b"r", ex=DECIDED_TTL_S)
        pipe.execute()

    async def _snapshot(self) -> None:
        self._last_snapshot = time.monotonic()
        keep = self.gate.keep_rate if self.gate else None
        if keep is not None:
            try:
                await self._off_loop(self.redis.set, f"{self.prefix}:keeprate", keep.to_json())
            except Exception as exc:  # a snapshot is an optimisation: the next one will do
                log.warning("keep-rate snapshot failed", extra={"error": type(exc).__name__})

    def _observe(self, decisions: list[Decision], sources, n_events: int, started: float) -> None:
        m = self.metrics
        m.observe_decisions(decisions)
        m.observe_keep_rate(self.gate.keep_rate if self.gate else None)
        now = time.time()
        for src in sources:
            if src.timestamp:  # Faust gives seconds
                m.latency.observe(max(0.0, now - src.timestamp))
        m.batch_size.observe(n_events)
        m.batch_seconds.observe(time.perf_counter() - started)

def add_gate_agent(app, settings: Settings, runner: GateRunner):
    """Register the gate on the Faust app: a short loop, the work is in `runner`."""
    source = app.topic(settings.topic_candidates, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="gate")
    async def gate(stream):
        async for events in stream.take_events(settings.gate_batch_size, within=settings.gate_batch_ms / 1000):
            await runner.process(events)

    return gate
