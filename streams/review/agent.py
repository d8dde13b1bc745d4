"""The review sampler's stream agent: gate decisions in, sampled items into the Redis review queue.

It reads both gate outputs: passed candidates are sampled for review (the gold set), rejected
ones for the gate audit (the gate's recall). The sampler's choices are plain policy
(`streams/review/sampler.py`); the queue makes enqueueing idempotent (one item per request id,
ever), so a replay after a crash queues nothing twice, and it holds the window budget across
workers. Faust acknowledges a batch only after its items are in Redis.

A record can fail; the sampler cannot: a record that does not decode or validate, or whose
sampling raises (`sample_record`, the per-record path), becomes a dead letter and the batch goes
on. Only Redis and the broker stop it, and then it retries with a backoff.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import DeadLetter, TrainingCandidate
from flywheel.deadletter import UNPROCESSABLE, DeadLetters, Source, read_candidates, source_of
from flywheel.policy import ReviewPolicy
from flywheel.metrics import consumer_metrics
from streams.metrics import SamplerMetrics
from streams.review.queue import ReviewQueue, review_prefix
from streams.review.sampler import ReviewSampler, SampleDecision
from streams.runner import BatchRunner

SNAPSHOT_S = 30.0


def sample_record(
    sampler: ReviewSampler, candidate: TrainingCandidate, gate_passed: bool, source: str
) -> SampleDecision:
    """One candidate's sampling decision, its item ready for the queue (serialised once here, so
    an item that cannot be written fails with its record, not in the queue's retries)."""
    decision = sampler.decide(candidate, gate_passed, source)
    if decision.item is not None:
        decision.item.to_json().encode("utf-8")
    return decision


def review_record(
    sampler: ReviewSampler, codec: Codec, source: Source, gate_passed: bool, dead: DeadLetters
) -> SampleDecision | DeadLetter:
    """One gate decision's whole per-record path: its sampling decision, or its dead letter. Never
    raises for the record's sake (the fuzz tests hold it to that)."""
    candidates, letters = read_candidates(codec, [source], dead)
    if letters:
        return letters[0]
    ((c, _),) = candidates
    try:
        return sample_record(sampler, c, gate_passed, f"{source.topic}/{source.partition}/{source.offset}")
    except Exception as exc:
        return dead.letter(source, exc, default_reason=UNPROCESSABLE)


class ReviewRunner(BatchRunner):
    def __init__(
        self,
        settings: Settings,
        policy: ReviewPolicy,
        codec: Codec,
        metrics: SamplerMetrics,
        redis_client: Any,
        send: Callable[..., Any],
        window_days: int = 7,
    ):
        super().__init__(settings, codec, redis_client, send, "review")
        self.policy = policy
        self.metrics = metrics
        self.queue = ReviewQueue(redis_client, review_prefix(settings), lease_ms=settings.review_lease_s * 1000)
        self.sampler = ReviewSampler(policy, seed=settings.app_id, window_days=window_days)
        self._snapshot_key = f"{review_prefix(settings)}:sampler"
        self._restored = False
        self._last_snapshot = time.monotonic()
        self.dead = DeadLetters("review", consumer_metrics(metrics.registry), self.log)

    async def process(self, events: Sequence[Any]) -> None:
        if not self._restored:
            saved = await self._retrying("restore sampler", lambda: self._off_loop(self.redis.get, self._snapshot_key))
            if saved:
                self.sampler.restore(saved)
            self._restored = True
        candidates, dead = read_candidates(self.codec, [source_of(e.message) for e in events], self.dead)
        if candidates:
            failed = await self._retrying("sample", lambda: self._off_loop(self._sample, candidates))
            dead += [self.dead.letter(src, exc, default_reason=UNPROCESSABLE) for src, exc in failed]
        if dead:
            await self._retrying("write dead letters", lambda: self._write_dead(dead))
        if time.monotonic() - self._last_snapshot >= SNAPSHOT_S:
            self._last_snapshot = time.monotonic()
            try:
                await self._off_loop(self.redis.set, self._snapshot_key, self.sampler.to_json())
            except Exception as exc:  # an optimisation: the next snapshot will do
                self.log.warning("sampler snapshot failed", extra={"error": type(exc).__name__})

    async def _write_dead(self, dead) -> None:
        await asyncio.gather(*await self._send_dead(dead))

    def _sample(self, candidates) -> list[tuple[Source, Exception]]:
        """Off the loop: sync the shared window counts, decide, enqueue; all or nothing per attempt
        (Redis away: the whole batch again). A candidate whose sampling raises is left out and
        returned, for its dead letter."""
        s = self.settings
        batch = [
            (c, src.topic == s.topic_passed, f"{src.topic}/{src.partition}/{src.offset}", src) for c, src in candidates
        ]
        for window in {self.sampler.window_of(c.timestamp) for c, _, _, _ in batch}:
            counts = self.queue.window_counts(window)
            self.sampler.sync_window(
                window, {("" if task == "-" else task): n for task, n in counts.items() if task != "*"}
            )
        decisions, failed = [], []
        for c, gate_passed, where, src in batch:  # in order: each decision sees the statistics of those before it
            try:
                decisions.append(sample_record(self.sampler, c, gate_passed, where))
            except Exception as exc:
                failed.append((src, exc))
        items = [d.item for d in decisions if d.sampled and d.item is not None]
        statuses = self.queue.enqueue(items, budget=self.policy.budget_per_window)
        for c, gate_passed, _, _ in batch:
            self.metrics.considered.labels("passed" if gate_passed else "rejected").inc()
        for d in decisions:
            if d.skipped == "budget":
                self.metrics.skipped.labels(d.skipped).inc()
        for item, status in zip(items, statuses):
            if status == "queued":
                self.metrics.sampled.labels(item.sampled_for[0] if item.sampled_for else "random").inc()
            else:
                self.metrics.skipped.labels(status).inc()
        return failed


def add_review_agent(app, settings: Settings, runner: ReviewRunner):
    """Register the sampler on the Faust app: a short loop over both gate outputs."""
    source = app.topic(settings.topic_passed, settings.topic_rejected, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="review-sampler")
    async def review_sampler(stream):
        async for events in stream.take_events(settings.gate_batch_size, within=settings.gate_batch_ms / 1000):
            await runner.process(events)

    return review_sampler
