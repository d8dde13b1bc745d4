"""The request ⋈ action join as a state machine over a key-value store, driven by event time.

No Kafka in here: `JoinCore` takes raw records and returns candidates and dead letters; state
changes go to a `StateStore` once per batch. A request id is *pending* (interaction and actions so
far, `due` at the end of its settle window) or *settled* (digests of the applied events only, until
the marker horizon passes), so a replay or a duplicate changes nothing. The watermark of a
partition is the smallest "largest event time seen" over its inputs, minus the allowed
out-of-orderness; an idle input counts as that much further on (see `watermark`). Nothing here
reads the wall clock: replaying a log gives the same candidates byte for byte.

Design: docs/concepts/join.md#the-state-machine
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterator, Protocol

from schemas.codec import TICK_HEADER, TICK_MAC_HEADER, Codec, DecodeError, EncodeError, tick_authentic
from schemas.records import (
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    DeadLetter,
    FutureEvent,
    Interaction,
    InvalidEvent,
    UserAction,
    check_event_time_ahead,
    reference_time,
)
from streams.join.labels import build_candidate
from streams.join.state import JoinState, PendingAction, decode_state, encode_state

INTERACTION = "interaction"
ACTION = "action"
INPUTS = (INTERACTION, ACTION)
# a person acts on one answer a handful of times; a producer looping on one request id must not
# grow its state without bound (the state's digest count is a u16)
MAX_ACTIONS_PER_REQUEST = 256


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


@dataclass
class Record:
    """One consumed Kafka record, transport-neutral."""

    kind: str  # INTERACTION or ACTION
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None  # Kafka record timestamp (wall clock at append), for latency only


@dataclass
class Emitted:
    key: bytes
    value: bytes
    partition: int
    user_action: str
    label: str
    trigger_timestamp_ms: int | None


@dataclass
class JoinOutput:
    candidates: list[Emitted] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)


class StateStore(Protocol):
    """Where join state lives: a dict in tests, a changelog-backed store in the worker."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes, partition: int) -> None: ...
    def delete(self, key: bytes, partition: int) -> None: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def __len__(self) -> int: ...


class DictStore(dict):
    """A StateStore in memory, for tests and benchmarks of the join alone."""

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self[key] = value

    def delete(self, key: bytes, partition: int) -> None:
        self.pop(key, None)


class JoinCore:
    def __init__(
        self,
        codec: Codec,
        store: StateStore,
        *,
        settle_window_ms: int,
        watermark_delay_ms: int,
        marker_horizon_ms: int,
        max_event_bytes: int,
        action_topic: str = "flywheel.actions",
        interaction_topic: str = "flywheel.interactions",
        max_event_ahead_ms: int = -1,
        tick_key: str = "",
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        self.codec = codec
        self.max_event_ahead_ms = max_event_ahead_ms
        self.tick_key = tick_key
        self.wall_clock_ms = wall_clock_ms
        self.store = store
        self.settle_window_ms = settle_window_ms
        self.watermark_delay_ms = watermark_delay_ms
        self.marker_horizon_ms = marker_horizon_ms
        self.max_event_bytes = max_event_bytes
        self.action_topic = action_topic
        self.topic_interactions = interaction_topic
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        self._clock: dict[int, dict[str, int]] = {}
        self._last_wm: dict[int, int] = {}
        self._last_ts: dict[int, int | None] = {}
        self._states: dict[bytes, JoinState] = {}
        self._dirty: dict[bytes, JoinState] = {}
        self.stats: Counter = Counter()  # "duplicates": replays and retries ignored, read by the metrics
        self.out = JoinOutput()

    # -- state -----------------------------------------------------------------------------------
    def _load(self, key: bytes) -> JoinState | None:
        state = self._states.get(key)
        if state is None:
            raw = self.store.get(key)
            if raw is not None:
                state = self._states[key] = decode_state(self.codec, raw)
        return state

    def _save(self, key: bytes, state: JoinState, *, reschedule: int | None = None) -> None:
        self._states[key] = state
        self._dirty[key] = state
        if reschedule is not None:
            heapq.heappush(self._heaps.setdefault(state.partition, []), (reschedule, key))

    def flush_state(self) -> int:
        """Write every state changed since the last flush to the store (and so the changelog)."""
        for key, state in self._dirty.items():
            if state.deleted:
                self.store.delete(key, state.partition)
                if self._states.get(key) is state:
                    del self._states[key]
            else:
                self.store.put(key, encode_state(state), state.partition)
        n = len(self._dirty)
        self._dirty = {}
        return n

    def rebuild_index(self, partitions: Collection[int] | None = None) -> int:
        """Reload state and the due-time index from the store (after recovery or a rebalance), for
        the partitions this worker owns now."""
        self._heaps.clear()
        self._states.clear()
        self._dirty.clear()
        for key, raw in list(self.store.items()):
            state = decode_state(self.codec, raw)
            if partitions is None or state.partition in partitions:
                self._states[key] = state
                self._heaps.setdefault(state.partition, []).append((state.due, key))
        for h in self._heaps.values():
            heapq.heapify(h)
        return len(self._states)

    def forget_partitions(self, partitions: Collection[int]) -> None:
        for p in partitions:
            self._heaps.pop(p, None)
            self._clock.pop(p, None)
            self._last_wm.pop(p, None)
        gone = set(partitions)
        self._states = {k: s for k, s in self._states.items() if s.partition not in gone}

    @property
    def pending(self) -> int:
        return len(self._states)

    # -- input -----------------------------------------------------------------------------------
    def apply(self, rec: Record) -> None:
        """One record in. A record can fail (it becomes a dead letter with its reason and bytes);
        the join cannot: nothing a record holds raises out of here."""
        self._last_ts[rec.partition] = rec.timestamp_ms
        try:
            tick = rec.headers.get(TICK_HEADER)
            if tick is not None:
                return self._apply_tick(rec, tick)
            self._apply_event(rec)
        except Exception as exc:  # a bug that one record's content reaches: that record fails alone
            self._dead(rec, "unprocessable", f"{type(exc).__name__} while joining this record")

    def _apply_event(self, rec: Record) -> None:
        value = rec.value or b""
        if len(value) > self.max_event_bytes:
            return self._dead(rec, "oversized", f"{len(value)} bytes is over the limit of {self.max_event_bytes}")
        try:
            name = INTERACTION if rec.kind == INTERACTION else ACTION
            record, current = self.codec.upgrade(name, value, rec.headers)
            event = (Interaction if rec.kind == INTERACTION else UserAction).from_dict(record).check()
            check_event_time_ahead(name, event.event_time, self._reference(rec), self.max_event_ahead_ms)
        except DecodeError as exc:
            return self._dead(rec, exc.reason, exc.detail)
        except FutureEvent as exc:
            return self._dead(rec, FutureEvent.reason, str(exc))
        except (InvalidEvent, EncodeError, TypeError) as exc:
            return self._dead(rec, "invalid_event", str(exc))
        key = event.request_id.encode()
        if rec.key is not None and rec.key != key:
            return self._dead(
                rec,
                "invalid_event",
                "record key must be the request_id, so interactions and actions meet on one partition",
            )
        self._observe(rec.partition, rec.kind, event.event_time)
        if rec.kind == INTERACTION:
            self._apply_interaction(rec, key, event, current)
        else:
            self._apply_action(rec, key, event, current)

    def _reference(self, rec: Record) -> int:
        return reference_time(rec.timestamp_ms, self.wall_clock_ms())

    def _apply_tick(self, rec: Record, tick: bytes) -> None:
        """A tick moves event time on its partition: only a well-formed, plausible, (with a tick key)
        signed one, never further ahead of the wall clock than the bound."""
        if not (0 < len(tick) <= 16 and tick.isdigit()):
            return self._dead(
                rec, "invalid_event", f"{TICK_HEADER} header must be integer milliseconds, got {tick[:40]!r}"
            )
        t = int(tick)
        if not MIN_EVENT_TIME_MS <= t < MAX_EVENT_TIME_MS:
            return self._dead(rec, "invalid_event", f"{TICK_HEADER} {t} is not milliseconds since the epoch")
        if not tick_authentic(self.tick_key, tick, rec.headers.get(TICK_MAC_HEADER)):
            return self._dead(
                rec, "unauthenticated_tick", f"a tick without a valid {TICK_MAC_HEADER} (a tick key is configured)"
            )
        try:
            check_event_time_ahead("tick", t, self._reference(rec), self.max_event_ahead_ms)
        except FutureEvent as exc:
            return self._dead(rec, FutureEvent.reason, str(exc))
        self._observe(rec.partition, rec.kind, t)

    def _observe(self, partition: int, kind: str, t: int) -> None:
        clock = self._clock.setdefault(partition, {})
        if t > clock.get(kind, -1):
            clock[kind] = t

    def _apply_interaction(self, rec: Record, key: bytes, event: Interaction, data: bytes) -> None:
        d = digest(data)
        state = self._load(key)
        if state is not None and d in state.seen:
            self.stats["duplicates"] += 1
            return
        if state is not None and (state.settled or state.interaction is not None):
            return self._dead(rec, "duplicate_request", "another interaction with this request_id was joined already")
        due = event.event_time + self.settle_window_ms
        if state is None:
            state = JoinState(rec.partition, due)
        state.interaction, state.interaction_data, state.due = event, data, due
        state.seen.add(d)
        self._save(key, state, reschedule=due)

    def _apply_action(self, rec: Record, key: bytes, event: UserAction, data: bytes) -> None:
        d = digest(data)
        state = self._load(key)
        if state is not None and d in state.seen:
            self.stats["duplicates"] += 1
            return
        if state is not None and state.settled:
            return self._dead(rec, "late_action", "the request settled before this action arrived")
        if state is not None and len(state.actions) >= MAX_ACTIONS_PER_REQUEST:
            return self._dead(rec, "too_many_actions", f"a request holds at most {MAX_ACTIONS_PER_REQUEST} actions")
        if state is None:
            state = JoinState(rec.partition, event.event_time + self.settle_window_ms)
            reschedule = state.due
        elif state.interaction is None and event.event_time + self.settle_window_ms < state.due:
            state.due = reschedule = event.event_time + self.settle_window_ms
        else:
            reschedule = None
        state.actions.append(PendingAction(rec.offset, event, data))
        state.seen.add(d)
        self._save(key, state, reschedule=reschedule)

    def _dead(self, rec: Record, reason: str, detail: str) -> None:
        self.out.deadletters.append(
            DeadLetter(
                reason=reason,
                detail=detail,
                source_topic=rec.topic,
                source_partition=rec.partition,
                source_offset=rec.offset,
                key=rec.key,
                value=rec.value or b"",
                headers=dict(rec.headers or {}),
                failed_at=int(time.time() * 1000),
            )
        )

    # -- event time ------------------------------------------------------------------------------
    def watermark(self, partition: int, caught_up: Collection[str] | dict[str, int] = ()) -> int | None:
        """`caught_up`: inputs read to their end. As a dict (what the worker passes), each one's clock
        counts that many ms past its latest event time (the wall time it has been silent: liveness
        that a backlog's fast event time cannot outrun, and an input not heard from still holds);
        as a plain collection, those inputs do not hold the watermark back at all."""
        clock = self._clock.get(partition, {})
        if isinstance(caught_up, dict):
            clock = {k: t + max(0, caught_up.get(k, 0)) for k, t in clock.items()}
            caught_up = ()
        waiting = [clock.get(k) for k in INPUTS if k not in caught_up]
        if waiting:
            if None in waiting:
                return None
            wm = min(waiting)
        elif clock:
            wm = max(clock.values())
        else:
            return None
        wm -= self.watermark_delay_ms
        wm = max(wm, self._last_wm.get(partition, wm))
        self._last_wm[partition] = wm
        return wm

    def advance(self, partition: int, caught_up: Collection[str] = ()) -> int | None:
        """Settle every request of `partition` whose due time the watermark has passed."""
        wm = self.watermark(partition, caught_up)
        heap = self._heaps.get(partition)
        if wm is None or not heap:
            return wm
        trigger_ts = self._last_ts.get(partition)
        while heap and heap[0][0] <= wm:
            due, key = heapq.heappop(heap)
            state = self._load(key)
            if state is None or state.due != due or state.deleted:
                continue  # stale index entry
            if state.settled:
                state.deleted = True
                self._save(key, state)
            elif state.interaction is not None:
                try:
                    self._settle(key, state, trigger_ts)
                except Exception as exc:  # one request's content broke the candidate: it fails alone
                    self._unsettleable(key, state, exc)
            else:
                self._orphan(key, state)
        return wm

    def _settle(self, key: bytes, state: JoinState, trigger_ts: int | None) -> None:
        actions = []
        for a in state.actions:
            if a.action.event_time > state.due:
                self._dead_pending(key, state, a, "late_action", "the action came after its request's settle window")
            else:
                actions.append(a.action)
        candidate = build_candidate(
            state.interaction,
            actions,
            settle_window_ms=self.settle_window_ms,
            settled_at=state.due,
        )
        self.out.candidates.append(
            Emitted(
                key=key,
                partition=state.partition,
                value=self.codec.encode("candidate", candidate.to_dict()),
                user_action=candidate.user_action,
                label=candidate.label,
                trigger_timestamp_ms=trigger_ts,
            )
        )
        state.settle(state.due + self.marker_horizon_ms)
        self._save(key, state, reschedule=state.due)

    def _unsettleable(self, key: bytes, state: JoinState, exc: Exception) -> None:
        self.out.deadletters.append(
            DeadLetter(
                reason="unprocessable",
                detail=f"{type(exc).__name__} while building this request's candidate",
                source_topic=self.topic_interactions,
                source_partition=state.partition,
                source_offset=-1,
                key=key,
                value=state.interaction_data or b"",
                headers={},
                failed_at=int(time.time() * 1000),
            )
        )
        for a in state.actions:
            self._dead_pending(key, state, a, "unprocessable", "its request's candidate could not be built")
        state.settle(state.due + self.marker_horizon_ms)
        self._save(key, state, reschedule=state.due)

    def _orphan(self, key: bytes, state: JoinState) -> None:
        for a in state.actions:
            self._dead_pending(
                key, state, a, "orphan_action", "no interaction with this request_id arrived within the settle window"
            )
        state.deleted = True
        self._save(key, state)

    def _dead_pending(self, key: bytes, state: JoinState, action: PendingAction, reason: str, detail: str) -> None:
        """A held action leaves as a dead letter (bytes in the current schema version, original offset)."""
        self.out.deadletters.append(
            DeadLetter(
                reason=reason,
                detail=detail,
                source_topic=self.action_topic,
                source_partition=state.partition,
                source_offset=action.offset,
                key=key,
                value=action.data,
                headers={},
                failed_at=int(time.time() * 1000),
            )
        )

    def drain(self) -> JoinOutput:
        """Outputs of the batch; the state changes go to the store first, so that a commit after
        the outputs are sent covers both."""
        self.flush_state()
        out, self.out = self.out, JoinOutput()
        return out

    def apply_all(self, records, caught_up=()) -> JoinOutput:
        """Apply records and settle what their event time allows: the service's batch step, also for tests."""
        for rec in records:
            self.apply(rec)
        for p in sorted({r.partition for r in records}):
            self.advance(p, caught_up(p) if callable(caught_up) else caught_up)
        return self.drain()
