"""The one codec for every flywheel event: Avro single-object encoding, or JSON marked by a header.

Wire format (the Avro specification's single-object encoding):

    0xC3 0x01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

Decoding looks the writer schema up by fingerprint among every version shipped in `schemas/avro`
and resolves it against the current (reader) version, so bytes written by an older producer stay
readable. New fields must carry defaults; `tests/unit/test_codec.py` holds that rule to account.

A producer that has no Avro library may send JSON instead: the record header
`content-type: application/json` marks it, and the JSON object is validated against the same
current schema (missing fields take their defaults).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterable, Mapping

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from schemas.conversation import upgrade_conversation

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
CONTENT_TYPE_HEADER = "content-type"
# an empty record with this header (value: event time in ms, ASCII) advances event time on its
# partition: producers send it to every partition so that quiet ones still settle
TICK_HEADER = "flywheel-tick"
# with a configured tick key, a tick must carry HMAC-SHA256(key, tick value) in hex here
TICK_MAC_HEADER = "flywheel-tick-mac"
JSON_CONTENT_TYPE = b"application/json"

_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

# what Avro's schema resolution cannot do alone, run on every decoded record of the event, whatever
# version wrote it (and on JSON events): a single-turn interaction or candidate becomes a one-turn
# conversation (schemas/conversation.py). Pure and idempotent: decoding twice gives the same record.
UPGRADES = {"interaction": upgrade_conversation, "candidate": upgrade_conversation}


class DecodeError(ValueError):
    """Bytes that are not a valid event. `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A record that does not fit its schema."""


@dataclass(frozen=True)
class InputLimits:
    """Structural limits every decoded event must meet, checked while or right after parsing.

    Why: a value can be valid Avro or JSON and still stop or slow a worker (a 100 KB `[[[[...]]]]`
    made `json.loads` raise RecursionError in the join; a million-item list costs every stage).
    Each broken limit is a dead-letter reason of its own."""

    max_depth: int = 8  # JSON nesting; the deepest schema is record -> map or array -> value
    max_keys: int = 256  # entries of one JSON object or Avro map
    max_items: int = 1024  # items of one array
    max_string_chars: int = 200_000  # one string
    max_int: int = 2**63 - 1  # Avro long; JSON numbers beyond it cannot be encoded


DEFAULT_LIMITS = InputLimits()
_LIMIT_REASONS = ("too_deep", "too_many_keys", "too_many_items", "too_long", "int_out_of_range", "not_finite")


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    parsed: Any
    fingerprint: bytes
    raw: dict

    @property
    def field_defaults(self) -> dict[str, Any]:
        return {f["name"]: f["default"] for f in self.raw["fields"] if "default" in f}

    @property
    def bytes_fields(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.raw["fields"] if f["type"] == "bytes" or f["type"] == ["null", "bytes"])

    @property
    def required_fields(self) -> list[str]:
        return [f["name"] for f in self.raw["fields"] if "default" not in f]


def _fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def load_schema_versions(files: Iterable[tuple[str, str]]) -> dict[str, list[SchemaVersion]]:
    """(file name, JSON text) pairs -> versions by event name, oldest first."""
    by_name: dict[str, list[SchemaVersion]] = {}
    for filename, text in files:
        m = _FILE_RE.match(filename)
        if not m:
            continue
        raw = json.loads(text)
        parsed = fastavro.parse_schema(raw, named_schemas={})
        version = SchemaVersion(m["name"], int(m["version"]), parsed, _fingerprint(parsed), raw)
        by_name.setdefault(version.name, []).append(version)
    for versions in by_name.values():
        versions.sort(key=lambda v: v.version)
    return by_name


def _shipped_schema_files() -> list[tuple[str, str]]:
    folder = resources.files("schemas") / "avro"
    return [(p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".avsc")]


class Codec:
    """Encodes the current version of each event; decodes any known version into the current one."""

    def __init__(
        self, versions: Mapping[str, list[SchemaVersion]] | None = None, limits: InputLimits = DEFAULT_LIMITS
    ):
        self.limits = limits
        self._versions = dict(versions or load_schema_versions(_shipped_schema_files()))
        self._current = {name: vs[-1] for name, vs in self._versions.items()}
        self._by_fingerprint = {v.fingerprint: v for vs in self._versions.values() for v in vs}
        self._long_plans: dict[tuple[bytes, str], tuple[bool, ...] | bool] = {}

    # -- introspection -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._current)

    def current(self, name: str) -> SchemaVersion:
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"unknown event type {name!r}; known: {', '.join(self.names())}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        return list(self._versions[name])

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, name: str, record: Mapping[str, Any], *, version: SchemaVersion | None = None) -> bytes:
        schema = version or self.current(name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(
                f"{name}: record does not fit the schema ({type(exc).__name__}); see Codec.check"
            ) from None
        return buf.getvalue()

    def check(self, name: str, record: Mapping[str, Any]) -> None:
        """Raise EncodeError naming the offending field when `record` does not fit the schema."""
        schema = self.current(name)
        for f in schema.required_fields:
            if f not in record:
                raise EncodeError(f"{name}: missing required field {f!r}")
        try:
            validate(record, schema.parsed, raise_errors=True)
        except Exception as exc:  # fastavro raises ValidationError with a list of paths
            raise EncodeError(f"{name}: {_validation_message(exc)}") from None

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, name: str, data: bytes, headers: Mapping[str, bytes] | None = None) -> dict:
        if headers and (headers.get(CONTENT_TYPE_HEADER) or b"").startswith(JSON_CONTENT_TYPE):
            return self.decode_json(name, data)
        return self.decode_avro(name, data)

    def decode_avro(self, name: str, data: bytes) -> dict:
        reader = self.current(name)
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("undecodable", "not Avro single-object encoding (no 0xC3 0x01 marker)")
        writer = self._by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None:
            raise DecodeError("unknown_fingerprint", f"no known schema has fingerprint {data[2:HEADER_LEN].hex()}")
        if writer.name != name:
            raise DecodeError("invalid_event", f"expected a {name} event, got a {writer.name} event")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer is reader:
                record = fastavro.schemaless_reader(buf, reader.parsed, None)
            else:
                record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # truncated or corrupt body: any fastavro error means the same
            raise DecodeError("undecodable", f"Avro body does not match its schema ({type(exc).__name__})") from None
        if buf.tell() != len(data):
            raise DecodeError("undecodable", f"{len(data) - buf.tell()} trailing bytes after the Avro body")
        if not isinstance(record, dict):  # every schema's top level is a record
            raise DecodeError("undecodable", f"Avro body is a {type(record).__name__}, not a record")
        check_values(record, self.limits)
        upgrade = UPGRADES.get(name)
        return record if upgrade is None else upgrade(record)

    def read_long(self, name: str, data: bytes, field_name: str) -> int | None:
        """One long field straight from single-object Avro bytes, without decoding the record, when
        the writer's schema puts only strings and longs before it; None otherwise (decode instead).

        Why: the dataset builder's window clock needs nothing but each candidate's event time, and
        a full decode of a candidate costs twenty times as much."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            return None
        writer = self._by_fingerprint.get(data[2:HEADER_LEN])
        if writer is None or writer.name != name:
            return None
        plan = self._long_plans.get((writer.fingerprint, field_name))
        if plan is None:
            plan = self._long_plans[(writer.fingerprint, field_name)] = _long_plan(writer.raw, field_name)
        if isinstance(plan, bool):
            return None
        pos, end = HEADER_LEN, len(data)
        try:
            for is_string in plan:
                value, pos = _varint(data, pos)
                if is_string:
                    if value < 0:
                        return None
                    pos += value
            value, pos = _varint(data, pos)
        except IndexError:
            return None
        return value if pos <= end else None

    def decode_json(self, name: str, data: bytes) -> dict:
        return self.decode_json_value(name, parse_json(data, self.limits), checked=True)

    def decode_json_value(self, name: str, obj: Any, *, checked: bool = False) -> dict:
        """`decode_json` of a value already parsed (one event of an HTTP batch): the same limits,
        rules and dead-letter reasons. `checked`: the limits were met while parsing it."""
        schema = self.current(name)
        if not checked:
            _check_tree(obj, self.limits)
        if not isinstance(obj, dict):
            raise DecodeError("invalid_json", f"expected a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {f["name"] for f in schema.raw["fields"]}
        if unknown:
            raise DecodeError("invalid_event", f"unknown fields: {', '.join(sorted(unknown))}")
        record = {**schema.field_defaults, **obj}
        for f in schema.bytes_fields:  # Avro's JSON form of bytes: one character per byte (ISO-8859-1)
            if isinstance(record.get(f), str):
                try:
                    record[f] = record[f].encode("latin-1")
                except UnicodeEncodeError:
                    raise DecodeError("invalid_event", f"{name}: {f} holds characters beyond one byte each") from None
        try:
            self.check(name, record)
        except EncodeError as exc:
            raise DecodeError("invalid_event", str(exc)) from None
        upgrade = UPGRADES.get(name)
        return record if upgrade is None else upgrade(record)

    def upgrade(self, name: str, data: bytes, headers: Mapping[str, bytes] | None = None) -> tuple[dict, bytes]:
        """Decode, and give back bytes in the current version (the input itself when already current)."""
        record = self.decode(name, data, headers)
        if data[2:HEADER_LEN] == self._current[name].fingerprint and data[:2] == MAGIC:
            return record, data
        return record, self.encode(name, record)


def _reject_constant(name: str):
    raise DecodeError("not_finite", f"JSON constant {name} is not a number an event may hold")


def parse_json(data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """`json.loads` that fails as a DecodeError with a reason, never with anything else: nesting
    beyond the interpreter's recursion limit, integers of thousands of digits, NaN and Infinity,
    and every structural limit of `limits` (checked by walking the parsed value, no recursion)."""
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError(
            "too_deep", f"JSON nested deeper than the parser can follow (limit {limits.max_depth})"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(
            "invalid_json", f"not JSON ({type(exc).__name__} at byte {getattr(exc, 'pos', '?')})"
        ) from None
    except (ValueError, TypeError) as exc:  # int digits beyond sys.get_int_max_str_digits, a non-bytes value
        raise DecodeError("int_out_of_range" if "digit" in str(exc) else "invalid_json", type(exc).__name__) from None
    _check_tree(obj, limits)
    return obj


def _check_tree(obj: Any, limits: InputLimits) -> None:
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limits.max_depth:
                raise DecodeError("too_deep", f"nested deeper than {limits.max_depth} levels")
            if isinstance(value, dict):
                if len(value) > limits.max_keys:
                    raise DecodeError("too_many_keys", f"an object of {len(value)} keys (limit {limits.max_keys})")
                for k in value:
                    if len(k) > limits.max_string_chars:
                        raise DecodeError("too_long", f"a key of {len(k)} characters")
                stack.extend((v, depth + 1) for v in value.values())
            else:
                if len(value) > limits.max_items:
                    raise DecodeError("too_many_items", f"an array of {len(value)} items (limit {limits.max_items})")
                stack.extend((v, depth + 1) for v in value)
        else:
            _check_scalar(value, limits)


def _check_scalar(value: Any, limits: InputLimits) -> None:
    if isinstance(value, str):
        if len(value) > limits.max_string_chars:
            raise DecodeError("too_long", f"a string of {len(value)} characters (limit {limits.max_string_chars})")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -limits.max_int - 1 <= value <= limits.max_int:
            raise DecodeError("int_out_of_range", f"an integer of {len(str(abs(value)))} digits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise DecodeError("not_finite", f"a number that is {value}")


def check_values(record: Mapping[str, Any], limits: InputLimits = DEFAULT_LIMITS) -> None:
    """The limits on a decoded Avro record, whose schema already bounds its depth (records, maps and
    arrays of them down to scalars; a conversation's turns nest deepest, record -> array -> record
    -> array -> record): sizes, lengths and finiteness, walked without recursion."""
    stack = [record]
    while stack:
        for value in stack.pop().values():
            if isinstance(value, dict):  # a map, or a nested record (a turn, a tool call)
                if len(value) > limits.max_keys:
                    raise DecodeError("too_many_keys", f"a map of {len(value)} entries (limit {limits.max_keys})")
                for k in value:
                    _check_scalar(k, limits)
                stack.append(value)
            elif isinstance(value, list):
                if len(value) > limits.max_items:
                    raise DecodeError("too_many_items", f"an array of {len(value)} items (limit {limits.max_items})")
                for v in value:
                    if isinstance(v, dict):
                        stack.append(v)
                    else:
                        _check_scalar(v, limits)
            else:
                _check_scalar(value, limits)


def _long_plan(raw: dict, field_name: str) -> tuple[bool, ...] | bool:
    """For `Codec.read_long`: per field before `field_name`, whether it is a string (else a long or
    int); False when some earlier field is of another type or `field_name` is not a long."""
    plan: list[bool] = []
    for f in raw["fields"]:
        if f["name"] == field_name:
            return tuple(plan) if f["type"] in ("long", "int") else False
        if f["type"] in ("string", "bytes"):
            plan.append(True)
        elif f["type"] in ("long", "int"):
            plan.append(False)
        else:
            return False
    return False


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, next position). IndexError when the bytes end first."""
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")


def _validation_message(exc: Exception) -> str:
    """Field names and types only: the offending value may be prompt text, and errors reach logs."""
    errors = getattr(exc, "errors", None)
    if not errors:
        return type(exc).__name__
    parts = []
    for e in errors[:3]:
        field = getattr(e, "field", None) or "record"
        got = "null" if getattr(e, "datum", None) is None else type(e.datum).__name__
        parts.append(f"{field}: got {got}, expected {_schema_words(getattr(e, 'schema', None))}")
    return "; ".join(parts)


def _schema_words(schema: Any) -> str:
    if isinstance(schema, dict):
        return schema.get("name") or schema.get("type", "?")
    if isinstance(schema, list):
        return " or ".join(_schema_words(s) for s in schema)
    return str(schema)


def headers_dict(headers: Any) -> dict[str, bytes]:
    """Kafka headers (list of pairs, or mapping, or None) as a dict of str -> bytes."""
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = {}
    for k, v in items:
        key = k.decode() if isinstance(k, bytes) else str(k)
        out[key.lower()] = v if isinstance(v, bytes) else (b"" if v is None else str(v).encode())
    return out


def tick_mac(key: str, value: bytes) -> bytes:
    """The `flywheel-tick-mac` header value for a tick of `value` (ASCII milliseconds)."""
    return hmac.new(key.encode(), b"flywheel-tick:" + value, hashlib.sha256).hexdigest().encode("ascii")


def tick_authentic(key: str, value: bytes, mac: bytes | None) -> bool:
    """Whether a tick is signed with `key` (always true when no key is configured)."""
    if not key:
        return True
    return mac is not None and hmac.compare_digest(tick_mac(key, value), mac.strip())
