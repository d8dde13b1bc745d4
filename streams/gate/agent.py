"""The gate's stream agent: candidates in, decisions out to the passed and rejected topics.

`GateRunner.process` decides a batch in a worker thread and returns only when every decision is on
the broker; a replayed candidate already decided (a marker in Redis) is skipped. A record that
cannot be decoded, decided or encoded becomes a dead letter and the batch goes on; only Redis and
the broker stop the agent, which then retries with a backoff. The per-record path is plain
functions (`read`, `decide`, `encode_decision`, `gate_record`).

Design: docs/concepts/gate.md#the-agent
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Sequence

from flywheel.settings import DAY_MS, Settings
from schemas.codec import Codec
from schemas.records import DeadLetter
from flywheel.deadletter import (
    UNPROCESSABLE,
    DeadLetters,
    Source,
    isolating,
    read_candidate,
    read_candidates,
    source_of,
)
from streams.gate.pipeline import Decision, Gate
from flywheel.metrics import consumer_metrics
from streams.metrics import GateMetrics
from streams.runner import BatchRunner

log = logging.getLogger("flywheel.gate")

DECIDED_TTL_S = 7 * DAY_MS // 1000  # longer than any replay: the join's markers last a day
KEEP_RATE_SNAPSHOT_S = 30.0


def gate_group(settings: Settings) -> str:
    return settings.app_id  # the Faust app's consumer group


# -- the per-record path, without a broker ----------------------------------------------------------


def decide(
    gate: Gate, codec: Codec, sources: Sequence[Source]
) -> tuple[list[tuple[Decision, Source]], list[tuple[Source, Exception]]]:
    """The decisions on a batch. A stage that raises rejects what it checked with filter_error (the
    pipeline's rule); anything else a candidate's content makes the pipeline raise would hold the
    whole batch, so the batch is decided again one candidate at a time and the one that still
    raises comes back as a failure. Redis errors (`gate.transient`) and other infrastructure
    errors propagate, for the caller to retry. Candidates are decoded afresh for every attempt: a
    failed attempt may have redacted its copies already."""

    def run(batch: Sequence[Source]) -> list[tuple[Decision, Source]]:
        return list(zip(gate.decide([read_candidate(codec, s) for s in batch]), batch))

    done, failed = isolating(sources, run, transient=gate.transient)
    return [pair for part in done for pair in part], failed


def encode_decision(codec: Codec, decision: Decision) -> bytes:
    return codec.encode("candidate", decision.candidate.to_dict())


def gate_record(
    gate: Gate, codec: Codec, source: Source, dead: DeadLetters | None = None
) -> tuple[bool, bytes] | DeadLetter:
    """One record through the gate's whole per-record path: (passed, the decision's bytes), or its
    dead letter. Never raises for the record's sake (the fuzz tests hold it to that)."""
    dead = dead or DeadLetters("gate")
    candidates, letters = read_candidates(codec, [source], dead)
    if letters:
        return letters[0]
    decided, failed = decide(gate, codec, [source])
    if failed:
        return dead.letter(source, failed[0][1], default_reason=UNPROCESSABLE)
    ((d, _),) = decided
    try:
        return d.passed, encode_decision(codec, d)
    except Exception as exc:
        return dead.letter(source, exc, default_reason=UNPROCESSABLE, where="gate output")


class GateRunner(BatchRunner):
    def __init__(
        self,
        settings: Settings,
        build: Callable[[], Gate],
        codec: Codec,
        metrics: GateMetrics,
        redis_client: Any,
        send: Callable[..., Any],
    ):
        super().__init__(settings, codec, redis_client, send, "gate")
        self.metrics = metrics
        self._build = build
        self.gate: Gate | None = None
        self.prefix = f"{settings.app_id}:gate"
        self._last_snapshot = time.monotonic()
        self.dead = DeadLetters("gate", consumer_metrics(metrics.registry), self.log)

    async def start(self) -> None:
        """Load the models (seconds) off the loop, and the keep-rate window a predecessor saved."""
        if self.gate is None:
            started = time.perf_counter()
            self.gate = await self._off_loop(self._build)
            saved = await self._retrying(
                "restore keep rate", lambda: self._off_loop(self.redis.get, f"{self.prefix}:keeprate")
            )
            if saved and self.gate.keep_rate is not None:
                self.gate.keep_rate.restore(saved)
            log.info(
                "gate ready",
                extra={
                    "policy": self.gate.stamp,
                    "stages": [s.name for s in self.gate.stages],
                    "seconds": round(time.perf_counter() - started, 2),
                },
            )

    async def process(self, events: Sequence[Any]) -> None:
        await self.start()
        started = time.perf_counter()
        candidates, dead = read_candidates(self.codec, [source_of(e.message) for e in events], self.dead)
        fresh = await self._unseen(candidates)
        decided, failed = (
            await self._retrying(
                "decide", lambda: self._off_loop(decide, self.gate, self.codec, [s for _, s in fresh])
            )
            if fresh
            else ([], [])
        )
        dead += [self.dead.letter(src, exc, default_reason=UNPROCESSABLE) for src, exc in failed]
        outputs = []
        for d, src in decided:
            try:
                outputs.append((d, src, encode_decision(self.codec, d)))
            except Exception as exc:  # never expected: a decision of a candidate that decoded
                dead.append(self.dead.letter(src, exc, default_reason=UNPROCESSABLE, where="gate output"))
        decisions = [d for d, _, _ in outputs]
        await self._retrying("write decisions", lambda: self._write(outputs, dead))
        if decisions:
            await self._retrying("mark decided", lambda: self._off_loop(self._mark, decisions))
        self._observe(decisions, [src for _, src, _ in outputs], len(events), started)
        if time.monotonic() - self._last_snapshot >= KEEP_RATE_SNAPSHOT_S:
            await self._snapshot()

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

    async def _write(self, outputs: list[tuple[Decision, Source, bytes]], dead: list[DeadLetter]) -> None:
        s = self.settings
        acks = []
        for d, src, value in outputs:
            topic = s.topic_passed if d.passed else s.topic_rejected
            acks.append(await self.send(topic, src.key or d.candidate.request_id.encode(), value, src.partition))
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
            if src.timestamp_ms:
                m.latency.observe(max(0.0, now - src.timestamp_ms / 1000))
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
