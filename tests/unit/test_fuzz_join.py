"""Property-based fuzzing of the codec and of the join's per-record path.

Generated the way broken and hostile producers write: random bytes, the Avro marker with a real
fingerprint and a garbage body, valid events truncated or with bytes flipped, JSON of any shape and
depth, valid JSON events with a field swapped for an extreme value, and headers of any bytes. The
properties: decoding fails only as a DecodeError with a reason; nothing raises out of
`JoinCore.apply` or `drain`; and a valid request after the garbage joins with its action."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Codec
from schemas.codec import CONTENT_TYPE_HEADER, JSON_CONTENT_TYPE, MAGIC, TICK_HEADER, TICK_MAC_HEADER, DecodeError
from streams.join.core import ACTION, INTERACTION, Record
from tests.unit.test_join_core import MIN, Log, cands, core

codec = Codec()
NOW = 1_800_000_000_000
NAMES = ("interaction", "action", "candidate", "verdict", "dataset_ready", "erasure", "model_event", "deadletter")
FINGERPRINTS = [v.fingerprint for n in NAMES for v in codec.versions(n)]
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID_INTERACTION = dict(
    request_id="r-1",
    session_id="s-1",
    user_id="u-1",
    event_time=NOW - 3_600_000,
    model_version="m1",
    prompt="How do I reset my password?",
    response="Open settings, then security.",
    task_type="support",
    retrieved_context=["doc one", "doc two"],
    latency_ms=120.5,
    metadata={"app": "web"},
)
VALID_ACTION = dict(
    request_id="r-1", user_id="u-1", event_time=NOW - 3_500_000, action="corrected", correction="Settings > Security"
)

extreme_ints = st.sampled_from(
    [0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 10**11 - 1, 32_503_680_000_000]
)
extreme_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
extreme_strings = st.one_of(
    st.sampled_from(["", " ", "\x00", "\ud800", "x" * 100_000, "é" * 5000]), st.text(max_size=50)
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)),
    max_leaves=40,
)
deep_json = st.integers(min_value=1, max_value=20_000).map(lambda n: ("[" * n + "]" * n).encode())


def mutated(record: dict, draw_value) -> st.SearchStrategy[dict]:
    return st.builds(
        lambda field, value: {**record, field: value}, st.sampled_from(sorted(record) + ["unknown_field"]), draw_value
    )


any_value = st.one_of(extreme_ints, extreme_floats, extreme_strings, json_values, st.binary(max_size=20))


def avro_garbage() -> st.SearchStrategy[bytes]:
    valid = [codec.encode("interaction", VALID_INTERACTION), codec.encode("action", VALID_ACTION)]
    flips = st.builds(
        lambda data, at, byte: data[: at % len(data)] + bytes([byte]) + data[at % len(data) + 1 :],
        st.sampled_from(valid),
        st.integers(0, 10_000),
        st.integers(0, 255),
    )
    cuts = st.builds(lambda data, at: data[: at % len(data)], st.sampled_from(valid), st.integers(0, 10_000))
    framed = st.builds(lambda fp, body: MAGIC + fp + body, st.sampled_from(FINGERPRINTS), st.binary(max_size=300))
    return st.one_of(st.binary(max_size=300), framed, flips, cuts)


def json_garbage() -> st.SearchStrategy[bytes]:
    dumped = st.builds(
        lambda v: json.dumps(v).encode(),
        st.one_of(
            json_values,
            mutated(VALID_INTERACTION, any_value.filter(_jsonable)),
            mutated(VALID_ACTION, any_value.filter(_jsonable)),
        ),
    )
    return st.one_of(
        dumped,
        deep_json,
        st.binary(max_size=200),
        st.builds(lambda n: b'{"event_time": ' + b"9" * n + b"}", st.integers(1, 6000)),
    )


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


@FUZZ
@given(name=st.sampled_from(NAMES), data=avro_garbage())
def test_avro_garbage_fails_only_as_a_reasoned_decode_error(name, data):
    try:
        codec.decode(name, data)
    except DecodeError as exc:
        assert exc.reason and isinstance(exc.detail, str)


@FUZZ
@given(name=st.sampled_from(("interaction", "action", "verdict", "erasure")), data=json_garbage())
def test_json_garbage_fails_only_as_a_reasoned_decode_error(name, data):
    try:
        codec.decode(name, data, {CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE})
    except DecodeError as exc:
        assert exc.reason and isinstance(exc.detail, str)


headers = st.one_of(
    st.just({}),
    st.just({CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE}),
    st.dictionaries(
        st.sampled_from([TICK_HEADER, TICK_MAC_HEADER, CONTENT_TYPE_HEADER, "x"]), st.binary(max_size=30), max_size=3
    ),
)
records = st.builds(
    lambda kind, key, value, hdrs, ts: (kind, key, value, hdrs, ts),
    st.sampled_from((INTERACTION, ACTION)),
    st.one_of(st.none(), st.just(b"r-1"), st.binary(max_size=12)),
    st.one_of(avro_garbage(), json_garbage(), st.none()),
    headers,
    st.one_of(st.none(), extreme_ints),
)


@FUZZ
@given(batch=st.lists(records, min_size=1, max_size=12))
def test_nothing_raises_out_of_the_join_and_a_valid_request_still_joins(batch):
    j = core(max_event_ahead_ms=15 * MIN, wall_clock_ms=lambda: NOW, tick_key="k")
    offsets = {INTERACTION: 0, ACTION: 0}
    garbage = []
    for kind, key, value, hdrs, ts in batch:
        garbage.append(Record(kind, f"t.{kind}", 0, offsets[kind], key, value, dict(hdrs), ts))
        offsets[kind] += 1
    out = j.apply_all(garbage)
    for d in out.deadletters:
        assert d.reason and d.detail is not None
    # a well-formed request on the same partition afterwards (event time far behind any garbage tick)
    log = Log()
    log.offsets = dict(offsets)
    t = NOW - 10 * 24 * 60 * MIN
    rid = "after-the-garbage"
    out = j.apply_all([log.interaction(rid, t), log.action(rid, t + MIN, "accepted")])
    settled = j.apply_all([log.tick(INTERACTION, NOW - MIN), log.tick(ACTION, NOW - MIN)])
    # unsigned ticks do not count with a tick key: close the window with a signed pair
    from schemas.codec import tick_mac

    closing = [log.tick(k, NOW - MIN) for k in (INTERACTION, ACTION)]
    for r in closing:
        r.headers[TICK_MAC_HEADER] = tick_mac("k", r.headers[TICK_HEADER])
    got = cands(out) + cands(settled) + cands(j.apply_all(closing))
    mine = [c for c in got if c.request_id == rid]
    assert len(mine) == 1 and mine[0].user_action == "accepted"
