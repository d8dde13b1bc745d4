"""`flywheel trainer`: a consumer group on `flywheel.datasets.ready`, one cycle per dataset.

The offset of a ready event is committed only after the cycle's outcome is recorded in the
registry and its models event acknowledged by the broker. So a crash in the middle of training
restarts that cycle, and a crash after the outcome was recorded does not train again: the registry
knows every dataset id it finished (and re-sends the event if the crash came before it).

A record can fail; the trainer cannot. An event that does not decode or validate (`read_ready`,
the per-record path), or that names a dataset the store has not published, goes to the
dead-letter topic with its bytes, and the trainer goes on. A cycle that raises is retried; if it
raises something other than an infrastructure error (broker, Redis, disk, memory)
`CYCLE_ATTEMPTS` times on the same event, the event becomes a dead letter (`cycle_failed`) rather
than stopping the trainer for good. Infrastructure errors are retried with a backoff, logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, Producer

from flywheel.consumers import paused, poll_window, rest
from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import Settings
from schemas.codec import Codec
from schemas.records import MAX_ID_CHARS, DatasetReady, InvalidEvent, ModelEvent
from flywheel.deadletter import DeadLetters, Source, detail_of, is_infrastructure, is_json, source_of
from flywheel.metrics import consumer_metrics
from trainer.cycle import Cycle
from trainer.phase import stagnant_cycles
from trainer.registry import Registry

if TYPE_CHECKING:  # annotations only
    from flywheel.datastore import PublishedDatasets
    from trainer.metrics import TrainerMetrics

log = logging.getLogger("flywheel.trainer")


class ModelsAnnouncer:
    """Sends `flywheel.models` events (and dead letters), each acknowledged by the broker before it returns."""

    def __init__(self, settings: Settings, codec: Codec | None = None):
        self.settings = settings
        self.codec = codec or Codec()
        conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
        self.producer = Producer({**conf, "bootstrap.servers": settings.broker_url, "client.id": "flywheel-trainer"})

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        errors = []
        self.producer.produce(
            topic, key=key, value=value, on_delivery=lambda err, _m: errors.append(err) if err else None
        )
        if self.producer.flush(30) or errors:
            raise RuntimeError(f"{topic}: not acknowledged: {errors[:1]}")

    def announce(self, event: ModelEvent) -> None:
        self.send(
            self.settings.topic_models,
            (event.version or event.dataset_id).encode(),
            self.codec.encode("model_event", event.to_dict()),
        )

    def close(self) -> None:
        """Flushed and shut: a producer left to the garbage collector keeps its broker connections and
        logs every reconnect once the broker is gone."""
        if self.producer is not None:
            self.producer.flush(10)
            self.producer.close()
            self.producer = None


PRODUCTION_CHECK_S = 15.0
CYCLE_ATTEMPTS = 3  # a cycle that fails this often on one event, not for infrastructure, dead-letters it
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
YEAR_3000_MS = 32_503_680_000_000  # an event time past it is no time at all


def check_ready(ready: DatasetReady) -> DatasetReady:
    """The rules a ready event must meet beyond its schema (messages name fields, never values)."""
    i = ready.dataset_id
    if (
        not isinstance(i, str)
        or not i.strip()
        or len(i) > MAX_ID_CHARS
        or "/" in i
        or "\\" in i
        or i.startswith(".")
        or any(ord(ch) < 32 for ch in i)
    ):
        raise InvalidEvent(
            f"dataset_ready.dataset_id must be a dataset id: 1 to {MAX_ID_CHARS} characters, no path "
            "separator or control character, not starting with '.'"
        )
    t = ready.first_event_time
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < YEAR_3000_MS:
        raise InvalidEvent(
            "dataset_ready.first_event_time must be 0 or milliseconds since the epoch before the year 3000"
        )
    return ready


def read_ready(codec: Codec, source: Source) -> DatasetReady:
    """One ready event, decoded and validated; raises when it is not one the trainer can act on."""
    ready = check_ready(DatasetReady.from_dict(codec.decode("dataset_ready", source.value or b"", source.headers)))
    if is_json(source.headers):
        codec.encode("dataset_ready", ready.to_dict())  # what JSON holds and Avro cannot fails here
    return ready


class TrainerService:
    def __init__(
        self,
        settings: Settings,
        cycle: Cycle,
        registry: Registry,
        store: PublishedDatasets,
        metrics: TrainerMetrics | None = None,
        codec: Codec | None = None,
    ):
        self.settings = settings
        self.cycle = cycle
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self.codec = codec or Codec()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.broker_url,
                "group.id": f"{settings.app_id}-trainer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # a cycle may train for a long time between polls
                "max.poll.interval.ms": 6 * 3600 * 1000,
                # static membership: a restarted trainer takes its partition back at once
                # instead of waiting out the rebalance (as long as the poll interval)
                "group.instance.id": f"{settings.app_id}-trainer-{settings.worker_id or 'main'}",
            }
        )
        self.consumer.subscribe([settings.topic_datasets_ready])
        self._rested = False  # the last step ended in a rest (its next poll waits longer: flywheel/consumers.py)
        self.out = ModelsAnnouncer(settings, self.codec)
        self.dead = DeadLetters("trainer", consumer_metrics(metrics.registry if metrics is not None else None), log)
        self._failures: dict[tuple[str, int, int], int] = {}  # cycle failures per event, this process

    def _dead_letter(self, src: Source, exc: BaseException | None = None, **kwargs) -> str:
        """Sent and acknowledged before the caller commits the offset (a broker error propagates)."""
        dl = self.dead.letter(src, exc, count=False, **kwargs)
        self.out.send(self.settings.topic_deadletter, src.key or b"", self.codec.encode("deadletter", dl.to_dict()))
        self.dead.sent(dl)
        return "dead_letter"

    def handle(self, message) -> str:
        """One ready event, to its recorded outcome. Returns the outcome (or 'skipped', 'dead_letter')."""
        src = source_of(message)
        try:
            ready = read_ready(self.codec, src)
        except Exception as exc:  # whatever a malformed value makes the decoder raise
            return self._dead_letter(src, exc)
        seen = self.registry.dataset_outcome(ready.dataset_id)
        if seen is not None:
            if not seen.get("announced"):  # crashed between recording and the event
                self.out.announce(ModelEvent.from_dict(seen["event"]))
                self.registry.mark_announced(ready.dataset_id)
            if self.metrics is not None:
                self.metrics.cycle("skipped")
            log.info("dataset seen before", extra={"dataset_id": ready.dataset_id, "outcome": seen["outcome"]})
            return "skipped"
        if not self.store.exists(ready.dataset_id):  # the builder publishes before it announces
            return self._dead_letter(src, reason="unknown_dataset", detail="trainer: no published dataset has this id")
        where = (src.topic, src.partition, src.offset)
        try:
            result = self.cycle.run(self.store, ready.dataset_id, ready.first_event_time)
        except Exception as exc:
            if is_infrastructure(exc):
                raise  # retried with a backoff; the offset is not committed
            failures = self._failures[where] = self._failures.get(where, 0) + 1
            if failures < CYCLE_ATTEMPTS:
                raise
            log.error(
                "cycle failed on every attempt",
                extra={"dataset_id": ready.dataset_id, "attempts": failures, "error": type(exc).__name__},
            )
            del self._failures[where]
            return self._dead_letter(src, exc, reason="cycle_failed", where="trainer cycle")
        self._failures.pop(where, None)
        for flagged in result.flagged:  # models whose lineage an erasure reached: announced, then recorded
            self.out.announce(flagged)
            self.cycle.flagged(flagged)
        self.registry.record_outcome(ready.dataset_id, result.outcome, result.event.version, result.event.to_dict())
        self.out.announce(result.event)
        self.registry.mark_announced(ready.dataset_id)
        return result.outcome

    def step(self, timeout: float = 1.0) -> str | None:
        backoff = bool(self.settings.empty_fetch_backoff_ms)
        m = self.consumer.poll(poll_window(timeout, backoff, self._rested))
        self._rested = backoff and (m is None or bool(m.error()))
        if m is None or m.error():
            if backoff:
                rest(self.consumer, timeout)
            return None
        with paused(self.consumer):  # the cycle has the cores: an idle fetcher would take them (flywheel/consumers.py)
            outcome = self.handle(m)
        self.consumer.commit(message=m, asynchronous=False)
        return outcome

    def observe_production(self) -> float | None:
        """The production model's recorded golden score into the quality and phase gauges (rollouts move it)."""
        version = self.registry.production()
        quality = None
        if version is not None:
            try:
                quality = self.registry.show(version).get("metrics", {}).get("overall")
            except KeyError:
                quality = None
        if self.metrics is not None:
            self.metrics.production(quality)
        return quality

    def observe_stagnation(self) -> None:
        """At start: the stagnant-cycle count from the registry, so a restart does not reset the alert."""
        if self.metrics is not None:
            self.metrics.stagnant_count = stagnant_cycles(self.registry.list())
            self.metrics.stagnant.set(self.metrics.stagnant_count)

    def run(self, stop: threading.Event) -> None:
        log.info(
            "trainer started", extra={"topic": self.settings.topic_datasets_ready, "models": self.registry.location}
        )
        observed, delay = 0.0, RETRY_FIRST_S
        try:
            self.observe_stagnation()
        except Exception as exc:  # Redis away: the next cycles count from zero
            log.warning("stagnation not read", extra={"error": type(exc).__name__})
        while not stop.is_set():
            try:
                if time.monotonic() - observed >= PRODUCTION_CHECK_S:
                    self.observe_production()
                    observed = time.monotonic()
                self.step()
                delay = RETRY_FIRST_S
            except Exception as exc:  # broker or Redis away: the offset is not committed, so the cycle runs again
                log.error(
                    "trainer retrying",
                    extra={
                        "error": type(exc).__name__,
                        "retry_in_s": delay,
                        "detail": str(exc)[:300] if is_infrastructure(exc) else detail_of(exc),
                    },
                )
                stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        self.close()

    def close(self) -> None:
        self.consumer.close()
        self.out.close()


def build(settings: Settings, metrics: TrainerMetrics | None = None):
    """The trainer's parts from settings: (registry, golden store, cycle, dataset store)."""
    import redis

    from flywheel.datastore import DatasetStore
    from flywheel.policy import GatePolicy
    from trainer.golden import GoldenStore

    policy = GatePolicy.load(settings.gate_policy)
    registry = Registry(
        settings.models_dir,
        redis.Redis.from_url(settings.redis_url, socket_timeout=30),
        settings.app_id,
        cache_dir=settings.model_cache_dir,
    )
    golden = GoldenStore(settings.golden_path)
    return (
        registry,
        golden,
        Cycle(registry, golden, policy.trainer, metrics),
        DatasetStore(settings.datasets_url),
        policy,
    )


def run_trainer(settings: Settings) -> None:
    """`flywheel trainer`: blocks until SIGINT/SIGTERM."""
    import signal

    from flywheel.metrics import serve_metrics
    from trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics()
    serve_metrics(metrics.registry, settings.trainer_metrics_port)
    registry, _golden, cycle, store, _policy = build(settings, metrics)
    service = TrainerService(settings, cycle, registry, store, metrics)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.run(stop)
