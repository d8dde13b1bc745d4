"""The join agent: moves records between the source topics, the join state table and the outputs.

All decisions live in `streams.join.core`; this module only adapts Faust to it.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

import faust
from faust.types import TP

from flywheel.settings import Settings
from schemas.codec import Codec
from streams.join.core import ACTION, INTERACTION, JoinCore, JoinOutput, record_from_kafka
from streams.metrics import JoinMetrics
from streams.sink import BatchSink

log = logging.getLogger("flywheel.join")

# late and orphan actions are part of normal traffic: counted by the metric, logged only at debug
EXPECTED_REASONS = frozenset({"late_action", "orphan_action"})


class TableStore:
    """The join's StateStore over a Faust table: the local store is written at once, the changelog
    through the step's BatchSink, with the partition the state belongs to.

    Faust's own `table[key] = value` takes the partition from the current event, which a batch of
    events from several partitions does not have, and sends one message at a time; so we write the
    store and the changelog ourselves, and keep the store's key->partition index that Faust uses to
    drop state on revocation.
    """

    def __init__(self, table: faust.Table, sink: BatchSink):
        self.table = table
        self.sink = sink

    @property
    def _data(self):
        return self.table.data

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self._data[key] = value
        index = getattr(self._data, "_key_partition", None)
        if index is not None:
            index[key] = partition
        self.sink.add(self.table.changelog_topic.get_topic_name(), partition, key, value)

    def delete(self, key: bytes, partition: int) -> None:
        self._data.pop(key, None)
        index = getattr(self._data, "_key_partition", None)
        if index is not None:
            index.pop(key, None)
        self.sink.add(self.table.changelog_topic.get_topic_name(), partition, key, None)

    def items(self):
        return self._data.items()

    def __len__(self) -> int:
        return len(self._data)


class Joiner:
    """One per worker process: the batch step of the join agent."""

    def __init__(self, app: faust.App, settings: Settings, codec: Codec, metrics: JoinMetrics,
                 table: faust.Table):
        self.app = app
        self.settings = settings
        self.codec = codec
        self.metrics = metrics
        self.sink = BatchSink(app.producer._ensure_producer)
        self.store = TableStore(table, self.sink)
        self.kinds = {settings.topic_interactions: INTERACTION, settings.topic_actions: ACTION}
        self.topic_of = {INTERACTION: settings.topic_interactions, ACTION: settings.topic_actions}
        self.core = JoinCore(
            codec, self.store,
            settle_window_ms=settings.settle_window_ms,
            watermark_delay_ms=settings.watermark_delay_ms,
            marker_horizon_ms=settings.marker_horizon_ms,
            max_event_bytes=settings.max_event_bytes,
            action_topic=settings.topic_actions,
        )
        self._next_offset: dict[TP, int] = {}
        self._reindex = True

    # -- rebalances ------------------------------------------------------------------------------
    def on_assignment_changed(self) -> None:
        self._reindex = True

    def _owned_partitions(self) -> set[int]:
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.settings.topic_interactions}

    def _ensure_index(self) -> None:
        if self._reindex:
            owned = self._owned_partitions()
            self.core.forget_partitions(set(self.core._heaps) - owned)
            n = self.core.rebuild_index(owned)
            self._next_offset = {tp: o for tp, o in self._next_offset.items() if tp.partition in owned}
            log.info("join index rebuilt", extra={"partitions": sorted(owned), "states": n})
            self._reindex = False

    def caught_up(self, partition: int) -> set[str]:
        """Inputs of this partition that have nothing more to deliver right now."""
        done = set()
        committed = getattr(self.app.consumer, "_committed_offset", {})
        for kind, topic in self.topic_of.items():
            tp = TP(topic, partition)
            try:
                hw = self.app.consumer.highwater(tp)
            except Exception:
                hw = None
            pos = self._next_offset.get(tp)
            if pos is None:
                pos = committed.get(tp)
            if hw is not None and (hw == 0 or (pos is not None and pos >= hw)):
                done.add(kind)
        return done

    # -- the batch step --------------------------------------------------------------------------
    def join(self, events: Iterable[faust.EventT]) -> JoinOutput:
        self._ensure_index()
        partitions = set()
        for ev in events:
            m = ev.message
            kind = self.kinds[m.topic]
            rec = record_from_kafka(kind, m.topic, m.partition, m.offset, m.key, m.value, m.headers,
                                    int(m.timestamp * 1000) if m.timestamp else None)
            self.core.apply(rec)
            self.metrics.events_consumed.labels(kind).inc()
            self._next_offset[m.tp] = m.offset + 1
            partitions.add(m.partition)
        for p in sorted(partitions):
            wm = self.core.advance(p, self.caught_up(p))
            if wm is not None:
                self.metrics.watermark.labels(str(p)).set(wm / 1000)
        return self.core.drain()

    async def step(self, events: list[faust.EventT]) -> None:
        """Join a batch, then write state changes, candidates and dead letters in one flush.
        Candidates go to the partition their request came from (same key, same partitioner)."""
        started = time.perf_counter()
        out = self.join(events)
        for c in out.candidates:
            self.sink.add(self.settings.topic_candidates, c.partition, c.key, c.value)
        for d in out.deadletters:
            self.sink.add(self.settings.topic_deadletter, d.source_partition, d.key, self.codec.encode("deadletter", d.to_dict()))
        await self.sink.flush()
        now_ms = time.time() * 1000
        for c in out.candidates:
            self.metrics.candidates.labels(c.user_action, c.label).inc()
            if c.trigger_timestamp_ms:
                self.metrics.latency.observe(max(0.0, now_ms - c.trigger_timestamp_ms) / 1000)
        for d in out.deadletters:
            self.metrics.deadletters.labels(d.reason).inc()
            log.log(logging.DEBUG if d.reason in EXPECTED_REASONS else logging.WARNING, "dead letter",
                    extra={"reason": d.reason, "detail": d.detail, "topic": d.source_topic,
                           "partition": d.source_partition, "offset": d.source_offset})
        self.metrics.duplicates.inc(self.core.stats.pop("duplicates", 0))
        self.metrics.pending.set(len(self.store))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)


def attach_join(app: faust.App, settings: Settings, codec: Codec, metrics: JoinMetrics) -> Joiner:
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(settings.topic_interactions, settings.topic_actions, **raw)
    table = app.Table("join-state", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    joiner = Joiner(app, settings, codec, metrics, table)

    @app.agent(source, name="join")
    async def join(stream):
        async for batch in stream.take_events(settings.join_batch_size, within=settings.join_batch_ms / 1000):
            await joiner.step(batch)

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs):
        joiner.on_assignment_changed()

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs):
        joiner.on_assignment_changed()

    return joiner
