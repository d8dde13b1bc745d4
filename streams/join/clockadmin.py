"""`flywheel clocks` for the join: what its state holds per partition, and removing what lies ahead.

`show` reads the changelog `<app_id>.join-state-changelog` to its end and reports, per partition,
the states held and the largest event time and due among them. `reset` deletes every state of one
partition whose event time lies after a given time by writing tombstones, and only with the join
stopped (its consumer group must have no members); those requests' events are then gone from the
join. The pure parts (`parse_head`, `rows`, `plan`, `consequences`) take decoded heads and return
data; the rest talks to the broker.

Design: docs/concepts/join.md#clock-repair
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from flywheel.settings import Settings
from streams.datasets.clockadmin import ClockAdminError, iso

_HEAD = struct.Struct("<BBIq")  # version, flags, partition, due: the start of every state (state.py, version 1)
STATE_VERSION = 1
SETTLED = 1
HAS_INTERACTION = 2
SAMPLE_KEYS = 10  # request ids listed in a reset's consequences


@dataclass(frozen=True)
class StateHead:
    """What `show` and `reset` need of one request's join state."""

    key: bytes
    partition: int
    due: int
    settled: bool
    has_interaction: bool

    def event_time(self, settle_window_ms: int, marker_horizon_ms: int) -> int:
        """The event time the state stands for: the interaction's (or, for actions alone, the first
        action's); a settled marker's due is its settle deadline plus the marker horizon."""
        return self.due - settle_window_ms - (marker_horizon_ms if self.settled else 0)


def parse_head(key: bytes, raw: bytes) -> StateHead | None:
    """The head of a changelog value; None when it is not a join state this code knows."""
    try:
        version, flags, partition, due = _HEAD.unpack_from(raw, 0)
    except struct.error:
        return None
    if version != STATE_VERSION:
        return None
    return StateHead(key, partition, due, bool(flags & SETTLED), bool(flags & HAS_INTERACTION))


def names(settings: Settings) -> tuple[str, str]:
    """(changelog topic, consumer group) of the join."""
    from streams.join.service import join_changelog, join_group

    return join_changelog(settings), join_group(settings)


# -- reading ---------------------------------------------------------------------------------------


def read_states(
    settings: Settings, partitions: Iterable[int] | None = None, timeout_s: float = 30.0
) -> tuple[dict[int, dict[bytes, StateHead]], dict[int, int]]:
    """The join's state as the changelog holds it now (latest value per key, tombstones applied):
    heads per partition, and per partition how many values were not join states."""
    import time

    from confluent_kafka import Consumer, TopicPartition

    topic, _ = names(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"flywheel-clocks-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "receive.message.max.bytes": 1024 * 1024 * 1024,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise ClockAdminError(f"the join's changelog {topic} does not exist (has the join run with this app id?)")
        wanted = sorted(md.partitions) if partitions is None else sorted(set(partitions))
        missing = [p for p in wanted if p not in md.partitions]
        if missing:
            raise ClockAdminError(
                f"the join's changelog has no partition {missing[0]} (it has {sorted(md.partitions)})"
            )
        heads: dict[int, dict[bytes, StateHead]] = {p: {} for p in wanted}
        unreadable: dict[int, int] = {p: 0 for p in wanted}
        ends = {}
        for p in wanted:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if ends:
            consumer.assign([TopicPartition(topic, p, -2) for p in sorted(ends)])
        deadline = time.monotonic() + timeout_s
        bad_keys: dict[int, set[bytes]] = {p: set() for p in wanted}
        while ends:
            if time.monotonic() > deadline:
                raise ClockAdminError(f"the broker did not give the join's changelog to its end in {timeout_s:.0f} s")
            m = consumer.poll(0.2)
            if m is None or m.error():
                continue
            p, key = m.partition(), m.key() or b""
            if m.offset() + 1 >= ends.get(p, 0):
                ends.pop(p, None)
            if m.value() is None:
                heads[p].pop(key, None)
                bad_keys[p].discard(key)
                continue
            head = parse_head(key, m.value())
            if head is None:
                heads[p].pop(key, None)
                bad_keys[p].add(key)
            else:
                heads[p][key] = head
                bad_keys[p].discard(key)
        for p, keys in bad_keys.items():
            unreadable[p] = len(keys)
        return heads, unreadable
    finally:
        consumer.close()


def running_members(settings: Settings) -> list[str]:
    """Members of the join's consumer group now (client id @ host): a running join worker."""
    from confluent_kafka.admin import AdminClient

    _, group = names(settings)
    admin = AdminClient({"bootstrap.servers": settings.broker_url})
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except Exception as exc:
        raise ClockAdminError(
            f"could not ask the broker whether the join is running ({type(exc).__name__}: {exc})"
        ) from None
    return [f"{m.client_id}@{m.host}" for m in desc.members]


def live_watermarks(metrics_text: str) -> dict[int, int]:
    """`flywheel_join_watermark_seconds{partition}` from a worker's /metrics text, in ms."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("flywheel_join_watermark_seconds{"):
            head, _, value = line.rpartition(" ")
            part = head.split('partition="', 1)[-1].split('"', 1)[0]
            try:
                out[int(part)] = int(float(value) * 1000)
            except ValueError:
                continue
    return out


def scrape(url: str, timeout_s: float = 1.0) -> str:
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=timeout_s).read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


# -- pure views ------------------------------------------------------------------------------------


def rows(
    heads: Mapping[int, Mapping[bytes, StateHead]],
    unreadable: Mapping[int, int],
    settle_window_ms: int,
    marker_horizon_ms: int,
    now_ms: int,
    max_ahead_ms: int,
    watermarks: Mapping[int, int] | None = None,
) -> list[dict]:
    """One row per partition of the join's state."""
    out = []
    for p in sorted(heads):
        states = list(heads[p].values())
        pending = [h for h in states if not h.settled]
        times = [h.event_time(settle_window_ms, marker_horizon_ms) for h in states]
        newest = max(times) if times else None
        bound = now_ms + max_ahead_ms if max_ahead_ms >= 0 else None
        wm = (watermarks or {}).get(p)
        out.append(
            {
                "role": "join",
                "partition": p,
                "states": len(states),
                "pending": len(pending),
                "settled": len(states) - len(pending),
                "max_event_time_ms": newest,
                "max_event_time": iso(newest),
                "ahead_s": None if newest is None else round((newest - now_ms) / 1000),
                "max_pending_due_ms": max((h.due for h in pending), default=None),
                "max_pending_due": iso(max((h.due for h in pending), default=None)),
                "ahead_states": 0 if bound is None else sum(t > bound for t in times),
                "unreadable": unreadable.get(p, 0),
                "watermark_ms": wm,
                "watermark": iso(wm),
                "suspect": bound is not None
                and ((newest is not None and newest > bound) or (wm is not None and wm > bound)),
            }
        )
    return out


def plan(
    heads: Mapping[bytes, StateHead], to_ms: int, settle_window_ms: int, marker_horizon_ms: int
) -> list[StateHead]:
    """The states of one partition a reset to `to_ms` deletes: those whose event time lies after it."""
    return sorted(
        (h for h in heads.values() if h.event_time(settle_window_ms, marker_horizon_ms) > to_ms),
        key=lambda h: (h.due, h.key),
    )


def consequences(
    doomed: list[StateHead], partition: int, to_ms: int, settle_window_ms: int, marker_horizon_ms: int
) -> list[str]:
    t = iso(to_ms)
    if not doomed:
        return [f"nothing to reset: no join state of partition {partition} stands for events after {t}"]
    pending = [h for h in doomed if not h.settled]
    settled = [h for h in doomed if h.settled]
    lines = []
    if pending:
        newest = max(h.event_time(settle_window_ms, marker_horizon_ms) for h in pending)
        sample = ", ".join(h.key.decode(errors="replace")[:64] for h in pending[:SAMPLE_KEYS])
        more = f" and {len(pending) - SAMPLE_KEYS} more" if len(pending) > SAMPLE_KEYS else ""
        lines.append(
            f"partition {partition}: {len(pending)} pending request(s) whose events lie after {t} (the newest at "
            f"{iso(newest)}) are deleted from the join's state: {sample}{more}"
        )
        lines.append(
            "their interactions and actions are gone from the join: no candidate will be emitted for them, and an "
            "action that arrives later for one of them is dead-lettered as an orphan_action; the records stay in the "
            "log and are not read again (the join's committed offsets are past them)"
        )
    if settled:
        lines.append(
            f"partition {partition}: {len(settled)} settled marker(s) of requests after {t} are deleted: their "
            "candidates were emitted already; a replay of their events would be joined again"
        )
    lines.append(
        "the join's event-time clock itself lives in the worker's memory: it is built again from the records "
        "after the committed offsets when the worker starts, and from now on the event-time bound dead-letters "
        "a record dated too far ahead (future_event) instead of letting it move the clock"
    )
    return lines


# -- writing ---------------------------------------------------------------------------------------


def delete_states(settings: Settings, partition: int, keys: Iterable[bytes]) -> int:
    """Tombstones for `keys` on the changelog's `partition`, acknowledged by the broker."""
    from confluent_kafka import Producer

    topic, _ = names(settings)
    producer = Producer(
        {
            "bootstrap.servers": settings.broker_url,
            "acks": "all",
            "enable.idempotence": True,
            "client.id": "flywheel-clocks",
        }
    )
    errors: list[Any] = []
    n = 0
    for key in keys:
        producer.produce(
            topic,
            key=key,
            value=None,
            partition=partition,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        n += 1
        producer.poll(0)
    if producer.flush(30) or errors:
        raise ClockAdminError(f"the broker did not acknowledge every tombstone: {errors[:1]}")
    return n
