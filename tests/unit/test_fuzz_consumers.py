"""A record can fail; a worker cannot: every consumer's per-record path, fuzzed.

Thousands of generated records go through the per-record path of each consumer (the gate, the
review sampler, the verdict relay, the rollout, the guards, the trainer): random bytes, the Avro
marker with a known fingerprint and a garbage body, truncated, bit-flipped and over-long valid
encodings, another event's valid bytes, JSON that is not an object, nested past any parser, with
huge numbers or thousands of keys, and valid events with fields set to extreme values (huge and
negative ints, NaN and infinities, empty and 100,000-character strings, lone surrogates, wrong
types, nested structures) or dropped, sent as Avro when they still encode and as JSON otherwise.

Whatever comes in, the path returns: a result, or a dead letter that names a reason, keeps the
record's bytes and where it was read, encodes as a `deadletter` event, and whose detail holds no
prompt text or personal data (a marker planted in the values never shows up in it). Nothing
raises out of it. The count of cases each consumer ran is printed at the end of the module.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import MAGIC, Codec
from schemas.records import DatasetReady, DeadLetter, ModelEvent, ReviewVerdict, TrainingCandidate
from flywheel.deadletter import DeadLetters, Source, isolating
from flywheel.metrics import ConsumerMetrics

CODEC = Codec()
JSON = {"content-type": b"application/json"}
MARKER = "SECRET-PII-marker jane.doe@example.com 536-22-1234"  # > 32 characters: `_shown` never quotes it
T0 = 1_767_225_600_000
RAN: Counter = Counter()  # cases per consumer
OUTCOMES: Counter = Counter()  # (consumer, "dead letter" | "used" | "skipped")
SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# -- valid events to start from -----------------------------------------------------------------------


def _full(name: str, record: dict) -> dict:
    return {**CODEC.current(name).field_defaults, **record}


VALID = {
    "candidate": _full(
        "candidate",
        TrainingCandidate(
            request_id="req-1",
            timestamp=T0,
            user_id="u1",
            session_id="s1",
            prompt=f"What is the capital of France? {MARKER}",
            response="Paris is the capital of France, and it has been for a very long time, as every atlas says. " * 2,
            user_action="accepted",
            task_type="qa",
            model_version="m1",
            actions=["accepted"],
            latency_ms=120.0,
            uncertainty=0.2,
            metadata={"app": "x"},
            scores={"quality": 0.8},
        ).to_dict(),
    ),
    "verdict": _full(
        "verdict",
        ReviewVerdict(
            verdict_id="req-1:alice",
            request_id="req-1",
            reviewer="alice",
            accuracy=4,
            helpfulness=4,
            safety=5,
            passed=True,
            reviewed_at=T0,
            event_time=T0,
            gate_passed=True,
            task_type="qa",
            gate_scores={"quality": 0.8},
        ).to_dict(),
    ),
    "dataset_ready": _full(
        "dataset_ready",
        DatasetReady(
            dataset_id="ds-1",
            uri="file:///d/ds-1",
            window_start=T0,
            window_end=T0 + 7 * 86_400_000,
            lag_ms=1000,
            policy_version="p@1",
            counts={"records": 10},
            first_event_time=T0,
            sealed_at=T0,
        ).to_dict(),
    ),
    "model_event": _full(
        "model_event",
        ModelEvent(
            event_id="e1",
            event_type="candidate",
            created_at=T0,
            version="v0002",
            dataset_id="ds-1",
            gate_passed=True,
            metrics={"overall": 0.8},
        ).to_dict(),
    ),
}
FINGERPRINTS = sorted({v.fingerprint for name in CODEC.names() for v in CODEC.versions(name)})
ENCODED = {name: CODEC.encode(name, rec) for name, rec in VALID.items()}


# -- values and records ---------------------------------------------------------------------------

BIG = 100_000
STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "a\udfffb",
    MARKER,
    MARKER * 2500,
    "a" * BIG,
    "é" * BIG,
    "\u202e" + MARKER,
    "\n" * 1000,
    "../../etc/passwd",
    "-",
    "0" * 300,
]
INTS = [
    0,
    -1,
    1,
    -(2**31),
    2**31 - 1,
    2**31,
    -(2**63),
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    -(10**30),
    10**1000,
]
FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 5e-324]


def _pick(options: list) -> st.SearchStrategy:
    """`sampled_from` without the options in its repr (some are 100,000 characters long)."""
    return st.integers(0, len(options) - 1).map(lambda i: options[i])


def _nested(depth: int):
    value: object = MARKER
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


WRONG = [
    None,
    True,
    False,
    [],
    {},
    [1, MARKER, None],
    {"k": MARKER},
    {"k": {"k": [1]}},
    _nested(40),
    1.5,
    "7",
    {str(i): i for i in range(2000)},
    list(range(5000)),
]
json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
values = st.one_of(
    st.sampled_from(INTS),
    st.integers(),
    st.sampled_from(FLOATS),
    st.floats(),
    _pick(STRINGS),
    st.text(max_size=40),
    _pick(WRONG),
    json_trees,
    st.lists(st.sampled_from(STRINGS[:6] + ["accepted", "copied"]), max_size=4),
    st.dictionaries(st.sampled_from(STRINGS[:6] + ["quality"]), st.sampled_from(FLOATS + [0.5, 7]), max_size=3),
)

# JSON texts no generator of objects would write: nested past any parser, numbers past any type, ...
DEEP = 100_000
JSON_TEXTS = [
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"[]",
    b"null",
    b"1",
    b'"s"',
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b'{"request_id": 1e999}',
    b"1" * 5000,
    b"",
    b" ",
    b"{",
    b'{"a": }',
    b"{" + b",".join(b'"k%d":1' % i for i in range(5000)) + b"}",
    b'{"metadata": {' + b",".join(b'"k%d":"v"' % i for i in range(5000)) + b"}}",
    b'{"request_id": "\\ud800", "dataset_id": "\\udfff", "verdict_id": "\\ud800"}',
    b"\xff\xfe\x00garbage",
    b'{"request_id": "' + b"x" * 300_000 + b'"}',
    b'{"request_id": 12345678901234567890123}',
]
HEADERS = [
    {},
    JSON,
    {"content-type": b"application/json; charset=utf-8"},
    {"content-type": b"text/plain"},
    {"content-type": b""},
    {"flywheel-tick": b"1767225600000"},
    {"content-type": b"application/json", "x-odd": b"\xff"},
]


@dataclass(frozen=True)
class Raw:
    value: bytes
    headers: dict
    kind: str  # the strategy that made it, for the report


@st.composite
def mutated(draw, name: str) -> Raw:
    """A valid event with one to three fields set to extreme or wrong values, dropped, or added."""
    rec = dict(VALID[name])
    fields = sorted(rec)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("set", "set", "set", "drop", "add")))
        if op == "drop":
            rec.pop(draw(st.sampled_from(fields)), None)
        elif op == "add":
            rec["unknown"] = draw(values)
        else:
            rec[draw(st.sampled_from(fields))] = draw(values)
    if not draw(st.booleans()):
        try:
            return Raw(CODEC.encode(name, rec), draw(st.sampled_from(HEADERS[:1] * 5 + HEADERS)), "mutated-avro")
        except Exception:
            pass  # does not fit Avro: send it as JSON, as a producer without the schema would
    plain = {
        k: v for k, v in rec.items() if not isinstance(v, bytes)
    }  # JSON has no bytes: such fields take their defaults
    text = json.dumps(plain, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return Raw(text.encode("utf-8", "surrogatepass"), draw(st.sampled_from([JSON] * 5 + HEADERS)), "mutated-json")


@st.composite
def damaged(draw, name: str) -> Raw:
    """A valid encoding cut short, with bytes flipped, or with bytes after its end."""
    data = bytearray(ENCODED[name])
    how = draw(st.sampled_from(("truncate", "flip", "extend")))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(2 if draw(st.booleans()) else 10, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
    else:
        data += draw(st.binary(min_size=1, max_size=20))
    return Raw(bytes(data), draw(st.sampled_from(HEADERS)), f"damaged-{how}")


def records(name: str) -> st.SearchStrategy[Raw]:
    others = [n for n in ENCODED if n != name]
    return st.one_of(
        st.builds(lambda b, h: Raw(b, h, "random-bytes"), st.binary(max_size=600), st.sampled_from(HEADERS)),
        st.builds(
            lambda fp, b, h: Raw(MAGIC + fp + b, h, "marker+fingerprint+garbage"),
            st.sampled_from(FINGERPRINTS),
            st.binary(max_size=300),
            st.sampled_from(HEADERS),
        ),
        damaged(name),
        st.builds(lambda n, h: Raw(ENCODED[n], h, "another-event"), st.sampled_from(others), st.sampled_from(HEADERS)),
        st.builds(lambda b, h: Raw(b, h, "json-text"), _pick(JSON_TEXTS), st.sampled_from([JSON, JSON, {}])),
        st.builds(lambda t: Raw(t.encode("utf-8", "surrogatepass"), JSON, "json-random-text"), st.text(max_size=200)),
        mutated(name),
        mutated(name),
        mutated(name),
        st.builds(lambda h: Raw(ENCODED[name], h, "valid"), st.sampled_from(HEADERS[:1] + HEADERS[3:4])),
    )


def source(raw: Raw, topic: str = "t.in", partition: int = 3, offset: int = 42) -> Source:
    return Source(topic, partition, offset, b"key-1", raw.value, dict(raw.headers))


def dead_letters(consumer: str) -> DeadLetters:
    return DeadLetters(consumer, ConsumerMetrics())


def assert_good_dead_letter(dl: DeadLetter, src: Source, *, on_topic: bool = True) -> None:
    assert isinstance(dl.reason, str) and dl.reason and len(dl.reason) <= 40, dl.reason
    assert MARKER not in dl.detail and "jane.doe" not in dl.detail and "536-22" not in dl.detail, dl.detail
    assert len(dl.detail) <= 500
    assert dl.value == src.value  # the original bytes, untouched
    if on_topic:
        assert (dl.source_topic, dl.source_partition, dl.source_offset, dl.key) == (
            src.topic,
            src.partition,
            src.offset,
            src.key,
        )
        assert dl.headers == src.headers
    back = CODEC.decode("deadletter", CODEC.encode("deadletter", dl.to_dict()))
    assert back["value"] == src.value and back["reason"] == dl.reason


@pytest.fixture(scope="module", autouse=True)
def report(request):
    yield
    total = sum(RAN.values())
    lines = [f"fuzzed consumers: {total} cases"]
    for name, n in sorted(RAN.items()):
        split = ", ".join(
            f"{what} {OUTCOMES[(name, what)]}" for what in ("used", "dead letter", "skipped") if OUTCOMES[(name, what)]
        )
        lines.append(f"  {name}: {n} ({split})")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


# -- the gate -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate():
    """The default policy's gate with its real models (PII patterns, toxicity, duplicates in memory)."""
    from streams.gate.pipeline import build_gate
    from flywheel.policy import GatePolicy

    return build_gate(GatePolicy.from_dict({}))


@settings(max_examples=1000, **SETTINGS)
@given(raw=records("candidate"))
def test_gate_per_record_path_never_raises(gate, raw):
    from streams.gate.agent import gate_record

    RAN["gate"] += 1
    src = source(raw, "t.candidates")
    out = gate_record(gate, CODEC, src, dead_letters("gate"))
    OUTCOMES[("gate", "dead letter" if isinstance(out, DeadLetter) else "used")] += 1
    if isinstance(out, DeadLetter):
        assert_good_dead_letter(out, src)
    else:
        passed, value = out
        decided = CODEC.decode("candidate", value)
        assert passed == (decided["reasons"] == []) and decided["policy_version"] == gate.stamp


def test_a_batch_with_a_record_that_breaks_the_pipeline_fails_that_record_alone(gate):
    """Something outside a stage raising on one candidate's content: the batch is decided one by
    one, and only that candidate fails (a stage's own failure is filter_error, the pipeline's rule)."""
    from streams.gate.agent import decide

    good = [
        Source("t", 0, i, None, CODEC.encode("candidate", {**VALID["candidate"], "request_id": f"ok-{i}"}))
        for i in range(3)
    ]
    poison = Source("t", 0, 9, None, CODEC.encode("candidate", {**VALID["candidate"], "request_id": "poison"}))
    real = gate.decide

    def fragile(candidates):
        if any(c.request_id == "poison" for c in candidates):
            raise ZeroDivisionError("a bug only this content reaches")
        return real(candidates)

    gate.decide = fragile
    try:
        decided, failed = decide(gate, CODEC, good[:2] + [poison] + good[2:])
    finally:
        del gate.decide  # the method again
    assert [s.offset for _, s in decided] == [0, 1, 2] and [(s.offset, type(e).__name__) for s, e in failed] == [
        (9, "ZeroDivisionError")
    ]


def test_infrastructure_errors_are_not_blamed_on_a_record():
    import redis

    def down(items):
        raise redis.exceptions.ConnectionError("Redis away")

    with pytest.raises(redis.exceptions.ConnectionError):
        isolating([1, 2, 3], down)
    with pytest.raises(OSError):
        isolating([1], lambda items: open("/nonexistent/dir/file"))

    def picky(items):
        if 2 in items:
            raise redis.exceptions.DataError("an argument redis-py refuses: the record's doing")
        return len(items)

    done, failed = isolating([1, 2, 3], picky)
    assert done == [1, 1] and [item for item, _ in failed] == [2]


# -- the review sampler --------------------------------------------------------------------------------


@settings(max_examples=1000, **SETTINGS)
@given(raw=records("candidate"), gate_passed=st.booleans())
def test_review_sampler_per_record_path_never_raises(raw, gate_passed):
    from flywheel.policy import GatePolicy
    from streams.review.agent import review_record
    from streams.review.sampler import ReviewSampler, SampleDecision

    RAN["review"] += 1
    sampler = _SAMPLER.setdefault("s", ReviewSampler(GatePolicy().review, seed="fuzz"))
    src = source(raw, "t.candidates.passed")
    out = review_record(sampler, CODEC, src, gate_passed, dead_letters("review"))
    OUTCOMES[("review", "dead letter" if isinstance(out, DeadLetter) else "used")] += 1
    if isinstance(out, DeadLetter):
        assert_good_dead_letter(out, src)
    else:
        assert isinstance(out, SampleDecision) and 0.0 <= out.probability <= 1.0


_SAMPLER: dict = {}


# -- the verdict relay ---------------------------------------------------------------------------------


@st.composite
def outbox_fields(draw) -> tuple[dict, str]:
    """An outbox entry's stream fields, as Redis gives them back (bytes), valid or not."""
    how = draw(st.sampled_from(("json", "json", "json", "bytes", "missing", "other-key")))
    if how == "bytes":
        return {b"verdict": draw(st.binary(max_size=300))}, how
    if how == "missing":
        return {}, how
    rec = {k: v for k, v in VALID["verdict"].items() if not isinstance(v, bytes)}
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            rec[draw(st.sampled_from(sorted(rec)))] = draw(values)
        else:
            rec.pop(draw(st.sampled_from(sorted(rec))), None)
    top = draw(st.sampled_from(("object", "object", "object", "list", "deep")))
    if top == "list":
        text = json.dumps([rec], allow_nan=True)
    elif top == "deep":
        text = "[" * DEEP + "]" * DEEP
    else:
        text = json.dumps(rec, allow_nan=True, ensure_ascii=draw(st.booleans()))
    key = b"verdict" if how == "json" else b"verdikt"
    return {key: text.encode("utf-8", "surrogatepass")}, how


@settings(max_examples=1500, **SETTINGS)
@given(entry=outbox_fields())
def test_relay_per_record_path_never_raises(entry):
    from streams.review.relay import relay_record

    RAN["relay"] += 1
    fields, _how = entry
    out = relay_record(CODEC, "t.review.verdicts", b"1767225600000-0", fields, dead_letters("relay"))
    OUTCOMES[("relay", "dead letter" if isinstance(out, DeadLetter) else "used")] += 1
    if isinstance(out, DeadLetter):
        raw = fields.get(b"verdict", b"")
        assert_good_dead_letter(out, Source("t.review.verdicts", -1, -1, None, raw), on_topic=False)
        assert (out.source_topic, out.source_partition, out.source_offset) == ("t.review.verdicts", -1, -1)
        assert "1767225600000-0" in out.detail
    else:
        verdict, key, value = out
        assert (
            CODEC.decode("verdict", value)["request_id"] == verdict.request_id and key == verdict.request_id.encode()
        )


# -- the rollout ------------------------------------------------------------------------------------------


@settings(max_examples=1200, **SETTINGS)
@given(raw=records("candidate"))
def test_rollout_candidate_path_never_raises(raw):
    from streams.rollout.agent import read_candidates

    RAN["rollout-candidates"] += 1
    src = source(raw, "t.candidates")
    dead = dead_letters("rollout")
    counted, letters = read_candidates(CODEC, [src], dead)
    assert len(counted) + len(letters) <= 1
    OUTCOMES[("rollout-candidates", "used" if counted else "dead letter" if letters else "skipped")] += 1
    for dl in letters:
        assert_good_dead_letter(dl, src)


@settings(max_examples=1200, **SETTINGS)
@given(raw=records("model_event"))
def test_rollout_models_path_never_raises(raw):
    from streams.rollout.agent import read_model_event

    RAN["rollout-models"] += 1
    src = source(raw, "t.models")
    try:
        event = read_model_event(CODEC, src)
    except Exception as exc:  # what the runner does with it
        OUTCOMES[("rollout-models", "dead letter")] += 1
        assert_good_dead_letter(dead_letters("rollout").letter(src, exc), src)
    else:
        OUTCOMES[("rollout-models", "used")] += 1
        assert isinstance(event.version, str) and len(event.version) <= 256


def test_an_uncountable_candidate_is_a_dead_letter_of_the_rollout_and_the_rest_are_counted():
    from streams.rollout.agent import read_candidates

    class Odd(float):  # a value no decoder gives today, standing in for tomorrow's
        def __ge__(self, other):
            raise OverflowError("cannot count it")

    good = Source("t", 0, 1, None, ENCODED["candidate"])
    odd = Source("t", 0, 2, None, ENCODED["candidate"])
    import streams.rollout.agent as agent

    real = agent.read_candidate
    agent.read_candidate = lambda codec, src: (
        TrainingCandidate.from_dict({**VALID["candidate"], "latency_ms": Odd(1.0)}) if src is odd else real(codec, src)
    )
    try:
        counted, letters = read_candidates(CODEC, [good, odd], dead_letters("rollout"))
    finally:
        agent.read_candidate = real
    assert [s.offset for _, s in counted] == [1]
    assert [(d.source_offset, d.reason, d.detail) for d in letters] == [(2, "unprocessable", "rollout: OverflowError")]


# -- the guards -----------------------------------------------------------------------------------------


@settings(max_examples=1200, **SETTINGS)
@given(raw=records("candidate"))
def test_guards_per_record_path_never_raises(raw):
    from streams.guards.agent import MAX_TRACKED, guard_record
    from streams.guards.counts import Cap, candidate_fields

    RAN["guards"] += 1
    caps = _CAPS.setdefault("c", (Cap(MAX_TRACKED), Cap(MAX_TRACKED)))
    src = source(raw, "t.candidates")
    out = guard_record(CODEC, src, *caps, dead_letters("guards"))
    OUTCOMES[("guards", "dead letter" if isinstance(out, DeadLetter) else "skipped" if out is None else "used")] += 1
    if isinstance(out, DeadLetter):
        assert_good_dead_letter(out, src)
    elif out is not None:
        c, _ = out
        assert candidate_fields(c, *caps)["requests"] == 1


_CAPS: dict = {}


# -- the trainer ---------------------------------------------------------------------------------------


class _Message:
    """A confluent-kafka message, as the trainer's consumer gives it."""

    def __init__(self, src: Source):
        self.src = src

    def topic(self):
        return self.src.topic

    def partition(self):
        return self.src.partition

    def offset(self):
        return self.src.offset

    def key(self):
        return self.src.key

    def value(self):
        return self.src.value

    def headers(self):
        return list(self.src.headers.items()) or None

    def timestamp(self):
        return (1, T0)


class _Out:
    def __init__(self):
        self.sent: list = []

    def send(self, topic, key, value):
        self.sent.append((topic, key, value))

    def announce(self, event):
        self.sent.append(("models", event.version.encode(), CODEC.encode("model_event", event.to_dict())))


class _Registry:
    def dataset_outcome(self, dataset_id):
        return None

    def record_outcome(self, *args, **kwargs):
        pass

    def mark_announced(self, dataset_id):
        pass


class _Store:
    def exists(self, dataset_id):
        return not dataset_id.startswith("missing")


class _Cycle:
    def run(self, store, dataset_id, first_event_time=0):
        from trainer.cycle import CycleResult

        return CycleResult(
            "refused",
            ModelEvent(
                event_id="e",
                event_type="refused",
                created_at=T0,
                dataset_id=dataset_id,
                reasons=["no golden set"],
                first_event_time=first_event_time,
            ),
        )


def _trainer():
    from flywheel.settings import Settings
    from trainer.service import TrainerService

    svc = TrainerService.__new__(TrainerService)  # no consumer, no producer: the per-record path only
    svc.settings, svc.codec, svc.metrics = Settings(topic_deadletter="t.deadletter"), CODEC, None
    svc.registry, svc.store, svc.cycle, svc.out = _Registry(), _Store(), _Cycle(), _Out()
    svc.dead, svc._failures = dead_letters("trainer"), {}
    return svc


@settings(max_examples=1200, **SETTINGS)
@given(raw=records("dataset_ready"))
def test_trainer_per_record_path_never_raises(raw):
    RAN["trainer"] += 1
    svc = _trainer()
    src = source(raw, "t.datasets.ready")
    outcome = svc.handle(_Message(src))
    OUTCOMES[("trainer", "dead letter" if outcome == "dead_letter" else "used")] += 1
    if outcome == "dead_letter":
        [(topic, key, value)] = svc.out.sent
        dl = DeadLetter.from_dict(CODEC.decode("deadletter", value))
        assert topic == "t.deadletter" and key == src.key
        assert_good_dead_letter(dl, src)
    else:
        assert outcome == "refused" and [t for t, _, _ in svc.out.sent] == ["models"]


def test_a_cycle_that_keeps_failing_on_one_event_becomes_a_dead_letter_infrastructure_never_does():
    import redis

    from trainer.service import CYCLE_ATTEMPTS

    svc = _trainer()
    msg = _Message(Source("t.datasets.ready", 0, 7, b"ds-1", ENCODED["dataset_ready"]))

    def broken(store, dataset_id, first_event_time=0):
        raise KeyError("prompt")  # a dataset whose records lack a field, say

    svc.cycle.run = broken
    for _ in range(CYCLE_ATTEMPTS - 1):
        with pytest.raises(KeyError):
            svc.handle(msg)  # retried: the offset is not committed
    assert svc.handle(msg) == "dead_letter"
    dl = CODEC.decode("deadletter", svc.out.sent[-1][2])
    assert dl["reason"] == "cycle_failed" and dl["detail"] == "trainer cycle: KeyError" and dl["source_offset"] == 7

    def down(store, dataset_id, first_event_time=0):
        raise redis.exceptions.ConnectionError("Redis away")

    svc.cycle.run = down
    for _ in range(CYCLE_ATTEMPTS + 2):
        with pytest.raises(redis.exceptions.ConnectionError):
            svc.handle(msg)

    missing = _Message(
        Source(
            "t.datasets.ready",
            0,
            8,
            b"k",
            CODEC.encode("dataset_ready", {**VALID["dataset_ready"], "dataset_id": "missing-1"}),
        )
    )
    assert svc.handle(missing) == "dead_letter"
    assert CODEC.decode("deadletter", svc.out.sent[-1][2])["reason"] == "unknown_dataset"
