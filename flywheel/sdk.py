"""FlywheelProducer: the small client a production app uses to log interactions and user actions.

    from flywheel.sdk import FlywheelProducer

    with FlywheelProducer() as fw:  # settings from FLYWHEEL_*; closing flushes
        fw.log_interaction(request_id="r-1", session_id="s-9", user_id="u-42", model_version="m-2",
                           prompt="How many vacation days?", response="25 days a year.")
        fw.log_action(request_id="r-1", user_id="u-42", action="accepted")

A bad event raises `InvalidEvent` at the call, before anything is sent; sending never blocks the
caller for more than `max_block_s`. Events are keyed by request id with the Java client's murmur2
partitioner. `flush()` raises `DeliveryError` when events are still queued after its timeout or
any event failed since the previous flush: a clean return means everything logged before it is in
Kafka. Design: docs/concepts/sdk.md#partitioning-and-delivery
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from confluent_kafka import KafkaError, Producer

from flywheel.settings import Settings
from schemas.codec import TICK_HEADER, TICK_MAC_HEADER, Codec, EncodeError, tick_mac
from schemas.conversation import last_user_text, message, tool_call, tool_def
from schemas.records import Interaction, InvalidEvent, UserAction

log = logging.getLogger("flywheel.sdk")


DEFAULT_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,  # no duplicates or reordering from retries within a partition
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",  # every consumer must read it: the worker's aiokafka does so through cramjam
    "partitioner": "murmur2_random",  # Java-compatible: docs/concepts/sdk.md#partitioning-and-delivery
    # A missing topic must fail loudly: a broker that auto-creates it would make a 1-partition topic
    # that is not co-partitioned with the other source, and the join would silently miss pairs.
    "allow.auto.create.topics": False,
    "client.id": "flywheel-sdk",
}

_PARTITIONS_TTL_S = 300.0
_LOGGED_FAILURES = 10  # log the first failures one by one, then one line per 1000


class FlywheelError(RuntimeError):
    """The producer cannot do what was asked (closed, broker unreachable, topic missing)."""


class EventTooLarge(InvalidEvent):
    """The encoded event is over `settings.max_event_bytes`; the worker would dead-letter it."""


class BackpressureError(FlywheelError, BufferError):
    """The local send queue stayed full for `max_block_s`: Kafka is not keeping up or not reachable."""


@dataclass(frozen=True)
class DeliveryFailure:
    request_id: str  # "" for heartbeat ticks
    topic: str
    partition: int
    error: KafkaError
    at_ms: int


class DeliveryError(FlywheelError):
    """`flush()` could not confirm every event: some are still queued, or some failed."""

    def __init__(self, message: str, *, remaining: int, failures: Sequence[DeliveryFailure]):
        super().__init__(message)
        self.remaining = remaining
        self.failures = list(failures)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _as_dict(v: Any) -> Any:
    return dict(v) if isinstance(v, Mapping) and not isinstance(v, dict) else v


def _turns(messages: Sequence[Mapping[str, Any]] | None) -> list:
    """Turns given by the app, with every key of the schema's Message (extra keys refused)."""
    if messages is None:
        return []
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidEvent("interaction.messages must be a list of turns")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidEvent(f"interaction.messages[{i}] must be a dict with a role")
        unknown = set(m) - {"role", "content", "name", "tool_calls", "tool_call_id"}
        if unknown:
            raise InvalidEvent(f"interaction.messages[{i}] has unknown keys: {', '.join(sorted(map(str, unknown)))}")
        calls = m.get("tool_calls") or ()
        if (
            not isinstance(calls, Sequence)
            or isinstance(calls, (str, bytes))
            or not all(isinstance(c, Mapping) for c in calls)
        ):
            raise InvalidEvent(f"interaction.messages[{i}].tool_calls must be a list of dicts")
        try:
            out.append(
                message(
                    m.get("role"),
                    m.get("content", ""),
                    name=m.get("name"),
                    tool_calls=calls,
                    tool_call_id=m.get("tool_call_id"),
                )
            )
        except TypeError:
            raise InvalidEvent(
                f"interaction.messages[{i}].tool_calls: each needs a name (and only id, name, arguments)"
            ) from None
    return out


def _records(items: Sequence[Mapping[str, Any]] | None, make: Callable[..., dict], where: str) -> list:
    if items is None:
        return []
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidEvent(f"interaction.{where} must be a list")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(make(**item))
        except TypeError:
            raise InvalidEvent(
                f"interaction.{where}[{i}] must be a dict with a name (keys of the schema only)"
            ) from None
    return out


def _approx_len(v: Any) -> int:
    if isinstance(v, (str, bytes)):
        return len(v)
    if isinstance(v, Mapping):
        return sum(_approx_len(k) + _approx_len(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return sum(_approx_len(x) for x in v)
    return 8


def _type_name(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_type_name(x) for x in t)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "array":
            return f"a list of {_type_name(t['items'])}s"
        if kind == "map":
            return f"a dict of string to {_type_name(t['values'])}"
        if kind == "enum":
            return "one of " + ", ".join(t["symbols"])
        return _type_name(kind)
    return {
        "string": "string",
        "long": "integer",
        "int": "integer",
        "double": "number",
        "float": "number",
        "boolean": "bool",
        "null": "None",
        "bytes": "bytes",
    }.get(t, str(t))


def _fits(t: Any, v: Any) -> bool:
    """Whether a Python value fits an Avro type; a local mirror of the schema so messages never echo values."""
    if isinstance(t, list):
        return any(_fits(x, v) for x in t)
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "array":
            return isinstance(v, (list, tuple)) and all(_fits(t["items"], x) for x in v)
        if kind == "map":
            return isinstance(v, Mapping) and all(isinstance(k, str) and _fits(t["values"], x) for k, x in v.items())
        if kind == "enum":
            return isinstance(v, str) and v in t["symbols"]
        return _fits(kind, v)
    if t == "null":
        return v is None
    if t == "string":
        return isinstance(v, str)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "bytes":
        return isinstance(v, (bytes, bytearray))
    if t in ("long", "int"):
        bits = 63 if t == "long" else 31
        return isinstance(v, int) and not isinstance(v, bool) and -(2**bits) <= v < 2**bits
    if t in ("double", "float"):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return True  # a type this mirror does not know: the codec check below decides


class FlywheelProducer:
    """Validates, encodes and sends flywheel events; never blocks the caller for more than `max_block_s`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        on_delivery_error: Callable[[str, KafkaError], None] | None = None,
        codec: Codec | None = None,
        max_block_s: float = 5.0,
        failures_kept: int = 1000,
    ):
        self.settings = settings if settings is not None else Settings.from_env()
        self.codec = codec if codec is not None else Codec()
        self.on_delivery_error = on_delivery_error
        self.max_block_s = max_block_s
        conf = {
            "bootstrap.servers": self.settings.broker_url,
            **DEFAULT_CONFIG,
            "logger": logging.getLogger("flywheel.sdk.librdkafka"),
        }
        conf.update(config or {})
        self.config = {k: v for k, v in conf.items() if k != "logger"}
        self._producer = Producer(conf)
        self._partitions: dict[str, tuple[int, float]] = {}
        self._closed = False
        self.delivered = 0  # events confirmed by the broker, since construction
        self.delivery_errors = 0  # events that failed, since construction
        self.recent_failures: deque[DeliveryFailure] = deque(maxlen=failures_kept)
        self._unreported: deque[DeliveryFailure] = deque(maxlen=failures_kept)
        self._errors_at_flush = 0
        self._in_flight = 0  # our own count: len(Producer) also counts librdkafka's error and log events
        self._lock = threading.Lock()  # apps log from many threads; callbacks run in whichever one polls

    # -- logging events --------------------------------------------------------------------------
    def log_interaction(
        self,
        *,
        request_id: str,
        session_id: str,
        user_id: str,
        model_version: str,
        response: str,
        prompt: str = "",
        event_time: int | None = None,
        variant: str = "",
        task_type: str = "",
        retrieved_context: list[str] | None = None,
        latency_ms: float | None = None,
        uncertainty: float | None = None,
        metadata: Mapping[str, str] | None = None,
        system: str = "",
        messages: Sequence[Mapping[str, Any]] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        response_tool_calls: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Queue one served request. Raises InvalidEvent (naming the field) before anything is queued.

        A single turn: `prompt` and `response`. A conversation: `messages` (the turns the model
        answered, oldest first, each {"role", "content", "name"?, "tool_calls"?, "tool_call_id"?}),
        `system` instructions, `tools` offered ({"name", "description"?, "parameters"?: JSON text}),
        and the answer: `response` text and `response_tool_calls`; `prompt` defaults to the last
        user turn. Retrieved passages go in `retrieved_context` either way."""
        if isinstance(retrieved_context, tuple):
            retrieved_context = list(retrieved_context)
        event = Interaction(
            request_id=request_id,
            session_id=session_id,
            user_id=user_id,
            event_time=_now_ms() if event_time is None else event_time,
            model_version=model_version,
            prompt=prompt,
            response=response,
            variant=variant,
            task_type=task_type,
            retrieved_context=retrieved_context,
            latency_ms=latency_ms,
            uncertainty=uncertainty,
            metadata={} if metadata is None else _as_dict(metadata),
            system=system,
            messages=_turns(messages),
            tools=_records(tools, tool_def, "tools"),
            response_tool_calls=_records(response_tool_calls, tool_call, "response_tool_calls"),
        )
        if not event.prompt and event.messages:
            event.prompt = last_user_text(event.messages)
        self._send_event(self.settings.topics.interactions, event)

    def log_chat_completion(
        self,
        request: Any,
        response: Any,
        *,
        user_id: str,
        session_id: str = "",
        request_id: str | None = None,
        retrieved_context: Sequence[str] | None = None,
        task_type: str = "",
        variant: str = "",
        latency_ms: float | None = None,
        uncertainty: float | None = None,
        metadata: Mapping[str, str] | None = None,
        event_time: int | None = None,
    ) -> str:
        """Queue one OpenAI-shaped call: a Chat Completions request (the create() keyword arguments or
        the JSON body) and its response (a ChatCompletion or its JSON), or the same of the Responses
        API. Returns the request id for later `log_action` calls: `request_id` when given, else the
        provider's response id (`chatcmpl-...`, `resp_...`). See flywheel/openai_compat.py for the
        mapping. Raises InvalidEvent before anything is queued."""
        from flywheel import openai_compat as oc

        try:
            shape = (
                oc.from_responses(request, response)
                if oc.is_responses_shape(request, response)
                else oc.from_chat_completion(request, response)
            )
        except oc.ShapeError as exc:
            raise InvalidEvent(f"log_chat_completion: {exc}") from None
        rid = request_id or shape["request_id"]
        if not rid:
            raise InvalidEvent("log_chat_completion: the response has no id; pass request_id")
        meta = {**shape["metadata"], **({} if metadata is None else _as_dict(metadata))}
        self.log_interaction(
            request_id=rid,
            session_id=session_id,
            user_id=user_id,
            model_version=shape["model_version"] or "unknown",
            response=shape["response"],
            event_time=event_time if event_time is not None else shape["event_time"],
            variant=variant,
            task_type=task_type,
            retrieved_context=None if retrieved_context is None else list(retrieved_context),
            latency_ms=latency_ms,
            uncertainty=uncertainty,
            metadata=meta,
            system=shape["system"],
            messages=shape["messages"],
            tools=shape["tools"],
            response_tool_calls=shape["response_tool_calls"],
        )
        return rid

    def log_action(
        self,
        *,
        request_id: str,
        user_id: str,
        action: str,
        event_time: int | None = None,
        correction: str | None = None,
        rating: float | None = None,
        session_id: str = "",
    ) -> None:
        """Queue one user action on a response. Raises InvalidEvent (naming the field) before anything is queued."""
        event = UserAction(
            request_id=request_id,
            user_id=user_id,
            action=action,
            event_time=_now_ms() if event_time is None else event_time,
            correction=correction,
            rating=rating,
            session_id=session_id,
        )
        self._send_event(self.settings.topics.actions, event)

    def encode(self, event: Interaction | UserAction) -> bytes:
        """Validate and encode exactly as the log_* calls do (also for tools that write files, not Kafka)."""
        name = event.schema_name
        event.check()
        record = event.to_dict()
        schema = self.codec.current(name)
        for f in schema.raw["fields"]:
            if f["name"] in record and not _fits(f["type"], record[f["name"]]):
                raise InvalidEvent(
                    f"{name}.{f['name']} must be {_type_name(f['type'])}, got {type(record[f['name']]).__name__}"
                )
        try:
            self.codec.check(name, record)
            value = self.codec.encode(name, record)
        except EncodeError:
            # fastavro's message echoes the value, which may be prompt text: keep it out of errors
            raise InvalidEvent(f"{name} does not fit its Avro schema") from None
        limit = self.settings.max_event_bytes
        if len(value) > limit:
            biggest = max(record, key=lambda k: _approx_len(record[k]))
            raise EventTooLarge(
                f"{name} encodes to {len(value)} bytes, over the limit of {limit} "
                f"(FLYWHEEL_MAX_EVENT_BYTES); largest field: {biggest}"
            )
        return value

    def _send_event(self, topic: str, event: Interaction | UserAction) -> None:
        self._require_open()
        value = self.encode(event)
        self._produce(topic, key=event.request_id.encode("utf-8"), value=value)

    def send_encoded(
        self,
        event: Interaction | UserAction,
        value: bytes,
        on_delivery: Callable[[KafkaError | None], None] | None = None,
    ) -> None:
        """Queue an event already validated and encoded by `encode` (HTTP ingest validates a whole
        batch before it sends any of it); `on_delivery(error or None)` is called once it is
        confirmed or failed, from inside poll/flush."""
        self._require_open()
        topic = self.settings.topics.interactions if isinstance(event, Interaction) else self.settings.topics.actions
        self._produce(topic, key=event.request_id.encode("utf-8"), value=value, callback=on_delivery)

    # -- event time for quiet partitions ---------------------------------------------------------
    def heartbeat(self, event_time_ms: int) -> int:
        """Tell every partition of both sources that event time has reached `event_time_ms`.

        Without it a partition that gets no traffic never advances its watermark, so requests on it
        never settle. Returns the number of ticks queued.
        """
        self._require_open()
        if isinstance(event_time_ms, bool) or not isinstance(event_time_ms, int) or event_time_ms <= 0:
            raise InvalidEvent(
                f"heartbeat event_time_ms must be a positive integer of milliseconds, got {type(event_time_ms).__name__}"
            )
        tick = str(event_time_ms).encode("ascii")
        headers = [(TICK_HEADER, tick)]
        if self.settings.tick_key:  # the join dead-letters unsigned ticks when it has a key
            headers.append((TICK_MAC_HEADER, tick_mac(self.settings.tick_key, tick)))
        sent = 0
        for topic in (self.settings.topics.interactions, self.settings.topics.actions):
            for partition in range(self.partition_count(topic)):
                self._produce(topic, key=None, value=b"", partition=partition, headers=headers)
                sent += 1
        log.debug(
            "heartbeat event_time_ms=%d ticks=%d",
            event_time_ms,
            sent,
            extra={"event": "heartbeat", "event_time_ms": event_time_ms, "ticks": sent},
        )
        return sent

    def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        """Partitions of `topic`, from metadata, cached for a few minutes (topics may grow)."""
        cached = self._partitions.get(topic)
        if cached is not None and time.monotonic() - cached[1] < _PARTITIONS_TTL_S:
            return cached[0]
        md = self._producer.list_topics(topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            why = t.error if t is not None and t.error is not None else "no partitions"
            raise FlywheelError(f"topic {topic} is not usable ({why}); create the flywheel topics first")
        self._partitions[topic] = (len(t.partitions), time.monotonic())
        return len(t.partitions)

    # -- sending ---------------------------------------------------------------------------------
    def _produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        callback: Callable[[KafkaError | None], None] | None = None,
    ) -> None:
        on_delivery = self._on_delivery
        if callback is not None:

            def on_delivery(err, msg, _own=self._on_delivery):
                _own(err, msg)
                try:
                    callback(err)
                except Exception:
                    log.exception("delivery callback raised", extra={"event": "callback_failed"})

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        deadline = None
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                with self._lock:
                    self._in_flight += 1
                break
            except BufferError:
                # queue full: serve delivery reports so it drains, for a bounded time
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.max_block_s
                if now >= deadline:
                    raise BackpressureError(
                        f"send queue full for {self.max_block_s:.1f}s with {self._in_flight} events waiting; "
                        f"is Kafka at {self.settings.broker_url} reachable and keeping up?"
                    ) from None
                self._producer.poll(0.05)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg) -> None:
        if err is None:
            with self._lock:
                self._in_flight -= 1
                self.delivered += 1
            return
        key = msg.key()
        request_id = key.decode("utf-8", "replace") if key else ""
        failure = DeliveryFailure(request_id, msg.topic(), msg.partition(), err, _now_ms())
        with self._lock:
            self._in_flight -= 1
            self.delivery_errors += 1
            self.recent_failures.append(failure)
            self._unreported.append(failure)
            n = self.delivery_errors
        if n <= _LOGGED_FAILURES or n % 1000 == 0:
            log.warning(
                "delivery failed topic=%s partition=%s request_id=%s error=%s failures=%d",
                failure.topic,
                failure.partition,
                request_id,
                err.str(),
                n,
                extra={
                    "event": "delivery_failed",
                    "topic": failure.topic,
                    "partition": failure.partition,
                    "request_id": request_id,
                    "error": err.str(),
                    "failures": n,
                },
            )
        if self.on_delivery_error is not None:
            try:
                self.on_delivery_error(request_id, err)
            except Exception:  # an exception here would surface from an unrelated log_* call
                log.exception("on_delivery_error callback raised", extra={"event": "callback_failed"})

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports (log_* do this too); returns how many were served."""
        return self._producer.poll(timeout)

    @property
    def pending(self) -> int:
        """Events queued or in flight, not yet confirmed or failed."""
        return self._in_flight

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued event. Returns how many were confirmed in total.

        Raises DeliveryError when events are still queued after `timeout` seconds, or when any event
        failed since the previous flush (each failure is reported by one flush only).
        """
        self._producer.flush(timeout)
        with self._lock:
            remaining = self._in_flight
            failed = self.delivery_errors - self._errors_at_flush
            self._errors_at_flush = self.delivery_errors
            failures = list(self._unreported)
            self._unreported.clear()
        if remaining or failed:
            parts = []
            if remaining:
                parts.append(f"{remaining} events still queued after {timeout:g}s")
            if failed:
                first = failures[0].error.str() if failures else "?"
                parts.append(f"{failed} events failed since the last flush (first error: {first})")
            msg = "; ".join(parts) + f" [kafka {self.settings.broker_url}]"
            log.error(
                "flush incomplete remaining=%d failed=%d",
                remaining,
                failed,
                extra={"event": "flush_incomplete", "remaining": remaining, "failed": failed},
            )
            raise DeliveryError(msg, remaining=remaining, failures=failures)
        return self.delivered

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then release the client. Raises DeliveryError like flush(); closed either way.

        Events still queued after `timeout` are purged (each reported to `on_delivery_error`),
        because confluent-kafka's own close() would wait for them without a limit.
        """
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            if self._in_flight:
                self._producer.purge()
                self._producer.poll(0)
            close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
            if close is not None:
                close()

    def _require_open(self) -> None:
        if self._closed:
            raise FlywheelError("this FlywheelProducer is closed")

    def __enter__(self) -> "FlywheelProducer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # do not hide the exception that is already on its way out
            self.close()
        except DeliveryError as err:
            log.error("close after an exception: %s", err, extra={"event": "close_failed"})


from flywheel.routing import Assigner, Assignment  # noqa: E402,F401  (model assignment for A/B tests: flywheel/routing.py)
