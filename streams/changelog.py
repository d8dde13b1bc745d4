"""Changelog-backed state for a keyed stream operator: a dict per worker, a compacted topic as the
source of truth, restored partition by partition when a worker is assigned them.

The operator flushes its outputs, then the changelog, then commits input offsets, each step only
after the previous one is acknowledged. After any crash the restored state is at least as new as
the committed offsets (nothing is skipped) and never newer than the outputs (nothing an output
depends on is lost): replaying from the committed offsets can only repeat outputs.
"""

from __future__ import annotations

import logging
from typing import Iterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.sink import BatchSink

log = logging.getLogger("flywheel.changelog")


class ChangelogStore:
    """A StateStore: dict in memory, every change also queued for the changelog topic."""

    def __init__(self, topic: str, sink: BatchSink):
        self.topic = topic
        self.sink = sink
        self._data: dict[bytes, bytes] = {}
        self._partition_of: dict[bytes, int] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self._data[key] = value
        self._partition_of[key] = partition
        self.sink.add(self.topic, partition, key, value)

    def delete(self, key: bytes, partition: int) -> None:
        self._data.pop(key, None)
        self._partition_of.pop(key, None)
        self.sink.add(self.topic, partition, key, None)  # tombstone: compaction drops the key

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def drop_partitions(self, partitions) -> None:
        gone = set(partitions)
        for key in [k for k, p in self._partition_of.items() if p in gone]:
            del self._data[key]
            del self._partition_of[key]

    async def restore(self, bootstrap: str, partitions, *, batch: int = 5000) -> int:
        """Read the changelog partitions from the beginning to their current end."""
        partitions = sorted(set(partitions))
        if not partitions:
            return 0
        self.drop_partitions(partitions)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        applied = 0
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                got = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch)
                for tp, messages in got.items():
                    for m in messages:
                        if m.value is None:
                            self._data.pop(m.key, None)
                            self._partition_of.pop(m.key, None)
                        else:
                            self._data[m.key] = m.value
                            self._partition_of[m.key] = tp.partition
                        applied += 1
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        log.info(
            "changelog restored",
            extra={"topic": self.topic, "partitions": partitions, "records": applied, "keys": len(self._data)},
        )
        return applied
