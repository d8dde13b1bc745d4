"""The dataset builder service: gate outputs in, sealed 2-week-lagged datasets and ready events out.

Why not a Faust agent: a window may be sealed only when *every* partition's event time has passed
its end plus the lag, and a Faust agent in a consumer group sees only its share of the
partitions. So one builder reads all partitions of the gate's outputs (and the erasure topic)
with a plain consumer, keeps its positions and its window clock in Redis as one record (written
after each batch, so a restart resumes exactly where the state says), and seals windows in order.

Exactly one ready event per dataset: before announcing, the builder looks for the dataset id on
the ready topic; a crash between the directory's publication and the event re-sends it on the
next run, a crash after the event finds it and sends nothing.

A record can fail, the builder cannot: a record it cannot take (undecodable, invalid, dated too far
ahead of the wall clock, a tick; `intake.py` decides, purely) goes to the dead-letter topic with its
reason and original bytes, counted by `flywheel_datasets_deadletters_total{input, reason}`, and the
position moves past it; it never moves the window clock. The gate writes to its outputs only what it
decoded and encoded again (it dead-letters its own input), so whatever the builder cannot read on
them came from elsewhere and is dead-lettered here, once. Dead letters are acknowledged before the
state that moves past them is saved: a crash in between sends them again, never loses one. Only the
builder's own I/O (broker, Redis, disk) stops it, with a log line naming which, until it answers.

One active builder per flywheel: the active one holds a lease in Redis (`<app_id>:datasets:lease`,
LEASE_MS, refreshed by a thread). A builder that finds it held by another builder stands by: no
consumer, no spool, no Redis state, only a look at the lease every STANDBY_POLL_S; when the lease is
free (the active one stopped and let go of it, or died and it lapsed) the standby takes it, loads the
saved state and goes on (one log line, `flywheel_datasets_lease_takeovers_total`;
`flywheel_datasets_active` says which one is active). The lease fences the active one too: before it
touches the spool for a batch and before each seal it checks (compare-and-set) that the lease is
still its own, its state is saved by a script that writes only while the lease holds its value, and
a builder that finds the lease gone steps down to standby. A step that fails lets go of the lease
and starts over (claim, or stand by) from the saved state. `flywheel clocks reset --role datasets`
refuses while a builder holds the lease, and builders stand by while a reset holds it.

Erasure (`erasure.py`): a request puts the user's keyed pseudonyms on the erased list, takes the
user's items out of the review queue, and adds every sealed dataset holding the user to the pending
re-seals, which are saved with the state (and the erasure position) in the same fenced write. Pending
re-seals run before any window is sealed (a later window's duplicates are judged against the new
versions), oldest window first; each one publishes the new version, records it in the store's
`.superseded`, announces it, deletes the old one, and only then leaves the pending list: a crash
anywhere in between runs it again, and it finds what was done (same inputs, same content id).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Iterable

from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.consumers import paused, poll_window, rest
from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import DAY_MS, Settings
from schemas.codec import Codec
from schemas.records import DatasetReady
from streams.datasets import erasure, intake
from streams.datasets.builder import (
    SealInputs,
    SealResult,
    WindowBuilder,
    erased_forms,
    read_to_end,
    read_verdicts,
    source_name,
)
from streams.datasets.builder import message_headers as _headers
from streams.datasets.spool import WindowSpool
from flywheel.datastore import DatasetStore
from streams.datasets.windows import MEMBER, WindowClock
from flywheel.policy import GatePolicy
from streams.guards.store import read_hold

if TYPE_CHECKING:  # annotations only: nothing more is imported when the service runs
    import redis

    from streams.metrics import DatasetMetrics

log = logging.getLogger("flywheel.datasets")

WATERMARK_CHECK_S = 2.0
HOLD_CHECK_S = 1.0
LAG_CHECK_S = 10.0
LEASE_MS = 30_000  # a builder that stopped without letting go holds its lease this long
LEASE_REFRESH_S = 5.0
STANDBY_POLL_S = 1.0  # how often a standby builder looks whether the lease is free
RESET_MARK = b"reset:"  # the lease's value while `flywheel clocks reset` holds it

# compare-and-set on the lease: refresh (or let go of) it only while it holds our own value
_LEASE_REFRESH = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)
_LEASE_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# the builder's state is written only while the lease holds the writer's value (and the lease is refreshed)
_LEASE_SAVE = (
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('pexpire', KEYS[1], ARGV[2]) redis.call('set', KEYS[2], ARGV[3]) return 1"
)


def lease_key(settings: Settings) -> str:
    return f"{settings.app_id}:datasets:lease"


def state_key(settings: Settings) -> str:
    return f"{settings.app_id}:datasets:state"


class LeaseHeld(RuntimeError):
    """The builder's lease is held by someone else (another builder, or a clock reset): stand by."""

    def __init__(self, message: str, holder: str = "", reset: bool = False):
        super().__init__(message)
        self.holder = holder
        self.reset = reset


class LeaseLost(LeaseHeld):
    """The active builder found its lease gone (it lapsed, and another builder or a reset took it): step down."""


def _holder(value: bytes | None) -> str:
    return "nobody" if value is None else value.decode(errors="replace")[:200]


def _cause(exc: BaseException) -> str:
    """What an exception that stopped the builder points at, for the log line that says so: broker,
    redis, disk, lease (a clock reset holds it), or bug (no record's content gets that far)."""
    from confluent_kafka import KafkaException
    from redis.exceptions import RedisError

    if isinstance(exc, LeaseHeld):
        return "lease"
    if isinstance(exc, RedisError):
        return "redis"
    if isinstance(exc, KafkaException) or (
        isinstance(exc, RuntimeError) and any(word in str(exc) for word in ("broker", "acknowledged", "topic"))
    ):
        return "broker"
    if isinstance(exc, OSError):
        return "disk"
    return "bug"


class DatasetService:
    def __init__(
        self,
        settings: Settings,
        policy: GatePolicy,
        store: DatasetStore,
        redis_client: redis.Redis,
        metrics: DatasetMetrics | None = None,
        codec: Codec | None = None,
    ):
        self.settings = settings
        self.policy = policy
        self.store = store
        self.redis = redis_client
        self.metrics = metrics
        self.codec = codec or Codec()
        self.builder = WindowBuilder(settings, policy, store, self.codec)
        self.spool = WindowSpool(settings.seal_spool_dir)
        self.state_key = state_key(settings)
        self.lease_key = lease_key(settings)
        self.lease_value = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "since": int(time.time() * 1000),
                "id": os.urandom(6).hex(),
            },
            sort_keys=True,
        ).encode()
        self.erased_key = erasure.erased_key(settings)  # sorted set: keyed pseudonym -> when the entry may go
        self.key: bytes | None = None  # the pseudonym key (flywheel/pseudonyms.py), taken at load
        self.pending: list[
            str
        ] = []  # datasets to re-seal without erased users, oldest window first (saved with the state)
        self.reseal_failed: dict[str, str] = {}  # datasets whose re-seal cannot be done here, and why (saved)
        self.resealed: list = []  # this step's re-seals (erasure.Resealed)
        self.window_ms = policy.datasets.window_days * DAY_MS
        self.lag_ms = policy.datasets.lag_days * DAY_MS
        self.consumer: Consumer | None = None
        self.clock: WindowClock | None = None
        self.erasure_positions: dict[int, int] = {}
        self.verdicts_checked: dict[
            str, int
        ] = {}  # verdict partition -> offset below which bad verdicts were dead-lettered
        self._last_seen: dict[str, float] = {}
        self._last_check = 0.0
        self._rested = False  # the last step ended in a rest (its next poll waits longer: flywheel/consumers.py)
        self._producer: Producer | None = None
        self._hold: dict | None = None
        self._hold_checked = -HOLD_CHECK_S
        self._lag_checked = 0.0
        self._lease_stop: threading.Event | None = None
        self._lease_lost = False
        self.lease_ms = LEASE_MS
        self.active = False  # holds the lease and builds; False: stands by (or has not started)
        self._stood_by: LeaseHeld | None = None  # why it stood by, until it takes the lease
        self._next_claim = 0.0
        self._stop: threading.Event | None = None  # run()'s: a standby's wait ends with it
        self._sealed: list[SealResult] = []
        self.deadletters = getattr(metrics, "builder_deadletters", None)
        if metrics is not None and self.deadletters is None:
            from prometheus_client import Counter

            self.deadletters = metrics.builder_deadletters = Counter(
                "flywheel_datasets_deadletters_total",
                "Records the dataset builder sent to the dead-letter topic, by input (passed, rejected, erasure, verdicts) "
                "and reason code (future_event, undecodable, invalid_event, unexpected_tick, ...)",
                ["input", "reason"],
                registry=metrics.registry,
            )
        self.reseals = getattr(metrics, "builder_reseals", None)
        if metrics is not None and self.reseals is None:
            from prometheus_client import Counter, Gauge

            self.reseals = metrics.builder_reseals = Counter(
                "flywheel_datasets_reseals_total",
                "Sealed datasets replaced by a version without erased users, by mode: log (sealed again from the log), "
                "shards (the log no longer holds the window: its shards rewritten), failed (neither could be done)",
                ["mode"],
                registry=metrics.registry,
            )
            metrics.builder_reseal_pending = Gauge(
                "flywheel_datasets_reseals_pending",
                "Sealed datasets waiting to be re-sealed without erased users",
                registry=metrics.registry,
            )

    # -- state ---------------------------------------------------------------------------------------
    def _sources(self) -> list[str]:
        md = self._consumer().list_topics(timeout=10)
        out = []
        for topic in (self.settings.topic_passed, self.settings.topic_rejected):
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                raise RuntimeError(f"topic {topic} does not exist: run `flywheel topics create`")
            out += [source_name(topic, p) for p in sorted(t.partitions)]
        return out

    def _consumer(self) -> Consumer:
        if self.consumer is None:
            self.consumer = Consumer(
                {
                    "bootstrap.servers": self.settings.broker_url,
                    "group.id": f"{self.settings.app_id}-datasets",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.max.bytes": 16 * 1024 * 1024,
                    # the embedded broker answers a fetch with all it has, past fetch.max.bytes
                    "receive.message.max.bytes": 1024 * 1024 * 1024,
                }
            )
        return self.consumer

    def load(self) -> None:
        """Take the lease (LeaseHeld when another builder or a reset holds it), then start from the saved state."""
        if self._lease_stop is None:
            self._claim_lease()
        from flywheel.pseudonyms import resolve_key, resolve_keys

        self.key = resolve_key(self.settings, self.redis)
        self.older_keys = resolve_keys(self.settings, self.redis)[1:]  # after a rotation: datasets sealed before it
        erasure.migrate(self.redis, self.settings, self.policy, self.key)
        raw = self.redis.get(self.state_key)
        sources = self._sources()
        self.pending, self.reseal_failed = [], {}
        if raw:
            saved = json.loads(raw)
            self.clock = WindowClock.from_json(saved["clock"])
            self.erasure_positions = {int(k): v for k, v in saved.get("erasure", {}).items()}
            self.verdicts_checked = {str(k): int(v) for k, v in saved.get("verdicts_checked", {}).items()}
            self.pending = [str(d) for d in saved.get("reseal", [])]
            self.reseal_failed = {str(k): str(v) for k, v in saved.get("reseal_failed", {}).items()}
        else:
            self.clock = WindowClock(self.window_ms, self.lag_ms, sources)
        for s in sources:
            self.clock.add_source(s)
        assignment = []
        for s in sources:
            topic, _, p = s.rpartition("/")
            assignment.append(TopicPartition(topic, int(p), self.clock.position(s)))
        md = (
            self._consumer()
            .list_topics(self.settings.topic_erasure, timeout=10)
            .topics.get(self.settings.topic_erasure)
        )
        if md is not None and md.error is None:
            for p in md.partitions:
                assignment.append(TopicPartition(self.settings.topic_erasure, p, self.erasure_positions.get(p, 0)))
        self.consumer.assign(assignment)
        self.spool.resume(self.clock.pending(), self.clock.positions())
        now = time.monotonic()
        self._last_seen = {s: now for s in sources}

    def save(self) -> None:
        """The clock, positions and erasure positions as one Redis record, written only while this
        builder holds the lease (LeaseLost otherwise: nothing is written)."""
        if self._lease_lost:
            raise self._lost()
        self.spool.flush()  # the spool holds at least what the saved positions say was read
        state = {"clock": self.clock.to_json(), "erasure": self.erasure_positions}
        if self.verdicts_checked:
            state["verdicts_checked"] = self.verdicts_checked
        if self.pending:
            state["reseal"] = self.pending
        if self.reseal_failed:
            state["reseal_failed"] = self.reseal_failed
        if not self.redis.eval(
            _LEASE_SAVE, 2, self.lease_key, self.state_key, self.lease_value, self.lease_ms, json.dumps(state)
        ):
            self._lease_lost = True
            raise self._lost()

    # -- the lease -------------------------------------------------------------------------------------
    def _claim_lease(self) -> None:
        """Take `<app_id>:datasets:lease` when it is free (or still ours) and keep it refreshed; raise
        LeaseHeld, naming the holder, while another builder or a clock reset holds it."""
        r = self.redis
        for _ in range(2):  # a lease that lapses between the two calls is free: once more
            if r.set(self.lease_key, self.lease_value, nx=True, px=self.lease_ms):
                break
            held = r.get(self.lease_key)
            if held is None:
                continue
            if held == self.lease_value:  # ours still (a step failed before letting go): keep it
                if r.eval(_LEASE_REFRESH, 1, self.lease_key, self.lease_value, self.lease_ms):
                    break
                continue
            if held.startswith(RESET_MARK):
                raise LeaseHeld(
                    "`flywheel clocks reset` holds the builder's lease: waiting for it", _holder(held), reset=True
                )
            raise LeaseHeld(f"another dataset builder holds the lease: {_holder(held)}", _holder(held))
        else:
            raise LeaseHeld(
                f"the lease changed hands while it was claimed: {_holder(r.get(self.lease_key))}",
                _holder(r.get(self.lease_key)),
            )
        self._lease_lost = False
        if self._lease_stop is None:
            self._lease_stop = threading.Event()
            threading.Thread(
                target=self._keep_lease, args=(self._lease_stop,), name="datasets-lease", daemon=True
            ).start()

    def _keep_lease(self, stop: threading.Event) -> None:
        while not stop.wait(LEASE_REFRESH_S):
            try:
                if not self.redis.eval(_LEASE_REFRESH, 1, self.lease_key, self.lease_value, self.lease_ms):
                    self._lease_lost = True  # the main loop steps down at its next check
                    return
            except Exception as exc:  # Redis away: the main loop finds out too
                log.warning("lease not refreshed", extra={"error": type(exc).__name__})

    def _fence(self) -> None:
        """Before the builder writes (spool, Redis, the store): the lease still holds our value
        (compare-and-set, refreshing it), else LeaseLost."""
        if self._lease_lost or not self.redis.eval(_LEASE_REFRESH, 1, self.lease_key, self.lease_value, self.lease_ms):
            self._lease_lost = True
            raise self._lost()

    def _lost(self) -> LeaseLost:
        try:
            value = self.redis.get(self.lease_key)
        except Exception:  # noqa: BLE001 - only for the message
            value = b"unknown"
        held = _holder(value)
        return LeaseLost(
            f"the builder's lease is no longer its own (now held by {held})",
            held,
            reset=value is not None and value.startswith(RESET_MARK),
        )

    def _release_lease(self) -> None:
        if self._lease_stop is not None:
            self._lease_stop.set()
            self._lease_stop = None
            try:
                self.redis.eval(_LEASE_RELEASE, 1, self.lease_key, self.lease_value)
            except Exception as exc:  # it expires on its own
                log.warning("lease not released", extra={"error": type(exc).__name__})

    def _set_active(self, active: bool) -> None:
        self.active = active
        gauge = getattr(self.metrics, "active", None)
        if gauge is not None:
            gauge.set(1.0 if active else 0.0)

    def _activate(self, timeout: float) -> bool:
        """Take the lease and load the saved state (True), or stand by: wait up to `timeout` (False)."""
        now = time.monotonic()
        if now < self._next_claim:
            self._wait(min(timeout, self._next_claim - now))
            return False
        try:
            self._claim_lease()
        except LeaseHeld as held:
            self._next_claim = time.monotonic() + STANDBY_POLL_S
            self._standby(held)
            self._wait(min(timeout, STANDBY_POLL_S))
            return False
        self.load()
        before, self._stood_by = self._stood_by, None
        if (
            before is not None and before.holder == "nobody"
        ):  # its own lease lapsed (a long pause): it stepped down and back
            log.warning("dataset builder active: its lease had lapsed; it goes on from the saved state")
        elif before is not None and not before.reset:
            log.warning(
                f"dataset builder active: took the lease from {before.holder}", extra={"previous": before.holder}
            )
            takeovers = getattr(self.metrics, "takeovers", None)
            if takeovers is not None:
                takeovers.inc()
        else:
            log.info("dataset builder active: it holds the lease", extra={"lease": _holder(self.lease_value)})
        self._set_active(True)
        return True

    def _standby(self, held: LeaseHeld) -> None:
        """No consumer, no spool, no state: only the lease is looked at, every STANDBY_POLL_S."""
        if self._stood_by is None or self._stood_by.holder != held.holder:
            log.warning(f"dataset builder standby: {held}", extra={"holder": held.holder})
        self._stood_by = held
        self._set_active(False)

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._stop is not None:
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)

    def _restart(self) -> None:
        """Back to the start: consumer and spool closed, lease let go; the next step claims it again
        (or stands by) and loads the saved state."""
        self.clock = None
        self.spool.close()
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception as exc:  # noqa: BLE001 - already failing; the cause is logged by the caller
                log.warning("consumer not closed", extra={"error": type(exc).__name__})
            self.consumer = None
        self._release_lease()
        self._set_active(False)

    # -- the loop --------------------------------------------------------------------------------------
    def step(self, timeout: float = 0.5) -> list[SealResult]:
        """One batch: observe, persist, seal what is ready. Returns the datasets sealed. A standby
        builder only looks at the lease (and waits up to `timeout`). A builder that finds its lease
        gone steps down to standby; one whose step fails lets go of it and raises."""
        self._sealed = []
        try:
            if self.clock is None and not self._activate(timeout):
                return []
            self._step(timeout)
        except LeaseHeld as exc:  # fenced: the lease is someone else's now
            self._restart()
            self._standby(exc)
        except BaseException:
            self._restart()
            raise
        return self._sealed

    def _step(self, timeout: float) -> None:
        backoff = self.settings.empty_fetch_backoff_ms / 1000
        batch = self.consumer.consume(2000, poll_window(timeout, bool(backoff), self._rested))
        self._rested = not batch and bool(backoff)
        if self._rested:
            rest(self.consumer, max(backoff, timeout))
        if batch:
            self._fence()  # before the batch goes to the spool and Redis
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        dead: list[intake.Rejected] = []
        for m in batch:
            if m.error():
                continue
            if m.topic() == self.settings.topic_erasure:
                self._erase(m, dead)
                continue
            source = source_name(m.topic(), m.partition())
            self._last_seen[source] = now
            headers = _headers(m)
            try:
                event_time = intake.candidate_time(
                    self.codec,
                    m.value(),
                    headers,
                    record_timestamp_ms=_record_ts(m),
                    now_ms=now_ms,
                    max_ahead_ms=self.settings.max_event_ahead_ms,
                )
            except intake.RecordError as exc:  # it moves the position, never the clock
                self.clock.skip(source, m.offset())
                dead.append(intake.rejected(exc, m.topic(), m.partition(), m.offset(), m.value(), m.key(), headers))
                continue
            outcome = self.clock.observe(source, m.offset(), event_time)
            if outcome.kind == MEMBER:
                self.spool.append(outcome.window, source, m.offset(), m.value() or b"", headers)
            if self.metrics is not None:
                self.metrics.observed(outcome.kind, m.topic() == self.settings.topic_passed)
        if dead:
            self.send_dead(dead)
        if now - self._last_check >= WATERMARK_CHECK_S:
            self._last_check = now
            self._mark_idle(now)
        if self.metrics is not None and now - self._lag_checked >= LAG_CHECK_S:
            self._lag_checked = now
            self._observe_lag()
        if batch:
            self.save()
        self.resealed = []
        if self.pending:  # a guard's hold on datasets does not hold back an erasure
            self._reseal_pending()
        ready = self.clock.ready()
        if ready and not self._held(now):
            for span in ready:
                self._sealed.append(self._seal(span))
        if self.metrics is not None:
            self.metrics.clock(self.clock)

    def _held(self, now: float) -> bool:
        """A guard's hold on datasets (`flywheel guards release datasets` lifts it): due windows wait."""
        if now - self._hold_checked >= HOLD_CHECK_S:
            self._hold_checked = now
            hold = read_hold(self.redis, self.settings.app_id, "datasets")
            if hold != self._hold:
                log.warning("datasets held" if hold else "datasets hold released", extra=hold or {})
            self._hold = hold
            if self.metrics is not None:
                self.metrics.held.set(1.0 if hold else 0.0)
        return self._hold is not None

    def run(self, stop: threading.Event) -> None:
        log.info(
            "dataset builder started",
            extra={
                "store": self.store.uri(""),
                "window_days": self.policy.datasets.window_days,
                "lag_days": self.policy.datasets.lag_days,
            },
        )
        self._stop = stop
        while not stop.is_set():
            try:
                self.step()
            except (
                Exception
            ) as exc:  # broker, Redis or disk away (no record's content gets here): wait, go on from the saved state
                cause = _cause(exc)
                log.error(
                    f"dataset builder stopped ({cause}): retrying from the saved state",
                    exc_info=cause == "bug",
                    extra={"cause": cause, "error": type(exc).__name__, "detail": str(exc)[:300]},
                )
                stop.wait(2.0)
        self.close()

    def close(self) -> None:
        """A clean stop: the lease is let go of, so a standby builder takes over at once."""
        self.spool.close()
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self._producer is not None:
            self._producer.flush(10)
        self._release_lease()
        self.clock = None
        self._set_active(False)

    # -- pieces ------------------------------------------------------------------------------------------
    def producer(self) -> Producer:
        if self._producer is None:
            conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
            self._producer = Producer(
                {
                    **conf,
                    "bootstrap.servers": self.settings.broker_url,
                    "client.id": "flywheel-datasets",
                    "logger": logging.getLogger("flywheel.datasets.librdkafka"),
                }
            )
        return self._producer

    def _input(self, topic: str) -> str:
        s = self.settings
        return {
            s.topic_passed: "passed",
            s.topic_rejected: "rejected",
            s.topic_erasure: "erasure",
            s.topic_verdicts: "verdicts",
        }.get(topic, "other")

    def send_dead(self, rejected: Iterable[intake.Rejected]) -> int:
        """Dead letters on their topic, acknowledged before this returns (else the broker is away: raise)."""
        rejected = list(rejected)
        if not rejected:
            return 0
        producer, errors, now_ms = self.producer(), [], int(time.time() * 1000)
        for r in rejected:
            producer.produce(
                self.settings.topic_deadletter,
                key=r.key,
                value=self.codec.encode("deadletter", r.dead_letter(now_ms).to_dict()),
                on_delivery=lambda err, _m: errors.append(err) if err else None,
            )
            log.warning(
                "dead letter",
                extra={
                    "reason": r.reason,
                    "detail": r.detail,
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                },
            )
        if producer.flush(30) or errors:
            raise RuntimeError(f"dead letters were not acknowledged by the broker: {errors[:1]}")
        if self.deadletters is not None:
            for r in rejected:
                self.deadletters.labels(self._input(r.topic), r.reason).inc()
        return len(rejected)

    def _observe_lag(self) -> None:
        """Messages on the gate's outputs not yet read: the last stage's backlog, so a stalled pipeline shows."""
        lag: dict[str, int] = {}
        try:
            for source in self._last_seen:
                topic, _, p = source.rpartition("/")
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, int(p)), timeout=2, cached=False)
                kind = "passed" if topic == self.settings.topic_passed else "rejected"
                lag[kind] = lag.get(kind, 0) + max(0, high - self.clock.position(source))
        except Exception as exc:  # a figure for the dashboards: the next check will do
            log.warning("consumer lag not read", extra={"error": type(exc).__name__})
            return
        for kind, n in lag.items():
            self.metrics.lag.labels(kind).set(n)

    def _mark_idle(self, now: float) -> None:
        idle_s = self.settings.idle_partition_ms / 1000
        for source, seen in self._last_seen.items():
            if now - seen < idle_s or self.clock.is_idle(source):
                continue
            topic, _, p = source.rpartition("/")
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, int(p)), timeout=5, cached=False)
            if self.clock.position(source) >= high:
                self.clock.mark_idle(source)

    def _erase(self, m, dead: list[intake.Rejected]) -> None:
        """One erasure request: the erased list, the review queue, the datasets to re-seal (all
        idempotent: a request read again after a crash does the same and adds nothing)."""
        self.erasure_positions[m.partition()] = m.offset() + 1
        headers = _headers(m)
        try:
            req = intake.erasure_request(self.codec, m.value(), headers)
        except intake.RecordError as exc:
            dead.append(intake.rejected(exc, m.topic(), m.partition(), m.offset(), m.value(), m.key(), headers))
            return
        forms = erased_forms(req.user_id, self.key, self.older_keys)
        now_ms = int(time.time() * 1000)
        erasure.record(self.redis, self.settings, self.policy, forms, max(now_ms, int(req.requested_at or 0)))
        removed = erasure.remove_from_review(self.redis, self.settings, forms, self.key)
        held = [
            d for d in erasure.affected(self.store, forms, erasure.legacy_hashes(req.user_id)) if d not in self.pending
        ]
        self.pending = self._in_window_order(self.pending + held)
        erasure.note(
            self.redis,
            self.settings,
            erasure.main_pseudonym(req.user_id, self.key),
            requested_at=int(req.requested_at or now_ms),
            read_at=now_ms,
            review_removed=removed,
            datasets=held,
        )
        if self.metrics is not None:
            self.metrics.erasures.inc()
        log.info(
            "erasure recorded",
            extra={
                "partition": m.partition(),
                "offset": m.offset(),
                "review_items_removed": len(removed),
                "datasets_to_reseal": len(held),
            },
        )

    def _in_window_order(self, ids: list[str]) -> list[str]:
        order = {m["dataset_id"]: i for i, m in enumerate(self.store.list())}
        return sorted(dict.fromkeys(ids), key=lambda d: order.get(d, -1))

    def _reseal_pending(self) -> None:
        """Every pending re-seal, oldest window first; each one leaves the list only when done."""
        gauge = getattr(self.metrics, "builder_reseal_pending", None)
        while self.pending:
            if gauge is not None:
                gauge.set(len(self.pending))
            old = self.pending[0]
            self._fence()  # only the lease's holder re-seals
            log.info("erasure: re-seal started", extra={"dataset_id": old})
            erased = erasure.current(self.redis, self.settings)
            with paused(self.consumer):
                done = erasure.reseal(
                    self.builder, self.store, old, erased, self.key, self.codec, self.policy.review.safety_floor
                )
            self._fence()  # lost meanwhile: the next holder re-seals it again (the same content id) and goes on
            if done.mode == "failed":
                self.reseal_failed[old] = done.reason[:500]
                log.error(
                    "erasure: the dataset cannot be re-sealed without the user",
                    extra={"dataset_id": old, "reason": done.reason[:300]},
                )
            else:
                if done.result is not None:
                    self.announce(done.result)
                deleted = erasure.finish(self.store, done)
                self.reseal_failed.pop(old, None)
                log.info(
                    "erasure: dataset re-sealed",
                    extra={
                        "dataset_id": old,
                        "new_dataset_id": done.new_id,
                        "mode": done.mode,
                        "seconds": round(done.seconds, 2),
                        "deleted": deleted,
                    },
                )
            if self.reseals is not None and done.mode != "done":
                self.reseals.labels(done.mode).inc()
            self.pending.pop(0)
            self.save()
            self.resealed.append(done)
        if gauge is not None:
            gauge.set(0)

    def inputs(self) -> SealInputs:
        erased = erasure.current(self.redis, self.settings)
        review = self.policy.review
        if review.enabled or review.required:
            gold, failed, offsets, bad = read_verdicts(self.settings, self.codec, review.safety_floor)
            # the whole topic is read at every seal: a bad verdict is dead-lettered the first time only
            self.send_dead(r for r in bad if r.offset >= self.verdicts_checked.get(str(r.partition), 0))
            self.verdicts_checked.update(offsets)
            # what people failed leaves every later dataset, and every replay of the sealed ones
            self.store.write_withdrawn(failed)
            return SealInputs(erased, gold if review.required else None, offsets, failed, self.key)
        return SealInputs(erased, key=self.key)

    def _seal(self, span) -> SealResult:
        started = time.perf_counter()
        self._fence()  # only the lease's holder seals
        with paused(self.consumer):  # nothing to fetch for while the seal has the cores
            result = self.builder.seal(span, self.inputs())
        self._fence()  # lost during the seal: the next holder seals the window (the same inputs, the same dataset) and announces it
        self.send_dead(
            result.rejected
        )  # candidates that failed at the seal (a re-seal after a crash may send them again)
        self.announce(result)
        self.clock.seal(span.index)
        self.save()
        self.spool.drop(span.index)
        if self.metrics is not None:
            self.metrics.sealed(result, time.perf_counter() - started)
        return result

    def announce(self, result: SealResult) -> bool:
        """Send the dataset's ready event unless the topic holds it already; True when sent."""
        for m in read_to_end(self.settings, self.settings.topic_datasets_ready):
            if intake.dataset_ready_id(self.codec, m.value(), _headers(m)) == result.dataset_id:
                return False
        m = result.record
        window, counts = m.window or {}, m.counts or {}
        event = DatasetReady(
            dataset_id=result.dataset_id,
            uri=result.uri,
            window_start=window["start_ms"],
            window_end=window["end_ms"],
            lag_ms=m.lag_ms,
            policy_version=m.policy_version,
            counts={k: int(v) for k, v in counts["split"].items()}
            | {"records": m.records}
            | {f"window.{k}": int(window[k]) for k in ("decisions", "passed") if k in window},
            first_event_time=int(m.first_event_time or 0),
            sealed_at=int(time.time() * 1000),
        )
        errors = []
        producer = self.producer()
        producer.produce(
            self.settings.topic_datasets_ready,
            key=result.dataset_id.encode(),
            value=self.codec.encode("dataset_ready", event.to_dict()),
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        if producer.flush(30) or errors:
            raise RuntimeError(f"the ready event of {result.dataset_id} was not acknowledged: {errors[:1]}")
        log.info(
            "dataset ready",
            extra={"dataset_id": result.dataset_id, "uri": result.uri, "records": m.records},
        )
        return True


def _record_ts(m) -> int | None:
    """The Kafka record's timestamp in ms, when it has one."""
    kind, ts = m.timestamp()
    return ts if kind and ts > 0 else None


def run_datasets(settings: Settings) -> None:
    """`flywheel datasets run`: blocks until SIGINT/SIGTERM."""
    import signal

    import redis

    from flywheel.metrics import serve_metrics
    from streams.metrics import DatasetMetrics

    policy = GatePolicy.load(settings.gate_policy)
    metrics = DatasetMetrics()
    serve_metrics(metrics.registry, settings.datasets_metrics_port)
    service = DatasetService(
        settings,
        policy,
        DatasetStore(settings.datasets_url),
        redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5),
        metrics,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.run(stop)
