"""The join through a real broker and real worker processes: exactly one correct candidate per
request, across out-of-order, duplicated and missing actions, a kill -9, and bad input."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from flywheel.sdk import FlywheelProducer
from flywheel.simulate import TrafficSpec, generate, send
from flywheel.topics import create_topics
from schemas import Codec, Interaction, UserAction

from tests.integration.helpers import WorkerProcess, end_offsets, metric_value, read_all, wait_for

pytestmark = pytest.mark.integration
MIN = 60_000


def _traffic(n: int, seed: int, settings):
    spec = TrafficSpec(
        requests=n, seed=seed, event_rate=1.0, duplicate_rate=0.05, out_of_order_rate=0.1, late_rate=0.03
    )
    return generate(spec, settings.settle_window_ms)


def _check_candidates(settings, expected: dict[str, str]):
    records = read_all(settings, settings.topic_candidates, "candidate")
    by_id: dict[str, list[bytes]] = {}
    for key, value, cand in records:
        assert key == cand["request_id"].encode()
        by_id.setdefault(cand["request_id"], []).append(value)
    assert set(by_id) == set(expected), (
        f"missing {len(set(expected) - set(by_id))}, unexpected {len(set(by_id) - set(expected))}"
    )
    wrong = {
        rid: (Codec().decode("candidate", vals[0])["user_action"], expected[rid])
        for rid, vals in by_id.items()
        if Codec().decode("candidate", vals[0])["user_action"] != expected[rid]
    }
    assert not wrong, f"{len(wrong)} wrong labels, e.g. {list(wrong.items())[:5]}"
    # a crash may re-send a candidate whose commit it did not see; the copy is byte-identical
    for rid, vals in by_id.items():
        assert len(set(vals)) == 1, f"{rid}: different candidates for one request"
    return records, by_id


def test_ten_thousand_requests_give_exactly_one_correct_candidate_each(settings, tmp_path):
    create_topics(settings)
    traffic = _traffic(10_000, seed=1, settings=settings)
    kinds = Counter(e.kind for e in traffic.events)
    assert kinds["action"] > 9_000  # duplicated and out-of-order actions are in the mix
    worker = WorkerProcess(settings, tmp_path)
    try:
        with FlywheelProducer(settings) as producer:
            send(traffic, producer, settle_window_ms=settings.settle_window_ms, tail_ticks=True)
        wait_for(lambda: end_offsets(settings, settings.topic_candidates) >= 10_000, 180, what="10,000 candidates")
        time.sleep(2)  # anything extra would show up now
        records, by_id = _check_candidates(settings, traffic.expected)
        assert len(records) == 10_000, "no duplicates on the wire without a crash"
        text = worker.metrics()
        assert metric_value(text, "flywheel_candidates_total") == 10_000
        assert metric_value(text, "flywheel_events_consumed_total", input="interaction") >= 10_000
        assert metric_value(text, "flywheel_join_duplicates_total") > 0
        assert metric_value(text, "flywheel_join_latency_seconds_count") == 10_000
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_kill_9_and_restart_lose_and_duplicate_nothing(settings, tmp_path):
    # static membership: the restarted worker takes the dead one's place in the group at once
    settings = settings.replace(worker_id="worker-0")
    create_topics(settings)
    traffic = _traffic(10_000, seed=2, settings=settings)
    half = len(traffic.events) // 2
    worker = WorkerProcess(settings, tmp_path, "first")
    with FlywheelProducer(settings) as producer:
        first = type(traffic)(events=traffic.events[:half], expected=traffic.expected)
        send(first, producer, settle_window_ms=settings.settle_window_ms, tail_ticks=False)
        wait_for(lambda: end_offsets(settings, settings.topic_candidates) > 1_000, 120, what="the first candidates")
        worker.kill9()  # mid-stream: state, offsets and outputs in flight are cut off
        rest = type(traffic)(events=traffic.events[half:], expected=traffic.expected)
        send(rest, producer, settle_window_ms=settings.settle_window_ms, tail_ticks=True)
    worker = WorkerProcess(settings, tmp_path, "second")
    try:
        wait_for(
            lambda: len({k for k, _, _ in read_all(settings, settings.topic_candidates, "candidate")}) >= 10_000,
            240,
            interval=2,
            what="10,000 distinct candidates after the restart",
        )
        time.sleep(3)
        records, by_id = _check_candidates(settings, traffic.expected)
        copies = len(records) - len(by_id)
        # the kill can only cut off the last uncommitted batch: copies are bounded by it
        assert copies <= settings.join_batch_size * settings.partitions, copies
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_malformed_events_go_to_the_dead_letter_topic_and_the_worker_keeps_going(settings, tmp_path):
    create_topics(settings)
    codec = Codec()
    t0 = 1_700_000_000_000
    p = Producer({"bootstrap.servers": settings.broker_url, "partitioner": "murmur2_random"})
    good_before = Interaction("good-1", "s", "u", t0, "m1", "p", "r").to_dict()
    bad = [
        (settings.topic_interactions, b"bad-1", b"\x00\x01 not avro", None, "undecodable"),
        (settings.topic_interactions, b"bad-2", b"\xc3\x01" + bytes(8) + b"x", None, "unknown_fingerprint"),
        (settings.topic_actions, b"bad-3", b"{oops", [("content-type", b"application/json")], "invalid_json"),
        (
            settings.topic_actions,
            b"bad-4",
            json.dumps({"request_id": "bad-4", "user_id": "u", "event_time": t0, "action": "loved"}).encode(),
            [("content-type", b"application/json")],
            "invalid_event",
        ),
        (
            settings.topic_interactions,
            b"bad-5",
            codec.encode("interaction", {**good_before, "request_id": "bad-5", "response": "x" * 300_000}),
            None,
            "oversized",
        ),
    ]
    p.produce(settings.topic_interactions, key=b"good-1", value=codec.encode("interaction", good_before))
    for topic, key, value, headers, _ in bad:
        p.produce(topic, key=key, value=value, headers=headers)
    good_after = Interaction("good-2", "s", "u", t0 + MIN, "m1", "p", "r").to_dict()
    p.produce(settings.topic_interactions, key=b"good-2", value=codec.encode("interaction", good_after))
    p.produce(
        settings.topic_actions,
        key=b"good-2",
        value=codec.encode("action", UserAction("good-2", "u", t0 + 2 * MIN, "copied").to_dict()),
    )
    p.flush()
    worker = WorkerProcess(settings, tmp_path)
    try:
        with FlywheelProducer(settings) as sdk:
            sdk.heartbeat(t0 + 120 * MIN)
        wait_for(
            lambda: (
                end_offsets(settings, settings.topic_deadletter) >= len(bad)
                and end_offsets(settings, settings.topic_candidates) >= 2
            ),
            60,
            what="dead letters and candidates",
        )
        letters = {d["key"]: d for _, _, d in read_all(settings, settings.topic_deadletter, "deadletter")}
        for topic, key, value, _, reason in bad:
            d = letters[key]
            assert (d["reason"], d["value"], d["source_topic"]) == (reason, value, topic), d["detail"]
            assert d["detail"] and d["source_offset"] >= 0
        cands = {c["request_id"]: c for _, _, c in read_all(settings, settings.topic_candidates, "candidate")}
        assert cands["good-1"]["user_action"] == "abandoned" and cands["good-2"]["user_action"] == "copied"
        assert metric_value(worker.metrics(), "flywheel_deadletters_total") == len(bad)
        assert worker.proc.poll() is None
    finally:
        assert worker.stop() == 0, worker.log_tail()


def test_two_workers_share_the_partitions_and_each_request_still_gives_one_candidate(settings, tmp_path):
    """Co-partitioning holds across workers (range assignor): interactions and actions of one
    request meet in the same process, and no state is assumed to live in one process."""
    create_topics(settings)
    traffic = _traffic(4_000, seed=3, settings=settings)
    first = WorkerProcess(settings.replace(worker_id="worker-a"), tmp_path, "a")
    second = WorkerProcess(settings.replace(worker_id="worker-b"), tmp_path, "b")
    try:
        # both in the group before traffic, each holding half of the partitions
        wait_for(
            lambda: _assigned(first) == 2 and _assigned(second) == 2,
            90,
            what="the partitions split between two workers",
        )
        with FlywheelProducer(settings) as producer:
            send(traffic, producer, settle_window_ms=settings.settle_window_ms, tail_ticks=True)
        wait_for(lambda: end_offsets(settings, settings.topic_candidates) >= 4_000, 180, what="4,000 candidates")
        time.sleep(2)
        records, _ = _check_candidates(settings, traffic.expected)
        assert len(records) == 4_000
        per_worker = [metric_value(w.metrics(), "flywheel_candidates_total") for w in (first, second)]
        assert all(n > 0 for n in per_worker) and sum(per_worker) == 4_000, per_worker
    finally:
        codes = [first.stop(), second.stop()]
        assert codes == [0, 0], first.log_tail() + second.log_tail()


def _assigned(worker: WorkerProcess) -> int:
    """Partitions in the worker's latest 'join partitions assigned' log line."""
    lines = [
        json.loads(line)
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if '"join partitions assigned"' in line
    ]
    return len(lines[-1]["partitions"]) if lines else -1


@pytest.mark.parametrize(
    "grace, second_signal, why",
    [
        (3, False, "no clean stop in 3 s"),
        (120, True, "a second signal"),
    ],
)
def test_a_stop_that_hangs_ends_after_the_grace_period_or_at_a_second_signal(
    settings, tmp_path, grace, second_signal, why
):
    create_topics(settings)
    worker = WorkerProcess(
        settings.replace(shutdown_grace_s=grace, worker_id="w"),
        tmp_path,
        argv=("-m", "tests.integration.hanging_worker"),
    )
    try:
        wait_for(lambda: _assigned(worker) == settings.partitions, 90, what="the worker to take its partitions")
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        if second_signal:
            time.sleep(1.0)
            assert worker.proc.poll() is None  # the first stop hangs: without a second signal it would wait 120 s
            worker.proc.send_signal(signal.SIGINT)
        worker.proc.wait(grace + 30 if not second_signal else 15)
        took = time.monotonic() - began
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
    log = worker.log_tail(20_000)
    assert worker.proc.returncode == 128 + (signal.SIGINT if second_signal else signal.SIGTERM), log[-2000:]
    assert '"worker leaving without a clean stop"' in log and why in log
    assert took < (5 if second_signal else grace + 10)
    if not second_signal:
        assert took >= grace - 0.5
