"""The guards' stream agent: joined requests, gate decisions and dead letters counted per time
bucket, and a timer that judges the monitors. The work is in `GuardKeeper` and the pure modules."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import ModelEvent
from flywheel.deadletter import UNPROCESSABLE, DeadLetters, read_candidate, source_of
from streams.guards.counts import MALFORMED, USER_TIMING, Cap, candidate_fields, deadletter_fields
from streams.guards.keeper import GuardKeeper
from streams.guards.metrics import GuardMetrics
from streams.guards.monitors import merge
from streams.guards.store import HOLD_TARGETS
from flywheel.metrics import consumer_metrics
from streams.runner import BatchRunner

MAX_TRACKED = 50  # task types, and model versions, counted by name; the rest as `other`


class GuardRunner(BatchRunner):
    def __init__(
        self,
        settings: Settings,
        keeper: GuardKeeper,
        codec: Codec,
        metrics: GuardMetrics,
        redis_client: Any,
        send: Callable[..., Any],
    ):
        super().__init__(settings, codec, redis_client, send, "guards")
        self.keeper = keeper
        self.metrics = metrics
        self.tasks, self.versions = Cap(MAX_TRACKED), Cap(MAX_TRACKED)
        s = settings
        # dead letters are split by reason: users' timing apart from malformed input (deadletter_fields)
        self._kind = {s.topic_passed: "passed", s.topic_rejected: "rejected", s.topic_deadletter: MALFORMED}
        self.dead = DeadLetters("guards", consumer_metrics(metrics.registry), self.log)

    async def process(self, events: Sequence[Any]) -> None:
        """Count a batch: gate outputs and dead letters by topic, joined requests by what they hold.
        An undecodable candidate is the gate's to dead-letter; here it is only not counted."""
        kinds = [(self._kind.get(e.message.topic), e) for e in events]
        candidates = await self._read([e for kind, e in kinds if kind is None])
        fields = merge(
            [
                deadletter_fields(self.codec, e.message.value) if kind == MALFORMED else {kind: 1}
                for kind, e in kinds
                if kind
            ]
            + [candidate_fields(c, self.tasks, self.versions) for c, _ in candidates]
        )
        if fields:
            await self._retrying("count", lambda: self._off_loop(self.keeper.store.add, fields))
        for kind in ("passed", "rejected", MALFORMED, USER_TIMING):
            if fields.get(kind):
                self.metrics.counted.labels(kind).inc(fields[kind])
        if candidates:
            self.metrics.counted.labels("requests").inc(len(candidates))

    async def _read(self, events: Sequence[Any]) -> list:
        """The joined candidates to count. An undecodable one is skipped (the gate's dead letter); one
        that decodes but cannot be counted is a dead letter of the guards' own."""
        candidates, dead = [], []
        for src in (source_of(e.message) for e in events):
            got = guard_record(self.codec, src, self.tasks, self.versions, self.dead)
            if got is None:
                continue
            if isinstance(got, tuple):
                candidates.append(got)
            else:
                dead.append(got)
        if dead:
            await self._retrying("write dead letters", lambda: self._gather(self._send_dead(dead)))
        return candidates

    @staticmethod
    async def _gather(sends) -> None:
        await asyncio.gather(*await sends)

    async def tick(self) -> None:
        await self._announce(await self._retrying("judge", lambda: self._off_loop(self._judge)))

    def _judge(self) -> list[ModelEvent]:
        judgement = self.keeper.judge()
        actions, events = self.keeper.act(judgement)
        for a in actions:
            if a.taken:
                self.metrics.actions.labels(a.monitor, a.action).inc()
            self.log.warning(
                "guard action", extra={"monitor": a.monitor, "action": a.action, "taken": a.taken, "reason": a.reason}
            )
        self.metrics.observe(judgement.signals, judgement.satisfaction, judgement.holds, HOLD_TARGETS)
        return events


def guard_record(codec: Codec, src, tasks: Cap, versions: Cap, dead: DeadLetters):
    """One joined candidate's path through the guards: (candidate, source) to count, None when it
    does not decode (skipped: the gate's dead letter), or the guards' own dead letter when its
    counts cannot be taken. Never raises for the record's sake."""
    try:
        c = read_candidate(codec, src)
    except Exception as exc:
        dead.skipped(src, exc, "invalid_candidate")
        return None
    try:
        candidate_fields(c, tasks, versions)
    except Exception as exc:
        return dead.letter(src, exc, default_reason=UNPROCESSABLE)
    return c, src


def add_guard_agents(app, settings: Settings, runner: GuardRunner):
    """Register on the Faust app: one short loop over the four topics, and the judging timer."""
    s = settings
    source = app.topic(
        s.topic_candidates,
        s.topic_passed,
        s.topic_rejected,
        s.topic_deadletter,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, name="guards-count")
    async def count(stream):
        async for events in stream.take_events(s.gate_batch_size, within=s.gate_batch_ms / 1000):
            await runner.process(events)

    @app.timer(runner.keeper.policy.evaluate_interval_s)
    async def judge():
        await runner.tick()

    return count, judge
