"""The join's consume-join-produce loop: batches in, state and outputs out, offsets committed last.

It runs inside the Faust worker as a service rather than as a per-event agent: Faust's consumer
hands records to agents one at a time (two asyncio tasks per record), which caps a worker at about
4,000 records/s on a 2-core machine whatever the agent does (measured: `benchmarks/`). The join
is the highest-volume stage, so it takes whole fetches, and keeps Faust's guarantees by the same
means Faust uses for tables: a compacted changelog per partition, restored on assignment, written
before the input offsets are committed.

Partitions are assigned with the range assignor, so partition p of interactions and partition p of
actions always land on the same worker (co-partitioning).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from mode import Service

from flywheel.settings import Settings
from schemas.codec import Codec
from streams.changelog import ChangelogStore
from streams.join.core import ACTION, INTERACTION, JoinCore, JoinOutput, Record
from streams.metrics import JoinMetrics
from streams.sink import BatchSink

log = logging.getLogger("flywheel.join")

COMMIT_INTERVAL_S = 0.25

# late and orphan actions are part of normal traffic: counted by the metric, logged only at debug
EXPECTED_REASONS = frozenset({"late_action", "orphan_action"})


def _wall_ms() -> int:
    return int(time.time() * 1000)


def join_group(settings: Settings) -> str:
    return f"{settings.app_id}.join"


def join_changelog(settings: Settings) -> str:
    return settings.changelog_topic("join-state")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: "JoinService"):
        self.service = service

    async def on_partitions_revoked(self, revoked):
        await self.service.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned):
        await self.service.on_assigned({tp.partition for tp in assigned})


class JoinService(Service):
    def __init__(self, settings: Settings, codec: Codec, metrics: JoinMetrics, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.kinds = {settings.topic_interactions: INTERACTION, settings.topic_actions: ACTION}
        self.topic_of = {INTERACTION: settings.topic_interactions, ACTION: settings.topic_actions}
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        # outputs are acknowledged before the state that records them: a crash in between replays
        # the batch and sends the same candidates again, never loses one
        self.outputs = BatchSink(lambda: self.producer)
        self.changelog = BatchSink(lambda: self.producer)
        self.store = ChangelogStore(join_changelog(settings), self.changelog)
        self.core = JoinCore(
            codec,
            self.store,
            settle_window_ms=settings.settle_window_ms,
            watermark_delay_ms=settings.watermark_delay_ms,
            marker_horizon_ms=settings.marker_horizon_ms,
            max_event_bytes=settings.max_event_bytes,
            action_topic=settings.topic_actions,
            interaction_topic=settings.topic_interactions,
            max_event_ahead_ms=settings.max_event_ahead_ms,
            tick_key=settings.tick_key,
        )
        self.owned: set[int] = set()
        self._next_offset: dict[TopicPartition, int] = {}
        # wall ms at which each input last handed records to the join (or was assigned): the start of its silence
        self._last_record_ms: dict[TopicPartition, int] = {}
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        # a rebalance callback runs in aiokafka's coordinator task and may interleave with a
        # step's awaits; the lock keeps a restore from replacing state under a batch in flight
        self._lock = asyncio.Lock()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.broker_url,
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.broker_url,
            group_id=join_group(s),
            group_instance_id=s.worker_id or None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=60_000,
            max_partition_fetch_bytes=1024 * 1024,
        )
        self.consumer.subscribe([s.topic_interactions, s.topic_actions], listener=_Rebalance(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        self._closing = True
        async with self._lock:  # let the batch in flight finish its writes
            if self.consumer is not None:
                await self.commit()
                await self.consumer.stop()  # leaves the group
            if self.producer is not None:
                await self.producer.stop()

    @Service.task
    async def _consume(self) -> None:
        last_idle = time.monotonic()
        while not self.should_stop:
            got = await self.consumer.getmany(timeout_ms=500, max_records=self.settings.join_batch_size)
            if got:
                await self.step(got)
            elif time.monotonic() - last_idle >= 1.0:
                last_idle = time.monotonic()
                await self.idle_step()

    async def idle_step(self) -> None:
        """No records: inputs may have become idle, which can move a watermark on its own."""
        async with self._lock:
            if self._closing:
                return
            started = time.perf_counter()
            for p in sorted(self.owned):
                self._advance(p)
            out = self.core.drain()
            if out.candidates or out.deadletters or len(self.changelog):
                await self._write(out)
                self._observe(out, started)

    # -- rebalances ------------------------------------------------------------------------------
    async def on_revoked(self, partitions: set[int]) -> None:
        async with self._lock:
            # every processed batch is already flushed: commit its offsets, then let go of the state
            await self.commit()
            self.core.forget_partitions(partitions)
            self.store.drop_partitions(partitions)
            self.owned -= partitions
            self._next_offset = {tp: o for tp, o in self._next_offset.items() if tp.partition in self.owned}

    async def on_assigned(self, partitions: set[int]) -> None:
        async with self._lock:
            await self._take(partitions)

    async def _take(self, partitions: set[int]) -> None:
        started = time.perf_counter()
        new = partitions - self.owned
        await self.store.restore(self.settings.broker_url, new)
        self.owned = set(partitions)
        self.core.rebuild_index(self.owned)
        for p in partitions:
            for topic in self.topic_of.values():
                tp = TopicPartition(topic, p)
                self._next_offset[tp] = await self.consumer.position(tp)
                self._last_record_ms[tp] = _wall_ms()
        log.info(
            "join partitions assigned",
            extra={
                "partitions": sorted(partitions),
                "restored": sorted(new),
                "states": self.core.pending,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def caught_up(self, partition: int) -> dict[str, int]:
        """Inputs of this partition that are idle, each with how far (ms) its event-time clock may be
        taken past its latest event: the wall time it is known to have been silent (from the join's
        last record of it to the broker's latest word on where its log ends, `last_poll_timestamp`),
        less `idle_input_ms`. Only liveness uses the wall clock, and only at the wall clock's pace: live,
        where event time is wall time, a partition whose actions stopped still settles; in a backlog,
        a replay or a catch-up, where event time runs days per second, a silence of a few seconds
        moves the clock by a few seconds, never past actions still on their way (before, an idle input
        stopped holding time back at all: the other input's clock then settled requests whose actions
        were produced but not yet read). An input not heard from since the partition was taken has
        no clock to advance and holds the watermark until its first event or tick."""
        idle = {}
        for kind, topic in self.topic_of.items():
            tp = TopicPartition(topic, partition)
            hw = self.consumer.highwater(tp)
            pos = self._next_offset.get(tp)
            if hw is None or pos is None or pos < hw:
                continue
            known_until = self.consumer.last_poll_timestamp(tp)  # wall ms of the fetch that said where its log ends
            silent_ms = (known_until or 0) - self._last_record_ms.get(tp, _wall_ms())
            if silent_ms > self.settings.idle_input_ms:
                idle[kind] = silent_ms - self.settings.idle_input_ms
        return idle

    # -- the batch step --------------------------------------------------------------------------
    def join(self, fetched: dict) -> JoinOutput:
        apply = self.core.apply
        partitions = set()
        consumed = {INTERACTION: 0, ACTION: 0}
        for tp, messages in fetched.items():
            kind = self.kinds[tp.topic]
            for m in messages:
                apply(
                    Record(
                        kind,
                        tp.topic,
                        tp.partition,
                        m.offset,
                        m.key,
                        m.value,
                        {k.lower(): v for k, v in m.headers} if m.headers else {},
                        m.timestamp,
                    )
                )
            consumed[kind] += len(messages)
            self._next_offset[tp] = messages[-1].offset + 1
            self._last_record_ms[tp] = _wall_ms()
            partitions.add(tp.partition)
        for kind, n in consumed.items():
            if n:
                self.metrics.events_consumed.labels(kind).inc(n)
        for p in sorted(partitions):
            self._advance(p)
        return self.core.drain()

    def _advance(self, partition: int) -> None:
        wm = self.core.advance(partition, self.caught_up(partition))
        if wm is not None:
            self.metrics.watermark.labels(str(partition)).set(wm / 1000)

    async def step(self, fetched: dict) -> None:
        async with self._lock:
            if self._closing:
                return  # not committed: the next owner reads these records again
            fetched = await self._owned_only(fetched)
            if fetched:
                await self._step(fetched)

    async def _owned_only(self, fetched: dict) -> dict:
        """Records of partitions whose state is not loaded here (fetched across a rebalance) are
        put back: the consumer is rewound to them, or their new owner reads them."""
        mine = {tp: ms for tp, ms in fetched.items() if tp.partition in self.owned}
        assigned = self.consumer.assignment()
        for tp, messages in fetched.items():
            if tp not in mine and tp in assigned:
                self.consumer.seek(tp, messages[0].offset)
        return mine

    async def _step(self, fetched: dict) -> None:
        """Join a fetch; write candidates and dead letters, then (once acknowledged) the state
        changes, then commit the input offsets. Candidates go to the partition their request
        came from."""
        started = time.perf_counter()
        out = self.join(fetched)
        await self._write(out)
        for tp, messages in fetched.items():
            self._uncommitted[tp] = messages[-1].offset + 1
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S:
            await self.commit()
        self._observe(out, started)

    async def _write(self, out: JoinOutput) -> None:
        for c in out.candidates:
            self.outputs.add(self.settings.topic_candidates, c.partition, c.key, c.value)
        for d in out.deadletters:
            self.outputs.add(
                self.settings.topic_deadletter, d.source_partition, d.key, self.codec.encode("deadletter", d.to_dict())
            )
        await self.outputs.flush()
        await self.changelog.flush()

    async def commit(self) -> None:
        """Commit offsets whose outputs and state are on the broker already (every step flushes
        before it records its offsets here), so a crash replays at most what came after."""
        if self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self.consumer.commit(offsets)
        self._last_commit = time.monotonic()

    def _observe(self, out: JoinOutput, started: float) -> None:
        now_ms = time.time() * 1000
        m = self.metrics
        by_label = Counter((c.user_action, c.label) for c in out.candidates)
        for labels, n in by_label.items():
            m.candidates.labels(*labels).inc(n)
        for c in out.candidates:
            if c.trigger_timestamp_ms:
                m.latency.observe(max(0.0, now_ms - c.trigger_timestamp_ms) / 1000)
        for d in out.deadletters:
            m.deadletters.labels(d.reason).inc()
            log.log(
                logging.DEBUG if d.reason in EXPECTED_REASONS else logging.WARNING,
                "dead letter",
                extra={
                    "reason": d.reason,
                    "detail": d.detail,
                    "topic": d.source_topic,
                    "partition": d.source_partition,
                    "offset": d.source_offset,
                },
            )
        m.duplicates.inc(self.core.stats.pop("duplicates", 0))
        m.pending.set(self.core.pending)
        m.batch_seconds.observe(time.perf_counter() - started)
