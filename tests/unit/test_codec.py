"""The codec: single-object encoding, schema evolution, JSON events, and the errors it names."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from schemas import Codec, DecodeError, EncodeError, Interaction, UserAction
from schemas.codec import MAGIC, load_schema_versions

codec = Codec()
T0 = 1_700_000_000_000


def test_fingerprint_is_crc64_avro_little_endian():
    # test vectors from the Avro specification's schema-tests: "null" and "int"
    versions = load_schema_versions([("null.v1.avsc", '"null"'), ("int.v1.avsc", '"int"')])
    assert int.from_bytes(versions["null"][0].fingerprint, "little") == 7195948357588979594
    assert int.from_bytes(versions["int"][0].fingerprint, "little") == 8247732601305521295


def test_round_trip_and_layout():
    i = Interaction(
        "r1", "s1", "u1", T0, "m1", "p", "r", task_type="qa", retrieved_context=["doc"], metadata={"k": "v"}
    )
    data = codec.encode("interaction", i.to_dict())
    assert data[:2] == MAGIC and data[2:10] == codec.current("interaction").fingerprint
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), codec.current("interaction").parsed, None)
    assert body["request_id"] == "r1"
    assert Interaction.from_dict(codec.decode("interaction", data)) == i


def test_every_new_field_has_a_default():
    for name in codec.names():
        versions = codec.versions(name)
        for old, new in zip(versions, versions[1:]):
            old_fields = {f["name"] for f in old.raw["fields"]}
            added = [f for f in new.raw["fields"] if f["name"] not in old_fields]
            assert all("default" in f for f in added), f"{name} v{new.version}: new fields need defaults"


def test_bytes_written_with_the_previous_version_still_decode():
    v1, v2, v3 = codec.versions("interaction")[:3]
    assert v1.version == 1 and v3 is codec.current("interaction")
    old = {
        "request_id": "r1",
        "session_id": "s",
        "user_id": "u",
        "event_time": T0,
        "model_version": "m0",
        "variant": "",
        "task_type": "",
        "prompt": "p",
        "response": "r",
        "retrieved_context": None,
        "latency_ms": 12.5,
    }
    for version in (v1, v2):
        data = codec.encode("interaction", old, version=version)
        assert data[2:10] == version.fingerprint != v3.fingerprint
        record = codec.decode("interaction", data)
        assert record["latency_ms"] == 12.5 and record["uncertainty"] is None and record["metadata"] == {}
        # a single-turn event is a one-turn conversation
        assert record["messages"] == [
            {"role": "user", "content": "p", "name": None, "tool_calls": [], "tool_call_id": None}
        ]
        # upgrade gives bytes in the current version
        rec, current = codec.upgrade("interaction", data)
        assert current[2:10] == v3.fingerprint and codec.decode("interaction", current) == rec


def test_json_events_are_validated_against_the_same_schema():
    headers = {"content-type": b"application/json"}
    raw = json.dumps({"request_id": "r", "user_id": "u", "event_time": T0, "action": "copied"}).encode()
    assert codec.decode("action", raw, headers)["correction"] is None
    with pytest.raises(DecodeError) as e:
        codec.decode(
            "action",
            json.dumps({"request_id": "r", "user_id": "u", "event_time": T0, "action": "loved"}).encode(),
            headers,
        )
    assert e.value.reason == "invalid_event"
    with pytest.raises(DecodeError) as e:
        codec.decode("action", json.dumps({"request_id": "r", "event_time": T0, "action": "copied"}).encode(), headers)
    assert e.value.reason == "invalid_event" and "user_id" in e.value.detail
    with pytest.raises(DecodeError) as e:
        codec.decode("action", b"[1, 2]", headers)
    assert e.value.reason == "invalid_json"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "undecodable"),
        (b"plain text", "undecodable"),
        (MAGIC + b"\x00" * 8 + b"body", "unknown_fingerprint"),
    ],
)
def test_decode_errors_name_their_reason(data, reason):
    with pytest.raises(DecodeError) as e:
        codec.decode("interaction", data)
    assert e.value.reason == reason


def test_truncated_body_and_wrong_event_type():
    data = codec.encode("action", UserAction("r", "u", T0, "accepted").to_dict())
    with pytest.raises(DecodeError) as e:
        codec.decode("action", data[:-3])
    assert e.value.reason == "undecodable"
    with pytest.raises(DecodeError) as e:
        codec.decode("interaction", data)
    assert e.value.reason == "invalid_event" and "action" in e.value.detail


def test_encode_errors_name_the_field():
    with pytest.raises(EncodeError, match="user_id"):
        codec.check("action", {"request_id": "r", "event_time": T0, "action": "accepted"})
    with pytest.raises(EncodeError):
        codec.encode("action", {"request_id": "r", "user_id": "u", "event_time": "yesterday", "action": "accepted"})


def test_read_long_takes_the_event_time_from_the_bytes_without_decoding():
    from schemas.records import TrainingCandidate

    codec = Codec()
    c = TrainingCandidate(
        request_id="r-" + "x" * 300,
        timestamp=1_767_225_600_123,
        user_id="u",
        session_id="s",
        prompt="p",
        response="r",
        user_action="accepted",
    )
    data = codec.encode("candidate", c.to_dict())
    assert codec.read_long("candidate", data, "timestamp") == 1_767_225_600_123
    negative = codec.encode("candidate", {**c.to_dict(), "timestamp": -5})
    assert codec.read_long("candidate", negative, "timestamp") == -5
    # not readable that way: truncated bytes, another event type, no Avro marker, a field after a union
    assert codec.read_long("candidate", data[:12], "timestamp") is None
    assert codec.read_long("interaction", data, "timestamp") is None
    assert codec.read_long("candidate", b"{}", "timestamp") is None
    assert codec.read_long("candidate", data, "settled_at") is None
    assert codec.read_long("candidate", data, "prompt") is None
