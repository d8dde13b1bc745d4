"""A record can fail; a worker cannot. What every consumer does with one record it cannot use.

Whatever goes wrong while decoding, validating or processing one record's content makes that
record a dead letter (`DeadLetter`: the reason code, a short detail, where it was read, and its
original key, value and headers), counted in `flywheel_consumer_deadletters_total{consumer,
reason}`, and the consumer goes on with the next. Only infrastructure (the broker, Redis, a disk)
may stop or pause a worker, and then it retries with a backoff and says so in its log.

Every consumer builds its dead letters here, so reason codes and details are the same everywhere.
A detail never quotes a value (it may be prompt text or personal data): codec and validation
errors are written to name fields and types only, and any other exception is shown by its type.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

from schemas.codec import CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, Codec, DecodeError, EncodeError
from schemas.records import DeadLetter, InvalidEvent, TrainingCandidate

DETAIL_CHARS = 500

# reason codes of the consumers' own (the codec's and the records' reasons are used as they are)
INVALID_EVENT = "invalid_event"  # decodes, but breaks a rule of the flywheel
UNENCODABLE = "unencodable"  # decodes, but cannot be written again (a lone surrogate in a JSON string)
UNPROCESSABLE = "unprocessable"  # valid, but processing this one record raised


@dataclass(frozen=True)
class Source:
    """One consumed record, whatever client read it: where it was, and its bytes as they came."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None  # the Kafka record's timestamp, when the client gave one


def _headers(raw: Any) -> dict[str, bytes]:
    """Headers as lower-case str -> bytes, whatever shape the client gave them in (never raises
    for odd keys or values: a header is part of the record, not of the worker)."""
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    out: dict[str, bytes] = {}
    for pair in items:
        try:
            k, v = pair
        except (TypeError, ValueError):
            continue
        key = k.decode("utf-8", "replace") if isinstance(k, (bytes, bytearray)) else str(k)
        if isinstance(v, (bytes, bytearray)):
            value = bytes(v)
        elif v is None:
            value = b""
        else:
            value = str(v).encode("utf-8", "replace")
        out[_clean(key).lower()] = value
    return out


def _clean(text: str) -> str:
    """Text that encodes as UTF-8 (a lone surrogate becomes '?'): a dead letter must be writable."""
    return text.encode("utf-8", "replace").decode("utf-8")


def source_of(message: Any) -> Source:
    """A `Source` from a Faust message or aiokafka record (attributes) or a confluent-kafka message
    (methods)."""
    if callable(getattr(message, "topic", None)):  # confluent_kafka.Message
        ts = message.timestamp()
        return Source(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            message.value() or b"",
            _headers(message.headers()),
            ts[1] if ts and ts[0] and ts[1] and ts[1] > 0 else None,
        )
    ts = getattr(message, "timestamp", None)
    if isinstance(ts, float):  # Faust gives seconds, aiokafka milliseconds
        ts = int(ts * 1000)
    return Source(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value or b"",
        _headers(getattr(message, "headers", None)),
        ts if isinstance(ts, int) and ts > 0 else None,
    )


def is_json(headers: Mapping[str, bytes]) -> bool:
    return headers.get(CONTENT_TYPE_HEADER, b"").startswith(JSON_CONTENT_TYPE)


# -- what went wrong ----------------------------------------------------------------------------------


def reason_of(exc: BaseException, default: str = INVALID_EVENT) -> str:
    if isinstance(exc, DecodeError):
        return exc.reason
    if isinstance(exc, InvalidEvent):
        reason = getattr(exc, "reason", None)  # FutureEvent and its kind carry their own
        return reason if isinstance(reason, str) and reason else default
    if isinstance(exc, EncodeError):
        return UNENCODABLE
    if isinstance(exc, RecursionError):
        return "too_deep"
    return default


def detail_of(exc: BaseException, where: str = "") -> str:
    """What went wrong, without the value: the codec's and the records' messages name fields and
    types only; any other exception's message may quote the input, so only its type is shown."""
    if isinstance(exc, DecodeError):
        text = exc.detail
    elif isinstance(exc, (InvalidEvent, EncodeError)):
        text = str(exc)
    else:
        text = type(exc).__name__
    text = f"{where}: {text}" if where else text
    return text[:DETAIL_CHARS]


def dead_letter(
    source: Source,
    exc: BaseException | None = None,
    *,
    reason: str | None = None,
    detail: str | None = None,
    where: str = "",
    default_reason: str = INVALID_EVENT,
    now_ms: int | None = None,
) -> DeadLetter:
    """The dead letter for `source`: its reason and detail from `exc` unless given."""
    return DeadLetter(
        reason=reason or (reason_of(exc, default_reason) if exc is not None else default_reason),
        detail=_clean(detail if detail is not None else detail_of(exc, where) if exc is not None else where)[
            :DETAIL_CHARS
        ],
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        key=source.key,
        value=source.value or b"",
        headers=dict(source.headers),
        failed_at=int(time.time() * 1000) if now_ms is None else now_ms,
    )


# -- infrastructure or content ----------------------------------------------------------------------


def _infrastructure() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    infra: list[type[BaseException]] = [OSError, MemoryError]  # OSError: ConnectionError, TimeoutError, disks
    content: list[type[BaseException]] = []
    try:
        import redis.exceptions as rx

        infra.append(rx.RedisError)
        content.append(rx.DataError)  # redis-py refusing an argument's type: the record's doing
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        from confluent_kafka import KafkaException

        infra.append(KafkaException)
    except ImportError:  # pragma: no cover
        pass
    try:
        from aiokafka.errors import KafkaError

        infra.append(KafkaError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(infra), tuple(content)


INFRASTRUCTURE, _NOT_INFRASTRUCTURE = _infrastructure()


def is_infrastructure(exc: BaseException) -> bool:
    """Broker, Redis, disk, memory: retried (with a backoff) rather than blamed on a record."""
    if isinstance(exc, _NOT_INFRASTRUCTURE):
        return False
    return isinstance(exc, INFRASTRUCTURE) or type(exc).__name__ == "OutOfMemoryError"  # torch's, without torch


T = TypeVar("T")
R = TypeVar("R")


def isolating(
    items: Sequence[T], run: Callable[[Sequence[T]], R], transient: tuple[type[BaseException], ...] = ()
) -> tuple[list[R], list[tuple[T, Exception]]]:
    """`run(items)`; when that raises anything but infrastructure (or `transient`), `run` again on
    each item alone, so one record that breaks the batch fails alone. Returns the results of the
    runs that returned, and (item, exception) for each item that failed on its own. Infrastructure
    errors propagate, for the caller to retry the whole batch."""
    if not items:
        return [], []
    try:
        return [run(items)], []
    except transient:
        raise
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
    results: list[R] = []
    failed: list[tuple[T, Exception]] = []
    for item in items:
        try:
            results.append(run([item]))
        except transient:
            raise
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            failed.append((item, exc))
    return results, failed


# -- the joined candidates every stream operator reads -----------------------------------------------


def read_candidate(codec: Codec, source: Source) -> TrainingCandidate:
    """Decode and validate one candidate record; raises (DecodeError, InvalidEvent, EncodeError, or
    whatever a malformed value makes the decoder raise) when it is not one the flywheel can use."""
    c = TrainingCandidate.from_dict(codec.decode("candidate", source.value or b"", source.headers))
    if not isinstance(c.request_id, str) or not c.request_id.strip():
        raise InvalidEvent("candidate.request_id must be a non-empty string")
    if is_json(source.headers):
        # JSON may hold what Avro cannot (a lone surrogate): such a record could be read here but
        # never written on, nor used as a Redis key; it must fail now, not in every retry after
        codec.encode("candidate", c.to_dict())
    return c


def read_candidates(
    codec: Codec, sources: Sequence[Source], dead: "DeadLetters"
) -> tuple[list[tuple[TrainingCandidate, Source]], list[DeadLetter]]:
    """Each candidate record decoded and validated, or a dead letter of its own (the gate's and the
    review sampler's input alike)."""
    candidates, letters = [], []
    for src in sources:
        try:
            candidates.append((read_candidate(codec, src), src))
        except Exception as exc:  # whatever a malformed value makes the decoder raise
            letters.append(dead.letter(src, exc, default_reason="invalid_candidate"))
    return candidates, letters


class DeadLetters:
    """One consumer's dead letters: built, counted and logged the same way everywhere."""

    def __init__(self, consumer: str, metrics: Any = None, log: logging.Logger | None = None):
        self.consumer = consumer
        self.metrics = metrics  # flywheel.metrics.ConsumerMetrics, or None
        self.log = log or logging.getLogger(f"flywheel.{consumer}")

    def letter(
        self, source: Source, exc: BaseException | None = None, *, count: bool = True, **kwargs: Any
    ) -> DeadLetter:
        """The dead letter of `source`, counted (unless `count` is false: then `sent` counts it once
        the broker has it); the caller sends it to the dead-letter topic."""
        kwargs.setdefault("where", self.consumer)
        dl = dead_letter(source, exc, **kwargs)
        if count and self.metrics is not None:
            self.metrics.deadletters.labels(self.consumer, dl.reason).inc()
        return dl

    def sent(self, dl: DeadLetter) -> None:
        """A dead letter built with count=False is on the broker: counted and logged."""
        if self.metrics is not None:
            self.metrics.deadletters.labels(self.consumer, dl.reason).inc()
        self.logged(dl)

    def skipped(self, source: Source, exc: BaseException, default_reason: str = INVALID_EVENT) -> str:
        """A record this consumer cannot use but another owns the dead letter of (the gate, for the
        joined candidates every operator reads): counted, not sent twice."""
        reason = reason_of(exc, default_reason)
        if self.metrics is not None:
            self.metrics.skipped.labels(self.consumer, reason).inc()
        self.log.debug(
            "record skipped",
            extra={"reason": reason, "topic": source.topic, "partition": source.partition, "offset": source.offset},
        )
        return reason

    def logged(self, dl: DeadLetter) -> None:
        self.log.warning(
            "dead letter",
            extra={
                "reason": dl.reason,
                "detail": dl.detail,
                "topic": dl.source_topic,
                "partition": dl.source_partition,
                "offset": dl.source_offset,
            },
        )
