"""Batched output: the records a step writes go to the broker as one Kafka record batch per
topic-partition, and the step waits for the acks.

Faust's `send_soon` hands messages to aiokafka one at a time through a 100-message buffer; at two
changelog writes and half a candidate per event that buffer, not the join, set the pace. Waiting
for the acks before the step returns keeps at-least-once exact: Faust acks (and later commits) a
batch's input offsets only after its outputs are on the broker.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any


_NO_HEADERS: list = []  # shared, never mutated: aiokafka wants a list


class OutputError(RuntimeError):
    """The broker refused an output batch: the step fails, its inputs are not acknowledged."""


class BatchSink:
    def __init__(self, producer_factory):
        self._producer_factory = producer_factory  # -> aiokafka.AIOKafkaProducer (started)
        self._pending: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, list]]] = defaultdict(list)

    def add(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list = _NO_HEADERS
    ) -> None:
        self._pending[(topic, partition)].append((key, value, headers))

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    async def flush(self) -> int:
        if not self._pending:
            return 0
        producer: Any = self._producer_factory()
        pending, self._pending = self._pending, defaultdict(list)
        futures = []
        n = 0
        for (topic, partition), records in pending.items():
            batch = producer.create_batch()
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise OutputError(
                            f"a record of {len(value or b'')} bytes does not fit in one batch for {topic}"
                        )
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            n += len(records)
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise OutputError(f"{len(errors)} of {len(futures)} output batches failed: {errors[0]!r}")
        return n
