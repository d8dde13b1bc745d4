"""The rollout's stream agents: joined candidates counted per model version, candidate models
started as A/B tests, and a timer that decides. The work is in `RolloutController`.

A record can fail; the rollout cannot. A joined candidate that does not decode is the gate's to
dead-letter (the gate reads the same topic): here it is counted as skipped. One that decodes but
cannot be counted (`countable`), and a models event that does not decode or validate, or whose
start raises, become dead letters of the rollout's own. Only Redis and the broker stop it, and then
it retries with a backoff. `read_candidates` and `read_model_event` are the per-record paths.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import MAX_ID_CHARS, DeadLetter, InvalidEvent, ModelEvent, TrainingCandidate
from flywheel.deadletter import (
    UNPROCESSABLE,
    DeadLetters,
    Source,
    is_infrastructure,
    is_json,
    isolating,
    read_candidate,
    source_of,
)
from flywheel.policy import RolloutPolicy
from flywheel.metrics import consumer_metrics
from streams.rollout.analysis import counts_of
from streams.rollout.controller import RolloutController
from streams.rollout.metrics import RolloutMetrics
from streams.runner import BatchRunner


def countable(c: TrainingCandidate) -> None:
    """Raise when the controller could not count this candidate (what `RolloutController.count`
    adds up for it), so it fails alone instead of holding its batch."""
    counts_of(c.actions or ([c.user_action] if c.user_action else []), c.response, c.latency_ms)


def read_candidates(
    codec: Codec, sources: Sequence[Source], dead: DeadLetters
) -> tuple[list[tuple[TrainingCandidate, Source]], list[DeadLetter]]:
    """The candidates to count; undecodable ones skipped (the gate's dead letters), uncountable ones
    dead letters of the rollout's own."""
    out, letters = [], []
    for src in sources:
        try:
            c = read_candidate(codec, src)
        except Exception as exc:
            dead.skipped(src, exc, "invalid_candidate")
            continue
        try:
            countable(c)
        except Exception as exc:
            letters.append(dead.letter(src, exc, default_reason=UNPROCESSABLE))
            continue
        out.append((c, src))
    return out, letters


def read_model_event(codec: Codec, source: Source) -> ModelEvent:
    """One models event, decoded and validated; raises when it is not one the rollout can act on."""
    event = ModelEvent.from_dict(codec.decode("model_event", source.value or b"", source.headers))
    for name in ("event_type", "version"):
        value = getattr(event, name)
        if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
            raise InvalidEvent(f"model_event.{name} must be a string of at most {MAX_ID_CHARS} characters")
    if is_json(source.headers):
        codec.encode("model_event", event.to_dict())  # what JSON holds and Avro cannot fails here
    return event


class RolloutRunner(BatchRunner):
    def __init__(
        self,
        settings: Settings,
        policy: RolloutPolicy,
        codec: Codec,
        metrics: RolloutMetrics,
        redis_client: Any,
        send: Callable[..., Any],
    ):
        super().__init__(settings, codec, redis_client, send, "rollout")
        self.policy = policy
        self.metrics = metrics
        self.controller = RolloutController(redis_client, settings.app_id, policy)
        self.dead = DeadLetters("rollout", consumer_metrics(metrics.registry), self.log)

    async def process(self, events: Sequence[Any]) -> None:
        """Count a batch of joined candidates; undecodable ones are the gate's to dead-letter."""
        candidates, dead = read_candidates(self.codec, [source_of(e.message) for e in events], self.dead)
        batch = [(c, f"{src.topic}/{src.partition}", src.offset, src) for c, src in candidates]
        if batch:
            counted, failed = await self._retrying("count", lambda: self._off_loop(self._count, batch))
            dead += [self.dead.letter(item[3], exc, default_reason=UNPROCESSABLE) for item, exc in failed]
            self.metrics.counted.inc(counted)
        if dead:
            await self._retrying("write dead letters", lambda: self._write_dead(dead))

    def _count(self, batch) -> tuple[int, list]:
        """Off the loop: the batch at once; if a candidate's content makes that raise, one by one."""
        done, failed = isolating(
            batch, lambda items: self.controller.count([(c, part, offset) for c, part, offset, _ in items])
        )
        return sum(done), failed

    async def _write_dead(self, dead: Sequence[DeadLetter]) -> None:
        await asyncio.gather(*await self._send_dead(dead))

    async def on_model_event(self, message: Any) -> None:
        """One models event; one that cannot be read or acted on becomes a dead letter."""
        src = source_of(message)
        try:
            event = read_model_event(self.codec, src)
        except Exception as exc:
            dl = self.dead.letter(src, exc)
            await self._retrying("write dead letters", lambda: self._write_dead([dl]))
            return
        if event.event_type == "candidate" and event.gate_passed and event.version and self.policy.enabled:
            started, exc = await self._retrying("start", lambda: self._off_loop(self._start, event.version))
            if exc is not None:
                dl = self.dead.letter(src, exc, default_reason=UNPROCESSABLE)
                await self._retrying("write dead letters", lambda: self._write_dead([dl]))
                return
            await self._announce([started] if started else [])

    def _start(self, version: str) -> tuple[ModelEvent | None, Exception | None]:
        try:
            return self.controller.start(version), None
        except Exception as exc:
            if is_infrastructure(exc):
                raise  # retried
            return None, exc

    async def tick(self) -> None:
        events = await self._retrying("decide", lambda: self._off_loop(self._decide))
        await self._announce(events)

    def _decide(self) -> list[ModelEvent]:
        events = self.controller.tick()
        state = self.controller.state()
        self.metrics.weight.set(state.weight if state.status in ("ramping", "watching") else 0.0)
        if state.rollout_id:
            for arm, phase, version in (
                ("incumbent", "ab", state.incumbent),
                ("candidate", "ab", state.candidate),
                ("after", "watch", state.candidate),
            ):
                self.metrics.observe(arm, self.controller.stats(state, phase, version))
        for e in events:
            self.metrics.decisions.labels(e.event_type.removeprefix("rollout_")).inc()
            if "likelihood_ratio" in e.metrics:
                self.metrics.likelihood.set(e.metrics["likelihood_ratio"])
        return events


def add_rollout_agents(app, settings: Settings, runner: RolloutRunner):
    """Register on the Faust app: short loops, the work is in `runner`."""
    candidates = app.topic(settings.topic_candidates, key_serializer="raw", value_serializer="raw")
    models = app.topic(settings.topic_models, key_serializer="raw", value_serializer="raw")

    @app.agent(candidates, name="rollout-count")
    async def count(stream):
        async for events in stream.take_events(settings.gate_batch_size, within=settings.gate_batch_ms / 1000):
            await runner.process(events)

    @app.agent(models, name="rollout-start")
    async def start(stream):
        async for event in stream.events():
            await runner.on_model_event(event.message)

    @app.timer(runner.policy.decide_interval_s)
    async def decide():
        await runner.tick()

    return count, start, decide
