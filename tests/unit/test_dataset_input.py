"""The dataset builder's per-record path, fuzzed: a record can fail, the builder cannot.

Generated the way broken and hostile producers write to the topics the builder reads: random bytes,
the Avro marker with a real fingerprint and a garbage body, valid candidates truncated or with bytes
flipped, JSON of any shape, valid candidates with a field swapped for an extreme value, ticks, and
headers of any bytes. The properties: the read path (`intake.candidate_time`) either gives an event
time inside the bound, which the window clock takes, or fails as a `RecordError` with a reason; the
seal's per-record path (`intake.decode_candidate`, `builder.prepare_entry`) fails only that way, and
whatever it accepts, pass 2 writes (the records fit their Avro schemas and their JSONL lines
encode); erasure requests, verdicts and ready events likewise. Then the same on whole partitions
from a spool of garbage, through `observe_partition`, with no broker.
"""

from __future__ import annotations

import json
import math
import marshal
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flywheel.settings import Settings
from schemas.codec import CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, MAGIC, TICK_HEADER, TICK_MAC_HEADER, Codec, tick_mac
from schemas.records import MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS, ErasureRequest, ReviewVerdict, TrainingCandidate
from streams.datasets import content, intake
from streams.datasets.builder import PartitionRead, SealInputs, observe_partition, prepare_entry
from streams.datasets.spool import WindowSpool
from streams.datasets.windows import WindowClock

codec = Codec()
NOW = 1_800_000_000_000
MIN = 60_000
BOUND = 15 * MIN
NAMES = ("interaction", "action", "candidate", "verdict", "dataset_ready", "erasure", "model_event", "deadletter")
FINGERPRINTS = [v.fingerprint for n in NAMES for v in codec.versions(n)]
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
JSON_HEADERS = {CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE}

VALID = TrainingCandidate(
    request_id="req-1",
    timestamp=NOW - 3_600_000,
    user_id="u-1",
    session_id="s-1",
    prompt="How do I reset my password?",
    response="Open settings, then security.",
    user_action="corrected",
    correction="Settings > Security > Reset",
    task_type="support",
    quality_score=0.8,
    model_version="m1",
    label="sft_correction",
    target="Settings > Security > Reset",
    pair_chosen="Settings > Security > Reset",
    pair_rejected="Open settings, then security.",
    pair_key="pk-1",
    actions=["corrected"],
    rating=4.0,
    time_to_action_ms=1200,
    retrieved_context=["doc"],
    uncertainty=0.7,
    latency_ms=80.0,
    metadata={"app": "web"},
    scores={"quality": 0.8},
    reasons=[],
    policy_version="p@1",
    settled_at=NOW - 1_800_000,
).to_dict()
JSON_VALID = {k: v for k, v in VALID.items() if k != "dedup_keys"}  # bytes: not a JSON value (its default stands in)
VALID_BYTES = codec.encode("candidate", VALID)
VALID_ERASURE = ErasureRequest("u-1", NOW).to_dict()
VALID_VERDICT = ReviewVerdict("v-1", "req-1", "alice", 4, 4, 5, True, NOW, NOW - 3_600_000, True).to_dict()

extreme_ints = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**53 + 1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        10**30,
        MIN_EVENT_TIME_MS - 1,
        MIN_EVENT_TIME_MS,
        MAX_EVENT_TIME_MS - 1,
        MAX_EVENT_TIME_MS,
        NOW + BOUND,
        NOW + BOUND + 1,
    ]
)
extreme_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 5e-324])
extreme_strings = st.one_of(
    st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", "x" * 50_000, "é" * 5000, "\u202e"]), st.text(max_size=40)
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30,
)
any_value = st.one_of(extreme_ints, extreme_floats, extreme_strings, json_values, st.binary(max_size=20))
_plain_headers = st.dictionaries(
    st.one_of(st.sampled_from([CONTENT_TYPE_HEADER, "traceparent", "x"]), st.text(max_size=5)),
    st.one_of(st.binary(max_size=30), st.just(JSON_CONTENT_TYPE), st.none()),
    max_size=3,
)
_tick_headers = st.dictionaries(
    st.sampled_from([TICK_HEADER, TICK_MAC_HEADER, CONTENT_TYPE_HEADER]),
    st.one_of(st.binary(max_size=30), st.just(b"1800000000000")),
    min_size=1,
    max_size=3,
)
headers_any = st.one_of(_plain_headers, _plain_headers, _plain_headers, _tick_headers)  # a tick now and then


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def mutated(record: dict) -> st.SearchStrategy[dict]:
    return st.builds(
        lambda field, value: {**record, field: value}, st.sampled_from(sorted(record) + ["unknown_field"]), any_value
    )


def avro_garbage(valid: list[bytes]) -> st.SearchStrategy[bytes]:
    flips = st.builds(
        lambda data, at, byte: data[: at % len(data)] + bytes([byte]) + data[at % len(data) + 1 :],
        st.sampled_from(valid),
        st.integers(0, 10_000),
        st.integers(0, 255),
    )
    cuts = st.builds(lambda data, at: data[: at % len(data)], st.sampled_from(valid), st.integers(0, 10_000))
    grown = st.builds(lambda data, tail: data + tail, st.sampled_from(valid), st.binary(min_size=1, max_size=20))
    framed = st.builds(lambda fp, body: MAGIC + fp + body, st.sampled_from(FINGERPRINTS), st.binary(max_size=300))
    return st.one_of(st.binary(max_size=300), framed, flips, cuts, grown)


def json_garbage(record: dict) -> st.SearchStrategy[bytes]:
    dumped = st.builds(
        lambda v: json.dumps(v).encode(),
        st.one_of(json_values, mutated(record).filter(_jsonable), mutated(record).filter(_jsonable), st.just(record)),
    )
    deep = st.integers(min_value=1, max_value=20_000).map(lambda n: ("[" * n + "]" * n).encode())
    huge_int = st.builds(lambda n: b'{"timestamp": ' + b"9" * n + b"}", st.integers(1, 6000))
    return st.one_of(dumped, deep, huge_int, st.binary(max_size=200))


# valid candidates with extreme numbers and texts, encoded as a producer would (Avro) ---------------


def _extreme_candidate(ts, q, u, rating, tta, text, action, label, latency):
    c = {
        **VALID,
        "timestamp": ts,
        "quality_score": q,
        "uncertainty": u,
        "rating": rating,
        "time_to_action_ms": tta,
        "prompt": text,
        "target": text or None,
        "user_action": action,
        "label": label,
        "latency_ms": latency,
        "scores": {"quality": q},
        "metadata": {"k": text[:10]},
    }
    return c


longs = st.one_of(extreme_ints.filter(lambda v: -(2**63) <= v < 2**63), st.integers(-(2**63), 2**63 - 1))
times = st.one_of(longs, st.integers(NOW - 10**11, NOW + 2 * BOUND), st.integers(NOW - 10**11, NOW))
doubles = st.one_of(extreme_floats, st.floats())
extreme_candidates = st.builds(
    _extreme_candidate,
    times,
    doubles,
    st.one_of(st.none(), doubles),
    st.one_of(st.none(), doubles),
    st.one_of(st.none(), longs),
    st.text(max_size=200).filter(lambda t: _encodable(t)),
    st.sampled_from(["accepted", "corrected", "regenerated", "", "??"]),
    st.sampled_from(["sft_positive", "sft_correction", "negative", ""]),
    st.one_of(st.none(), doubles),
)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# the properties ------------------------------------------------------------------------------------


def _time(value, headers, record_ts=NOW - 1000):
    return intake.candidate_time(codec, value, headers, record_timestamp_ms=record_ts, now_ms=NOW, max_ahead_ms=BOUND)


def _read_path(value, headers, record_ts=NOW - 1000) -> int | None:
    """What the service does with one record of the gate's outputs: a time the clock takes, or a dead letter."""
    clock = WindowClock(7 * 86_400_000, 14 * 86_400_000, ["p/0"])
    try:
        t = _time(value, headers, record_ts)
    except intake.RecordError as exc:
        event(f"read path: {exc.reason}")
        assert exc.reason and isinstance(exc.detail, str) and len(exc.detail) <= 500
        codec.encode("deadletter", intake.rejected(exc, "p", 0, 7, value, b"k", headers).dead_letter(NOW).to_dict())
        clock.skip("p/0", 7)
        assert clock.high("p/0") is None and clock.position("p/0") == 8
        return None
    event("read path: taken")
    assert MIN_EVENT_TIME_MS <= t <= min(record_ts or NOW, NOW) + BOUND
    clock.observe("p/0", 7, t)
    assert clock.high("p/0") == t
    return t


def _seal_path(value, headers) -> TrainingCandidate | None:
    """What the seal does with one member: decode, build, then pass 2's writing of what was built."""
    try:
        c = intake.decode_candidate(codec, value, headers)
    except intake.RecordError as exc:
        event(f"seal path: {exc.reason}")
        assert exc.reason
        return None
    event("seal path: built")
    _built(c)
    return c


def _built(c: TrainingCandidate) -> None:
    payload, _ = prepare_entry(c, 0.1, frozenset({c.pair_key}))
    stats, offers = content.WindowStats(), content.OfferLog()
    stats.add(c)
    offers.add(c)
    if payload is None:
        return
    request_id, sft, pref, successor, *_ = marshal.loads(payload)
    for record, schema, chat in (
        (sft, "sft_record", content.chat_sft),
        (pref, "preference_record", content.chat_preference),
    ):
        if record is None:
            continue
        record = content.with_context(record, stats, {})
        codec.encode(schema, record)  # what the shard writer's Avro side takes
        json.dumps(chat(record), sort_keys=True, ensure_ascii=False).encode("utf-8")  # and its JSONL side
        content.curriculum_bucket(record.get("difficulty", 0.0), 4)
    if successor is not None:
        rp = content.regeneration_pair_record("an earlier answer", TrainingCandidate.from_dict(successor), stats, 0.1)
        if rp is not None:
            codec.encode("preference_record", rp)


@FUZZ
@given(
    data=avro_garbage([VALID_BYTES, codec.encode("erasure", VALID_ERASURE), codec.encode("verdict", VALID_VERDICT)]),
    headers=st.one_of(st.just({}), headers_any),
)
def test_avro_garbage_on_the_gate_outputs_is_a_dead_letter_or_a_bounded_time(data, headers):
    _read_path(data, headers)
    _seal_path(data, headers)


@FUZZ
@given(data=json_garbage(JSON_VALID), extra=headers_any)
def test_json_garbage_on_the_gate_outputs_is_a_dead_letter_or_a_bounded_time(data, extra):
    headers = {**extra, CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE}
    _read_path(data, headers)
    _seal_path(data, headers)


@FUZZ
@given(
    c=extreme_candidates,
    as_json=st.booleans(),
    record_ts=st.one_of(st.none(), st.just(NOW - 10 * MIN), st.just(NOW + 10**9)),
)
def test_valid_candidates_with_extreme_numbers_are_taken_or_refused_and_whatever_is_taken_is_written(
    c, as_json, record_ts
):
    if as_json:
        if not _jsonable(c):
            return
        value, headers = json.dumps(c).encode(), dict(JSON_HEADERS)
    else:
        value, headers = codec.encode("candidate", c), {}
    t = _read_path(value, headers, record_ts)
    got = _seal_path(value, headers)  # None: dead-lettered at the seal (a NaN the fast read path does not look at)
    if t is not None and got is not None:
        assert got.timestamp == t  # the seal sees the time the clock took
    ts = c["timestamp"]
    ahead = ts > min(record_ts or NOW, NOW) + BOUND
    if ts < MIN_EVENT_TIME_MS or ahead or ts >= MAX_EVENT_TIME_MS:
        assert t is None


def test_a_candidate_dated_past_the_bound_is_a_future_event_judged_against_the_record_timestamp():
    value = codec.encode("candidate", {**VALID, "timestamp": NOW + BOUND + 1})
    with pytest.raises(intake.RecordError) as got:
        _time(value, {}, record_ts=NOW)
    assert got.value.reason == "future_event"
    # a replay is judged as live was: the record's own timestamp, not today's wall clock
    late = codec.encode("candidate", {**VALID, "timestamp": NOW - 10 * 86_400_000})
    with pytest.raises(intake.RecordError, match="future_event"):
        _time(late, {}, record_ts=NOW - 20 * 86_400_000)
    assert _time(late, {}, record_ts=NOW - 10 * 86_400_000) == NOW - 10 * 86_400_000
    # a forged future record timestamp gains nothing, and -1 turns the bound off (but not the year 3000)
    with pytest.raises(intake.RecordError, match="future_event"):
        _time(value, {}, record_ts=NOW + 10**12)
    assert (
        intake.candidate_time(codec, value, {}, record_timestamp_ms=NOW, now_ms=NOW, max_ahead_ms=-1)
        == NOW + BOUND + 1
    )
    far = codec.encode("candidate", {**VALID, "timestamp": MAX_EVENT_TIME_MS})
    with pytest.raises(intake.RecordError, match="future_event"):
        intake.candidate_time(codec, far, {}, record_timestamp_ms=NOW, now_ms=NOW, max_ahead_ms=-1)
    with pytest.raises(intake.RecordError, match="invalid_event"):
        _time(codec.encode("candidate", {**VALID, "timestamp": 1_800_000_000}), {})  # seconds


def test_ticks_are_not_the_builders_event_time_signed_or_not():
    tick = str(NOW).encode()
    for headers in ({TICK_HEADER: tick}, {TICK_HEADER: tick, TICK_MAC_HEADER: tick_mac("k", tick)}):
        with pytest.raises(intake.RecordError) as got:
            _time(b"", headers)
        assert got.value.reason == "unexpected_tick"
        with pytest.raises(intake.RecordError, match="unexpected_tick"):
            intake.erasure_request(codec, b"", headers)


@FUZZ
@given(
    data=st.one_of(avro_garbage([codec.encode("erasure", VALID_ERASURE), VALID_BYTES]), json_garbage(VALID_ERASURE)),
    headers=st.one_of(st.just({}), st.just(dict(JSON_HEADERS)), headers_any),
)
def test_erasure_requests_fail_only_as_record_errors(data, headers):
    try:
        req = intake.erasure_request(codec, data, headers)
    except intake.RecordError as exc:
        assert exc.reason
        return
    from streams.datasets.builder import erased_forms

    assert req.user_id.strip() and erased_forms(req.user_id, b"k")


@FUZZ
@given(
    data=st.one_of(avro_garbage([codec.encode("verdict", VALID_VERDICT), VALID_BYTES]), json_garbage(VALID_VERDICT)),
    headers=st.one_of(st.just({}), st.just(dict(JSON_HEADERS)), headers_any),
)
def test_verdicts_and_ready_events_fail_only_as_record_errors(data, headers):
    try:
        v = intake.review_verdict(codec, data, headers)
    except intake.RecordError as exc:
        assert exc.reason
    else:
        assert isinstance(v.passed, bool) and isinstance(v.gate_passed, bool) and v.request_id.strip()
    ready = intake.dataset_ready_id(codec, data, headers)
    assert ready is None or isinstance(ready, str)


def test_a_partition_of_garbage_seals_what_is_valid_and_hands_back_the_rest(tmp_path):
    """observe_partition over a spool holding valid members between broken ones: no exception, the
    valid ones built, each broken one handed back with its offset and bytes for its dead letter."""
    start = (NOW - 3_600_000) // (7 * 86_400_000) * (7 * 86_400_000)
    good = [{**VALID, "request_id": f"req-{i}", "timestamp": start + i * 1000} for i in range(5)]
    broken = [VALID_BYTES[:30], b"\xc3\x01" + b"\x00" * 30, VALID_BYTES + b"x", json.dumps({"timestamp": 1}).encode()]
    frames = []
    for i, c in enumerate(good):
        frames.append((codec.encode("candidate", c), {}))
        if i < len(broken):
            frames.append((broken[i], dict(JSON_HEADERS) if broken[i].startswith(b"{") else {}))
    sp = WindowSpool(str(tmp_path / "spool"))
    for offset, (value, headers) in enumerate(frames):
        sp.append(0, "t/0", offset, value, headers)
    sp.close()
    settings_ = Settings()
    job = PartitionRead(
        settings_,
        "t",
        0,
        0,
        len(frames),
        start,
        start + 7 * 86_400_000,
        SealInputs(),
        sp.path(0, "t/0"),
        len(frames),
        str(tmp_path / "scratch"),
    )
    facts = observe_partition(job, validation_share=0.1, codec=codec)
    assert facts.spooled and facts.stats.total == len(good)
    assert [(r.offset, r.value) for r in facts.rejected] == [(2 * i + 1, b) for i, b in enumerate(broken)]
    assert {r.reason for r in facts.rejected} <= {
        "undecodable",
        "invalid_event",
        "invalid_json",
        "unknown_fingerprint",
    }
    assert sum(n for k, n in facts.dropped.items() if k.startswith("invalid.")) == len(broken)
    assert os.path.getsize(tmp_path / "scratch") > 0
