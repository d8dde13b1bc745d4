"""Event time no record can hijack, and the repair of a clock that was hijacked, on the real embedded
broker and Redis: a far-future candidate is a dead letter and moves no window clock; a builder fed
malformed candidates, erasures and verdicts keeps sealing; `flywheel clocks show` finds a builder
clock poisoned the way builders before the bound let happen, and `reset` repairs it so the next
window seals normally with every record it should hold; the same for the join's changelog state."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.cli import main
from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import DAY_MS
from flywheel.topics import create_topics
from schemas.codec import TICK_HEADER, Codec
from schemas.records import ReviewVerdict
from streams.datasets.service import lease_key, state_key
from flywheel.datastore import DatasetStore
from streams.datasets.windows import WindowClock
from flywheel.policy import GatePolicy
from streams.join.state import JoinState, encode_state
from streams.metrics import DatasetMetrics
from tests.integration.helpers import close_after_test, forget_redis, metric_value, read_all
from tests.integration.test_datasets import T0, WEEK, candidate, run_until, service

pytestmark = pytest.mark.integration

YEAR = 365 * DAY_MS


@pytest.fixture
def ds_settings(settings, tmp_path):
    s = settings.replace(dataset_store=str(tmp_path / "store"), idle_partition_ms=500, seal_workers=1)
    create_topics(s)
    yield s
    forget_redis(s)


def producer(s) -> Producer:
    return Producer(
        {**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url}
    )


def send(s, records) -> None:
    """(topic, partition, key, value, headers) each; acknowledged."""
    p = producer(s)
    for topic, partition, key, value, headers in records:
        p.produce(topic, key=key, value=value, partition=partition, headers=headers)
    assert p.flush(30) == 0


def enc(c) -> bytes:
    return Codec().encode("candidate", c.to_dict())


def ends(s, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": s.broker_url, "group.id": "peek"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        c.close()


def caught_up(svc, s):
    """A predicate: the builder has read the gate's outputs to their ends as of now."""
    want = {f"{t}/{p}": end for t in (s.topic_passed, s.topic_rejected) for p, end in ends(s, t).items()}
    return lambda: svc.clock is not None and all(svc.clock.position(src) >= end for src, end in want.items())


def step_until(svc, predicate, timeout: float = 30.0) -> list:
    sealed, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        sealed += svc.step(0.2)
        if predicate():
            return sealed
    raise AssertionError("timed out")


def dead_letters(s) -> list[dict]:
    return (
        [d for _, _, d in read_all(s, s.topic_deadletter, "deadletter")]
        if sum(ends(s, s.topic_deadletter).values())
        else []
    )


def test_a_far_future_candidate_is_a_dead_letter_and_moves_no_window_clock(ds_settings):
    s = ds_settings
    now = int(time.time() * 1000)
    far = candidate(999, now + YEAR)
    send(
        s,
        [
            (s.topic_passed, 0, c.request_id.encode(), enc(c), None)
            for c in [candidate(1, T0 + DAY_MS), far, candidate(2, T0 + 2 * DAY_MS)]
        ],
    )
    metrics = DatasetMetrics()
    svc = close_after_test(_service(s, metrics=metrics))
    step_until(svc, caught_up(svc, s))
    source = f"{s.topic_passed}/0"
    assert svc.clock.high(source) == T0 + 2 * DAY_MS and svc.clock.position(source) == 3
    assert svc.clock.pending() == [T0 // WEEK]  # no window opened a year ahead
    assert svc.clock.span(T0 // WEEK).members == 2
    dead = dead_letters(s)
    assert [(d["reason"], d["source_topic"], d["source_partition"], d["source_offset"]) for d in dead] == [
        ("future_event", s.topic_passed, 0, 1)
    ]
    assert dead[0]["value"] == enc(far) and dead[0]["key"] == far.request_id.encode()
    assert "ahead of the wall clock" in dead[0]["detail"]
    assert (
        metric_value(_text(metrics), "flywheel_datasets_deadletters_total", input="passed", reason="future_event") == 1
    )
    # the saved state says the same: a restart does not read it again
    saved = json.loads(redis.Redis.from_url(s.redis_url).get(state_key(s)))
    assert WindowClock.from_json(saved["clock"]).high(source) == T0 + 2 * DAY_MS


def _service(s, policy=None, metrics=None):
    from streams.datasets.service import DatasetService

    return DatasetService(
        s, policy or GatePolicy(), DatasetStore(s.datasets_url), redis.Redis.from_url(s.redis_url), metrics
    )


def _text(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_a_builder_fed_malformed_candidates_erasures_and_verdicts_keeps_sealing(ds_settings):
    s = ds_settings
    codec = Codec()
    good = [candidate(i, T0 + i * 3_600_000) for i in range(30)]
    valid = enc(good[0])
    broken_tail = enc(candidate(500, T0 + 5 * 3_600_000))[
        :-6
    ]  # its event time reads, its body does not: found at the seal
    garbage = [
        (s.topic_passed, 0, b"k1", b"\x00not a candidate", None),
        (
            s.topic_passed,
            1,
            b"k2",
            b'{"request_id": "x", "timestamp": 1e999}',
            [("content-type", b"application/json")],
        ),
        (s.topic_passed, 2, b"k3", b"[" * 50_000 + b"]" * 50_000, [("content-type", b"application/json")]),
        (s.topic_passed, 3, None, None, None),  # a tombstone
        (
            s.topic_passed,
            0,
            None,
            b"",
            [(TICK_HEADER, str(T0 + 30 * DAY_MS).encode())],
        ),  # a tick would seal W0 at once
        (s.topic_rejected, 1, b"k4", valid[:20], None),
        (s.topic_passed, 2, b"k5", broken_tail, None),
        (s.topic_erasure, 0, b"u", b"\xc3\x01" + b"\x00" * 40, None),
        (s.topic_erasure, 0, b"u", codec.encode("erasure", {"user_id": "  ", "requested_at": 1, "reason": ""}), None),
        (s.topic_verdicts, 0, b"r", b"garbage verdict", None),
        (s.topic_verdicts, 0, b"r", None, [(TICK_HEADER, b"12")]),
    ]
    p = producer(s)
    for c in good:
        p.produce(s.topic_passed, key=c.request_id.encode(), value=enc(c))
    for topic, partition, key, value, headers in garbage:
        p.produce(topic, key=key, value=value, partition=partition, headers=headers)
    gold = [
        ReviewVerdict(f"{c.request_id}:alice", c.request_id, "alice", 4, 4, 5, True, T0, c.timestamp, True)
        for c in good
    ]
    for v in gold:
        p.produce(s.topic_verdicts, key=v.request_id.encode(), value=codec.encode("verdict", v.to_dict()))
    assert p.flush(30) == 0
    policy = GatePolicy()
    policy = dataclasses.replace(policy, review=dataclasses.replace(policy.review, required=True))
    metrics = DatasetMetrics()
    svc = close_after_test(_service(s, policy, metrics))
    step_until(svc, caught_up(svc, s))
    assert svc.clock.ready() == []  # the tick moved nothing
    # a due record on every partition: the window seals, with every good candidate and nothing else
    send(
        s,
        [
            (s.topic_passed, part, f"due-{part}".encode(), enc(candidate(900 + part, T0 + 22 * DAY_MS)), None)
            for part in range(s.partitions)
        ],
    )
    first = run_until(svc, lambda r: len(r) >= 1)[0]
    m = first.manifest
    assert m["counts"]["records"] == len(good) and m["dropped"]["invalid.undecodable"] == 1
    dead = dead_letters(s)
    by_reason = sorted((d["source_topic"].rsplit(".", 1)[-1], d["reason"]) for d in dead)
    assert by_reason == sorted(
        [
            ("passed", "undecodable"),
            ("passed", "not_finite"),
            ("passed", "too_deep"),
            ("passed", "undecodable"),
            ("passed", "unexpected_tick"),
            ("rejected", "undecodable"),
            ("passed", "undecodable"),  # the broken tail, at the seal
            ("erasure", "unknown_fingerprint"),
            ("erasure", "invalid_event"),
            ("verdicts", "undecodable"),
            ("verdicts", "unexpected_tick"),
        ]
    )
    tail = [d for d in dead if d["source_offset"] >= 0 and d["value"] == broken_tail]
    assert len(tail) == 1 and tail[0]["source_partition"] == 2
    assert metric_value(_text(metrics), "flywheel_datasets_deadletters_total") == len(dead)
    # the next window seals too, and the bad verdicts (read again by that seal) are not dead-lettered twice
    send(s, [(s.topic_passed, 0, b"w1", enc(candidate(960, T0 + WEEK + DAY_MS)), None)])
    send(
        s,
        [
            (s.topic_passed, part, f"next-{part}".encode(), enc(candidate(950 + part, T0 + 29 * DAY_MS)), None)
            for part in range(s.partitions)
        ],
    )
    run_until(svc, lambda r: len(r) >= 1)
    assert len(dead_letters(s)) == len(dead)


def test_clocks_show_finds_a_poisoned_builder_and_reset_repairs_it(ds_settings, monkeypatch, capsys):
    # the poison, as builders before the event-time bound took it: the bound off (-1) is their behaviour
    old = ds_settings.replace(max_event_ahead_ms=-1, idle_partition_ms=600_000)
    now = int(time.time() * 1000)
    w0 = [candidate(i, T0 + i * 3_600_000) for i in range(12)]  # window W0 on partition 0 ...
    after = [
        candidate(100 + i, T0 + 3 * DAY_MS + i * 3_600_000) for i in range(5)
    ]  # ... and more of it after the poison
    far = candidate(999, now + YEAR)
    others = [candidate(200 + p, T0 + DAY_MS) for p in range(1, old.partitions)]
    send(
        old,
        [(old.topic_passed, 0, c.request_id.encode(), enc(c), None) for c in w0 + [far] + after]
        + [(old.topic_passed, p, c.request_id.encode(), enc(c), None) for p, c in enumerate(others, start=1)],
    )
    svc = _service(old)
    step_until(svc, caught_up(svc, old))
    source = f"{old.topic_passed}/0"
    assert svc.clock.high(source) == far.timestamp
    assert svc.clock.late_counts.get(T0 // WEEK) == len(after)  # the poison made them late
    svc.close()

    for k, v in ds_settings.to_env().items():
        monkeypatch.setenv(k, v)

    def cli(*argv) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = cli("clocks", "show", "--role", "datasets", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    row = next(r for r in rows if r.get("source") == source)
    assert code == 0 and row["suspect"] and row["high_ms"] == far.timestamp and row["ahead_s"] > 300 * 86_400
    assert not next(r for r in rows if r.get("source") == f"{old.topic_passed}/1")["suspect"]
    assert rows[-1]["suspect"] and rows[-1]["builder_running"] is False
    code, out, _ = cli("clocks", "show", "--role", "datasets")
    assert code == 0 and "!" in out and "dataset builder" in out

    to = T0 + 3 * DAY_MS + 4 * 3_600_000  # the last good event time on partition 0
    before = redis.Redis.from_url(ds_settings.redis_url).get(state_key(ds_settings))
    code, out, err = cli("clocks", "reset", "--role", "datasets", "--partition", "0", "--to", str(to))
    assert code == 2 and "--yes" in err and len(err.strip().splitlines()) == 1
    assert "goes back from" in out and "open again" in out and "dropped" in out
    assert redis.Redis.from_url(ds_settings.redis_url).get(state_key(ds_settings)) == before  # nothing changed

    # while a builder runs (holds its lease) the reset refuses
    r = redis.Redis.from_url(ds_settings.redis_url)
    r.set(lease_key(ds_settings), b'{"pid": 1}', px=5000)
    code, _, err = cli("clocks", "reset", "--role", "datasets", "--partition", "0", "--to", str(to), "--yes")
    assert code == 2 and "running" in err
    r.delete(lease_key(ds_settings))

    code, out, _ = cli("clocks", "reset", "--role", "datasets", "--partition", "0", "--to", str(to), "--yes")
    assert code == 0 and out.startswith("reset:")
    assert r.get(lease_key(ds_settings)) is None  # let go
    code, out, _ = cli("clocks", "show", "--role", "datasets", "--json")
    assert not any(json.loads(line)["suspect"] for line in out.splitlines())

    # the builder, with the bound on, goes on: the next window seals normally, with the records
    # the poison had made late, and no window a year ahead is left waiting
    svc = service(ds_settings)
    step_until(svc, caught_up(svc, ds_settings))
    assert svc.clock.high(source) == to and svc.clock.pending() == [T0 // WEEK]
    send(
        ds_settings,
        [
            (ds_settings.topic_passed, p, f"due-{p}".encode(), enc(candidate(900 + p, T0 + 22 * DAY_MS)), None)
            for p in range(ds_settings.partitions)
        ],
    )
    sealed = run_until(svc, lambda got: len(got) >= 1)[0]
    assert sealed.manifest["window"]["start_ms"] == T0
    assert sealed.manifest["counts"]["records"] == len(w0) + len(after) + len(others)
    assert sealed.from_log >= 1  # partition 0's reopened span was read from the log
    assert sealed.manifest["window"]["decisions"] == len(w0) + len(others)  # counted members, as the clock saw them


def test_clocks_show_and_reset_the_joins_state(ds_settings, monkeypatch, capsys):
    from streams.join.service import join_changelog

    s = ds_settings
    now = int(time.time() * 1000)
    settle = s.settle_window_ms
    topic = join_changelog(s)
    states = {
        b"ok-1": JoinState(1, now - 60_000 + settle),
        b"poison": JoinState(1, now + YEAR + settle),
        b"ok-2": JoinState(2, now - 120_000 + settle),
    }
    send(
        s,
        [(topic, st.partition, key, encode_state(st), None) for key, st in states.items()]
        + [(topic, 3, b"junk", b"\x09not a state", None)],
    )
    for k, v in s.to_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("FLYWHEEL_METRICS_PORT", "0")

    assert main(["clocks", "show", "--role", "join", "--json"]) == 0
    rows = {r["partition"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[1]["suspect"] and rows[1]["pending"] == 2 and rows[1]["ahead_states"] == 1
    assert not rows[2]["suspect"] and rows[3]["unreadable"] == 1 and rows[0]["states"] == 0

    assert main(["clocks", "reset", "--role", "join", "--partition", "1", "--to", "now"]) == 2
    out = capsys.readouterr().out
    assert "poison" in out and "ok-1" not in out and "gone from the join" in out
    assert main(["clocks", "reset", "--role", "join", "--partition", "1", "--to", "now", "--yes"]) == 0
    capsys.readouterr()
    assert main(["clocks", "show", "--role", "join", "--json"]) == 0
    rows = {r["partition"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert not rows[1]["suspect"] and rows[1]["pending"] == 1
    # what the join restores from its changelog at start: the poisoned request is gone
    got = {}
    for key, value, _ in _changelog(s, topic):
        if value is None:
            got.pop(key, None)
        else:
            got[key] = value
    assert set(got) == {b"ok-1", b"ok-2", b"junk"}
    # with a join worker in its consumer group, the reset refuses
    from streams.join.service import join_group

    member = close_after_test(Consumer({"bootstrap.servers": s.broker_url, "group.id": join_group(s)}))
    member.subscribe([s.topic_interactions])
    deadline = time.monotonic() + 15
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    send(s, [(topic, 1, b"poison-2", encode_state(JoinState(1, now + YEAR)), None)])
    assert main(["clocks", "reset", "--role", "join", "--partition", "1", "--to", "now", "--yes"]) == 2
    assert "join is running" in capsys.readouterr().err


def _changelog(s, topic):
    c = close_after_test(
        Consumer({"bootstrap.servers": s.broker_url, "group.id": f"cl-{time.time_ns()}", "enable.partition.eof": True})
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out, eof, deadline = [], set(), time.monotonic() + 20
    while len(eof) < len(md.partitions) and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            eof.add(m.partition())
            continue
        out.append((m.key(), m.value(), m.partition()))
    return out
