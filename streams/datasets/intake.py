"""What one record read by the dataset builder may do to it: pure functions, no I/O.

A record can fail, the builder cannot. Each function here takes one record's bytes and headers and
either returns what the builder needs of it or raises `RecordError` (a dead-letter reason code and a
short detail, never the record's text); nothing else leaves them, whatever the bytes hold, so the
service turns every failure into a dead letter and goes on. Only the service's own I/O (broker,
Redis, disk) may stop it.

The records the builder reads:
- the gate's outputs (candidates passed and rejected): only their event time, taken straight from
  the Avro bytes where the schema allows (`Codec.read_long`), else decoded; at the seal, decoded in
  full (`decode_candidate`);
- erasure requests (`erasure_request`);
- review verdicts, when review is required (`review_verdict`);
- its own ready events, to send each exactly once (`dataset_ready_id`).

Event time that one producer cannot hijack: a candidate dated further ahead of the wall clock than
`max_event_ahead_ms` (judged against the Kafka record's timestamp when that is earlier, so a replay
is judged as the live read was) is a `future_event` and moves no window clock. The builder takes
no event time from ticks: the gate writes none to its outputs, and a quiet partition is marked idle
instead. A tick found on a topic the builder reads is an `unexpected_tick`.

Bytes in JSON (the content-type header) are normalised through Avro once decoded: what passes
then holds exactly what an Avro-decoded record may hold (valid UTF-8, longs in range), so nothing
later in the seal meets a value the Avro writers refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from schemas.codec import CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, TICK_HEADER, Codec, DecodeError, EncodeError
from schemas.records import (
    MAX_EVENT_TIME_MS,
    MIN_EVENT_TIME_MS,
    DeadLetter,
    ErasureRequest,
    FutureEvent,
    InvalidEvent,
    ReviewVerdict,
    TrainingCandidate,
    check_event_time_ahead,
    reference_time,
)

UNEXPECTED_TICK = "unexpected_tick"
UNPROCESSABLE = "unprocessable"  # valid, but building this one record raised
UNENCODABLE = "unencodable"  # decodes from JSON, but cannot be written again (a lone surrogate)
INVALID_EVENT = "invalid_event"


class RecordError(Exception):
    """One record the builder cannot take: `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:500]


@dataclass(frozen=True)
class Rejected:
    """A record that failed, with what its dead letter needs (its original bytes and headers)."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)

    def dead_letter(self, failed_at: int) -> DeadLetter:
        """Its dead letter, which always encodes: headers of any shape become text -> bytes."""
        return DeadLetter(
            reason=self.reason,
            detail=_text(self.detail),
            source_topic=_text(self.topic),
            source_partition=self.partition,
            source_offset=self.offset,
            value=bytes(self.value or b""),
            key=None if self.key is None else bytes(self.key),
            headers=_header_bytes(self.headers),
            failed_at=failed_at,
        )


def _text(value) -> str:
    """Text that encodes as UTF-8 (a lone surrogate becomes '?')."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _header_bytes(headers) -> dict[str, bytes]:
    out = {}
    for k, v in (headers or {}).items():
        key = _text(k.decode("utf-8", "replace") if isinstance(k, (bytes, bytearray)) else k)
        out[key] = bytes(v) if isinstance(v, (bytes, bytearray)) else b"" if v is None else _text(v).encode("utf-8")
    return out


def rejected(
    err: RecordError,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    key: bytes | None = None,
    headers: Mapping[str, bytes] | None = None,
) -> Rejected:
    return Rejected(err.reason, err.detail, topic, partition, offset, value or b"", key, dict(headers or {}))


def _json(headers: Mapping[str, bytes]) -> bool:
    value = headers.get(CONTENT_TYPE_HEADER) if headers else None
    return isinstance(value, bytes) and value.startswith(JSON_CONTENT_TYPE)


def _no_tick(kind: str, headers: Mapping[str, bytes]) -> None:
    if headers and TICK_HEADER in headers:
        raise RecordError(
            UNEXPECTED_TICK,
            f"a {TICK_HEADER} record where {kind} events are expected: "
            "the dataset builder takes no event time from ticks",
        )


def _decode(codec: Codec, name: str, value: bytes | None, headers: Mapping[str, bytes]) -> dict:
    """Decoded (and, from JSON, normalised through Avro), or RecordError."""
    data = value or b""
    try:
        record = codec.decode(name, data, headers)
        if _json(headers):
            record = codec.decode_avro(name, codec.encode(name, record))
        return record
    except DecodeError as exc:
        raise RecordError(exc.reason, exc.detail) from None
    except EncodeError as exc:
        raise RecordError(UNENCODABLE, str(exc)) from None
    except Exception as exc:  # e.g. JSON nested past the recursion limit: the record fails, not the reader
        raise RecordError(UNPROCESSABLE, f"{type(exc).__name__} while decoding a {name} event") from None


def check_time(kind: str, t: int, record_timestamp_ms: int | None, now_ms: int, max_ahead_ms: int) -> int:
    """`t` when it is an event time the window clock may take, else RecordError (invalid_event for
    no time at all, future_event for a time too far ahead of the wall clock)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < MIN_EVENT_TIME_MS:
        raise RecordError(INVALID_EVENT, f"{kind} event time must be milliseconds since the epoch, got {t!r}"[:200])
    try:
        if t >= MAX_EVENT_TIME_MS:
            raise FutureEvent(f"{kind} event time {t} is after the year 3000")
        check_event_time_ahead(kind, t, reference_time(record_timestamp_ms, now_ms), max_ahead_ms)
    except FutureEvent as exc:
        raise RecordError(FutureEvent.reason, str(exc)) from None
    return t


def decode_candidate(
    codec: Codec, value: bytes | None, headers: Mapping[str, bytes] | None = None
) -> TrainingCandidate:
    """A candidate of the gate's outputs, in full, or RecordError."""
    headers = headers or {}
    _no_tick("candidate", headers)
    c = TrainingCandidate.from_dict(_decode(codec, "candidate", value, headers))
    if not c.request_id.strip():
        raise RecordError(INVALID_EVENT, "candidate.request_id must be a non-empty string")
    return c


def candidate_time(
    codec: Codec,
    value: bytes | None,
    headers: Mapping[str, bytes] | None,
    *,
    record_timestamp_ms: int | None,
    now_ms: int,
    max_ahead_ms: int,
) -> int:
    """The event time the window clock takes from one record of the gate's outputs, or RecordError.

    Read from the bytes without a decode where the schema allows (the cost of the builder's read
    path); a record whose body is broken past its timestamp then fails at the seal instead, where
    it is decoded in full (and dead-lettered from there)."""
    headers = headers or {}
    t = None
    if not headers:
        t = codec.read_long("candidate", value or b"", "timestamp")
    if t is None:
        t = decode_candidate(codec, value, headers).timestamp
    return check_time("candidate", t, record_timestamp_ms, now_ms, max_ahead_ms)


def erasure_request(codec: Codec, value: bytes | None, headers: Mapping[str, bytes] | None = None) -> ErasureRequest:
    headers = headers or {}
    _no_tick("erasure", headers)
    try:
        return ErasureRequest.from_dict(_decode(codec, "erasure", value, headers)).check()
    except InvalidEvent as exc:
        raise RecordError(INVALID_EVENT, str(exc)) from None


def review_verdict(codec: Codec, value: bytes | None, headers: Mapping[str, bytes] | None = None) -> ReviewVerdict:
    headers = headers or {}
    _no_tick("verdict", headers)
    try:
        return ReviewVerdict.from_dict(_decode(codec, "verdict", value, headers)).check()
    except InvalidEvent as exc:
        raise RecordError(INVALID_EVENT, str(exc)) from None


def dataset_ready_id(codec: Codec, value: bytes | None, headers: Mapping[str, bytes] | None = None) -> str | None:
    """The dataset id of a ready event; None for a record that is not one (the builder only looks)."""
    try:
        _no_tick("dataset_ready", headers or {})
        ready_id = _decode(codec, "dataset_ready", value, headers or {}).get("dataset_id")
    except RecordError:
        return None
    return ready_id if isinstance(ready_id, str) else None
