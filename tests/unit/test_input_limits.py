"""Input that can stop or bend the stream, written the way hostile or broken producers write it:
nesting a parser cannot follow, numbers that are no time, far-future event time and ticks, unsigned
ticks, a producer looping on one request id. Each is one dead letter with its reason; the join
goes on, and requests after it on the same partition settle with their actions as usual."""

from __future__ import annotations

import json

import pytest

from schemas import Codec
from schemas.codec import (
    JSON_CONTENT_TYPE,
    TICK_HEADER,
    TICK_MAC_HEADER,
    DecodeError,
    InputLimits,
    parse_json,
    tick_authentic,
    tick_mac,
)
from schemas.records import FutureEvent, check_event_time_ahead, reference_time
from streams.join.core import ACTION, INTERACTION, MAX_ACTIONS_PER_REQUEST
from tests.unit.test_join_core import MIN, Log, cands, core

codec = Codec()
NOW = 1_800_000_000_000  # the wall clock the tests' join reads
HOUR = 60 * MIN
JSON = {"content-type": JSON_CONTENT_TYPE}


def interaction_json(**fields) -> bytes:
    body = {
        "request_id": "r1",
        "session_id": "s",
        "user_id": "u",
        "event_time": NOW - HOUR,
        "model_version": "m",
        "prompt": "hello",
        "response": "hi",
    }
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[" * 50_000 + b"]" * 50_000, "too_deep"),  # the poison pill of the report: RecursionError in json.loads
        (b"[" * 9 + b"]" * 9, "too_deep"),
        (interaction_json(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": "x"}}}}}}}}), "too_deep"),
        (interaction_json(metadata={f"k{i}": "v" for i in range(300)}), "too_many_keys"),
        (interaction_json(retrieved_context=["doc"] * 2000), "too_many_items"),
        (
            interaction_json(event_time=0).replace(b'"event_time": 0', b'"event_time": ' + b"9" * 5000),
            "int_out_of_range",
        ),
        (interaction_json(event_time=2**64), "int_out_of_range"),
        (
            interaction_json().replace(b'"event_time": ' + str(NOW - HOUR).encode(), b'"event_time": 1e999'),
            "not_finite",
        ),
        (interaction_json().replace(b'"event_time": ' + str(NOW - HOUR).encode(), b'"event_time": NaN'), "not_finite"),
        (interaction_json(latency_ms=None).replace(b'"latency_ms": null', b'"latency_ms": -Infinity'), "not_finite"),
        (b"\xff\xfe{not json", "invalid_json"),
        (b"", "invalid_json"),
    ],
)
def test_hostile_json_is_a_reasoned_decode_error(data, reason):
    with pytest.raises(DecodeError) as caught:
        codec.decode("interaction", data, JSON)
    assert caught.value.reason == reason


def test_limits_are_checked_on_avro_too():
    small = Codec(limits=InputLimits(max_items=3, max_keys=2, max_string_chars=10))
    base = dict(
        request_id="r1", session_id="s", user_id="u", event_time=NOW, model_version="m", prompt="p", response="r"
    )
    for fields, reason in [
        ({"retrieved_context": ["a"] * 4}, "too_many_items"),
        ({"metadata": {"a": "1", "b": "2", "c": "3"}}, "too_many_keys"),
        ({"prompt": "x" * 11}, "too_long"),
        ({"latency_ms": float("nan")}, "not_finite"),
        ({"uncertainty": float("inf")}, "not_finite"),
    ]:
        data = codec.encode("interaction", {**base, **fields})
        with pytest.raises(DecodeError) as caught:
            small.decode("interaction", data)
        assert caught.value.reason == reason, fields
    assert small.decode("interaction", codec.encode("interaction", base))["prompt"] == "p"


def test_parse_json_accepts_ordinary_events():
    assert parse_json(interaction_json(metadata={"app": "x"}, retrieved_context=["a", "b"]))["metadata"] == {
        "app": "x"
    }


def test_reference_time_never_trusts_a_future_record_timestamp():
    assert reference_time(NOW - HOUR, NOW) == NOW - HOUR  # a replay judges as the live run did
    assert reference_time(NOW + 100 * HOUR, NOW) == NOW  # a forged timestamp gains nothing
    assert reference_time(None, NOW) == NOW and reference_time(-1, NOW) == NOW
    check_event_time_ahead("x", NOW + 10 * MIN, NOW, 15 * MIN)
    with pytest.raises(FutureEvent):
        check_event_time_ahead("x", NOW + 16 * MIN, NOW, 15 * MIN)
    check_event_time_ahead("x", NOW + 1000 * HOUR, NOW, -1)  # turned off


def test_tick_mac():
    mac = tick_mac("secret", b"1800000000000")
    assert tick_authentic("secret", b"1800000000000", mac)
    assert not tick_authentic("secret", b"1800000000001", mac)
    assert not tick_authentic("secret", b"1800000000000", None)
    assert not tick_authentic("other", b"1800000000000", mac)
    assert tick_authentic("", b"1800000000000", None)


def bounded(**kw):
    return core(max_event_ahead_ms=15 * MIN, wall_clock_ms=lambda: NOW, **kw)


def reasons(out):
    return [d.reason for d in out.deadletters]


def test_a_far_future_event_is_dead_lettered_and_moves_no_watermark():
    j, log = bounded(), Log()
    t = NOW - 10 * HOUR
    out = j.apply_all([log.interaction("r1", t), log.action("r1", t + MIN, "accepted")])
    year_3000 = 32_503_680_000_000 - 1
    out = j.apply_all(
        [
            log.interaction("evil", year_3000),
            log.action("evil2", NOW + HOUR, "accepted"),
            log.tick(INTERACTION, NOW + 2 * HOUR),
            log.tick(ACTION, NOW + 2 * HOUR),
        ]
    )
    assert reasons(out) == ["future_event"] * 4
    assert out.candidates == []
    # requests after it on the same partition are joined with their actions as usual
    out = j.apply_all(
        [
            log.interaction("r2", t + 2 * MIN),
            log.action("r2", t + 3 * MIN, "corrected", correction="better"),
            log.tick(INTERACTION, t + 40 * MIN),
            log.tick(ACTION, t + 40 * MIN),
        ]
    )
    got = {c.request_id: c.user_action for c in cands(out)}
    assert got == {"r1": "accepted", "r2": "corrected"} and reasons(out) == []
    # within the bound it is accepted: clocks a little ahead are normal
    out = j.apply_all([log.interaction("r3", NOW + 10 * MIN)])
    assert reasons(out) == []


def test_future_is_judged_against_the_record_timestamp_so_a_replay_decides_alike():
    j, log = bounded(), Log()
    rec = log.interaction("r1", NOW - 2 * HOUR)
    rec.timestamp_ms = NOW - 3 * HOUR  # appended three hours ago, dated one hour after that: future then
    assert reasons(j.apply_all([rec])) == ["future_event"]


@pytest.mark.parametrize(
    "value", [b"1e999", b"inf", b"-5", b" 1800000000000", b"1_800_000_000_000", b"9" * 40, b"12", b"", b"\xff"]
)
def test_malformed_ticks_are_dead_letters(value):
    j, log = bounded(), Log()
    rec = log.tick(INTERACTION, 0)
    rec.headers = {TICK_HEADER: value}
    assert reasons(j.apply_all([rec])) == ["invalid_event"]


def test_with_a_tick_key_only_signed_ticks_move_event_time():
    j, log = bounded(tick_key="k3y"), Log()
    t = NOW - HOUR
    j.apply_all([log.interaction("r1", t)])
    unsigned = [log.tick(INTERACTION, t + 40 * MIN), log.tick(ACTION, t + 40 * MIN)]
    assert reasons(out := j.apply_all(unsigned)) == ["unauthenticated_tick"] * 2 and out.candidates == []
    forged = log.tick(ACTION, t + 40 * MIN)
    forged.headers[TICK_MAC_HEADER] = tick_mac("k3y", str(t + 41 * MIN).encode())  # a mac of another time
    assert reasons(j.apply_all([forged])) == ["unauthenticated_tick"]
    signed = [log.tick(k, t + 40 * MIN) for k in (INTERACTION, ACTION)]
    for r in signed:
        r.headers[TICK_MAC_HEADER] = tick_mac("k3y", r.headers[TICK_HEADER])
    [c] = cands(j.apply_all(signed))
    assert c.request_id == "r1" and c.user_action == "abandoned"


def test_a_producer_looping_on_one_request_is_capped():
    j, log = bounded(), Log()
    t = NOW - HOUR
    out = j.apply_all(
        [log.interaction("r1", t)]
        + [log.action("r1", t + 1 + i, "thumbs_up") for i in range(MAX_ACTIONS_PER_REQUEST + 5)]
    )
    assert reasons(out) == ["too_many_actions"] * 5
    out = j.apply_all([log.tick(INTERACTION, t + 40 * MIN), log.tick(ACTION, t + 40 * MIN)])
    [c] = cands(out)
    assert len(c.actions) == MAX_ACTIONS_PER_REQUEST


def test_a_record_that_breaks_the_join_fails_alone(monkeypatch):
    import streams.join.core as join_core

    j, log = bounded(), Log()
    t = NOW - 3 * HOUR
    bad = log.interaction("r1", t)
    bad.headers = None  # not a mapping: any bug a record's content reaches ends as that record's dead letter
    out = j.apply_all(
        [bad, log.interaction("r2", t), log.tick(INTERACTION, t + 40 * MIN), log.tick(ACTION, t + 40 * MIN)]
    )
    assert reasons(out) == ["unprocessable"]
    assert [c.request_id for c in cands(out)] == ["r2"]

    # a bug in building one request's candidate: that request and its actions fail, the others settle
    real = join_core.build_candidate

    def fragile(interaction, actions, **kw):
        if interaction.prompt == "the one that breaks":
            raise ZeroDivisionError
        return real(interaction, actions, **kw)

    monkeypatch.setattr(join_core, "build_candidate", fragile)
    out = j.apply_all(
        [
            log.interaction("r3", t + MIN, prompt="the one that breaks"),
            log.action("r3", t + 2 * MIN, "accepted"),
            log.interaction("r4", t + MIN),
            log.tick(INTERACTION, t + 80 * MIN),
            log.tick(ACTION, t + 80 * MIN),
        ]
    )
    assert sorted(reasons(out)) == ["unprocessable", "unprocessable"]
    assert [c.request_id for c in cands(out)] == ["r4"]
    late = j.apply_all([log.action("r3", t + 3 * MIN, "copied")])
    assert reasons(late) == ["late_action"]  # the failed request is settled: nothing joins it again


def test_a_null_content_type_header_is_read_as_avro():
    data = codec.encode(
        "interaction",
        dict(
            request_id="r1", session_id="s", user_id="u", event_time=NOW, model_version="m", prompt="p", response="r"
        ),
    )
    assert codec.decode("interaction", data, {"content-type": None})["request_id"] == "r1"
    with pytest.raises(DecodeError):
        codec.decode("interaction", b"{}", {"content-type": None})


def test_a_json_candidate_takes_the_default_of_its_bytes_field_and_avro_json_bytes():
    import json as _json

    body = {
        "request_id": "r1",
        "timestamp": NOW,
        "user_id": "u",
        "session_id": "s",
        "prompt": "p",
        "response": "r",
        "user_action": "accepted",
    }
    assert codec.decode("candidate", _json.dumps(body).encode(), JSON)["dedup_keys"] == b""
    got = codec.decode("candidate", _json.dumps({**body, "dedup_keys": "\u00ff\u0001"}).encode(), JSON)
    assert got["dedup_keys"] == b"\xff\x01"
    with pytest.raises(DecodeError):
        codec.decode("candidate", _json.dumps({**body, "dedup_keys": "\u2603"}).encode(), JSON)
