"""The quality gate through the real broker and Redis: simulated traffic with personal data and
abuse goes in, one decision per candidate comes out on the passed or rejected topic, nothing
personal in clear on either, every reason and score on the record, and the metrics agree."""

from __future__ import annotations

import re

import pytest
import redis

from flywheel.sdk import FlywheelProducer
from flywheel.simulate import TrafficSpec, generate, send
from flywheel.topics import create_topics
from tests.integration.helpers import WorkerProcess, forget_redis, metric_value, read_all, wait_for

pytestmark = pytest.mark.integration

REQUESTS = 1_500
T0 = 1_767_225_600_000  # 2026-01-01


@pytest.fixture
def gate_settings(settings):
    # static membership: the embedded broker never evicts a member killed with -9 (see README)
    s = settings.replace(roles="join,gate", gate_batch_size=64, gate_batch_ms=100, worker_id="gate-0")
    yield s
    forget_redis(s)


def test_gate_decides_every_candidate_once_redacts_and_counts(gate_settings, tmp_path):
    s = gate_settings.replace(roles="join,gate,review")  # and the review sampler behind it, in one process
    create_topics(s)
    traffic = generate(TrafficSpec(REQUESTS, seed=11, start_ms=T0, pii_rate=0.10, toxic_rate=0.03), s.settle_window_ms)
    assert len(traffic.personal) > 100 and len(traffic.toxic) > 20
    worker = WorkerProcess(s, tmp_path)
    try:
        with FlywheelProducer(s) as producer:
            send(traffic, producer, settle_window_ms=s.settle_window_ms, tail_ticks=True)

        def decided():
            return len({k for k, _, _ in read_all(s, s.topic_passed, "candidate")}) + len(
                {k for k, _, _ in read_all(s, s.topic_rejected, "candidate")}
            )

        wait_for(lambda: decided() >= REQUESTS, 300, interval=3, what=f"{REQUESTS} gate decisions")
        wait_for(
            lambda: metric_value(worker.metrics(), "flywheel_review_considered_total") >= REQUESTS,
            60,
            what="every decision seen by the review sampler",
        )
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0

    passed_records = read_all(s, s.topic_passed, "candidate")
    rejected_records = read_all(s, s.topic_rejected, "candidate")
    passed = {k.decode(): v for k, _, v in passed_records}
    rejected = {k.decode(): v for k, _, v in rejected_records}
    # one decision per candidate, none lost, none in both topics
    assert set(passed) | set(rejected) == set(traffic.expected)
    assert not set(passed) & set(rejected)
    assert 0 < len(passed) < 0.6 * REQUESTS  # no keep band at the gate: it cuts at the seal

    # personal data: not in clear anywhere downstream, placeholders where it was
    blob = b"\n".join(raw for _, raw, _ in passed_records + rejected_records)
    digits_blob = re.sub(rb"\D", b"", blob)
    for rid, values in traffic.personal.items():
        record = passed.get(rid) or rejected[rid]
        assert "pii_redacted" in record["notes"] and record["redactions"], rid
        for value in values:
            assert value.encode() not in blob, f"{value!r} of {rid} leaked"
            digits = re.sub(r"\D", "", value)
            if len(digits) >= 9:
                assert digits.encode() not in digits_blob, f"digits of {value!r} leaked"

    # the review queue holds only redacted text, nothing the toxicity filter caught, about 7 % of passes
    from streams.review.items import ReviewItem
    from streams.review.queue import review_prefix

    client = redis.Redis.from_url(s.redis_url)
    queued = [ReviewItem.from_json(raw) for raw in client.hvals(f"{review_prefix(s)}:items")]
    queue_blob = b"".join(client.hvals(f"{review_prefix(s)}:items"))
    assert any(i.gate_passed for i in queued)
    assert len([i for i in queued if i.gate_passed]) <= 0.3 * len(passed)
    assert not {i.item_id for i in queued} & traffic.toxic
    for values in traffic.personal.values():
        for value in values:
            assert value.encode() not in queue_blob
    assert metric_value(metrics, "flywheel_review_sampled_total") == len(queued)

    # abuse never passes; every rejection says why, every record carries its scores and policy
    for rid in traffic.toxic:
        assert rid in rejected and "toxic" in rejected[rid]["reasons"], rid
    stamp = {r["policy_version"] for r in [*passed.values(), *rejected.values()]}
    assert len(stamp) == 1 and stamp.pop().startswith("default-1@")
    for r in rejected.values():
        assert r["reasons"] and "quality" in r["scores"] and "toxicity" in r["scores"]
    for r in passed.values():
        assert r["reasons"] == [] and r["user_action"] in ("accepted", "copied", "corrected")
        assert r["quality_score"] >= 0.6 and r["scores"]["toxicity"] <= 0.1 and r["scores"]["words"] >= 20
        assert "grounding" in r["scores"] or {"grounding_skipped", "grounding_no_claims"} & set(r["notes"])
    reasons = {code for r in rejected.values() for code in r["reasons"]}
    assert {"action_excluded", "low_quality", "toxic"} <= reasons
    assert (
        not {"duplicate_exact", "duplicate_near", "below_keep_quantile"} & reasons
    )  # decided at the seal, over a window
    assert all(len(r["dedup_keys"]) == 8 * 11 for r in passed.values())  # the near-duplicate keys the seal reads

    # the metrics agree with the topics
    assert metric_value(metrics, "flywheel_gate_decisions_total", verdict="passed") == len(passed)
    assert metric_value(metrics, "flywheel_gate_decisions_total", verdict="rejected") == len(rejected)
    toxic_total = sum(1 for r in rejected.values() if "toxic" in r["reasons"])
    assert (
        metric_value(metrics, "flywheel_gate_filter_rejections_total", filter="toxicity", reason="toxic")
        == toxic_total
    )
    assert metric_value(metrics, "flywheel_gate_filter_checked_total", filter="pii") == REQUESTS
    assert 0.2 < metric_value(metrics, "flywheel_gate_pass_ratio") < 0.6  # no keep band here: it cuts at the seal
    assert metric_value(metrics, "flywheel_gate_keep_band", edge="high") == 0.3
    assert metric_value(metrics, "flywheel_gate_keep_rate", task_type="qa") > 0
    assert metric_value(metrics, "flywheel_gate_stage_seconds_count", filter="toxicity") > 0
    # no label value holds text or ids: only names from small fixed sets
    for line in metrics.splitlines():
        if line.startswith("flywheel_gate") and "{" in line:
            assert "@" not in line and not re.search(r"\d{6,}", line.split("}")[0]), line


def test_gate_sends_undecodable_candidates_to_the_dead_letter_topic(gate_settings, tmp_path):
    s = gate_settings.replace(roles="gate")
    create_topics(s)
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": s.broker_url})
    p.produce(s.topic_candidates, key=b"bad-1", value=b"\xc3\x01not avro at all", partition=1)
    p.produce(
        s.topic_candidates, key=b"bad-2", value=b"{}", headers={"content-type": b"application/json"}, partition=2
    )
    p.flush()
    worker = WorkerProcess(s, tmp_path)
    try:
        wait_for(lambda: len(read_all(s, s.topic_deadletter, "deadletter")) >= 2, 120, what="two dead letters")
        dead = {k: v for k, _, v in read_all(s, s.topic_deadletter, "deadletter")}
        assert (
            dead[b"bad-1"]["value"] == b"\xc3\x01not avro at all"
            and dead[b"bad-1"]["source_topic"] == s.topic_candidates
        )
        assert dead[b"bad-2"]["reason"] and dead[b"bad-2"]["source_partition"] == 2
        assert worker.proc.poll() is None  # still running
    finally:
        assert worker.stop() == 0


def test_gate_killed_mid_stream_loses_nothing_and_decides_once(gate_settings, tmp_path):
    s = gate_settings
    create_topics(s)
    n = 1_200
    traffic = generate(TrafficSpec(n, seed=12, start_ms=T0), s.settle_window_ms)
    worker = WorkerProcess(s, tmp_path, "first")

    def decisions():
        return read_all(s, s.topic_passed, "candidate") + read_all(s, s.topic_rejected, "candidate")

    try:
        with FlywheelProducer(s) as producer:
            send(traffic, producer, settle_window_ms=s.settle_window_ms, tail_ticks=True)
        wait_for(lambda: len(decisions()) >= 150, 240, interval=0.5, what="the first gate decisions")
    finally:
        worker.kill9()
    worker = WorkerProcess(s, tmp_path, "second")
    try:
        wait_for(
            lambda: len({k for k, _, _ in decisions()}) >= n, 300, interval=3, what=f"{n} decisions after the restart"
        )
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0
    by_request: dict[bytes, set] = {}
    for key, _, record in decisions():
        # every decision is a function of the candidate and the policy: the same through a kill -9
        by_request.setdefault(key, set()).add(
            (tuple(record["reasons"]), record["quality_score"], record["dedup_keys"])
        )
    assert {k.decode() for k in by_request} == set(traffic.expected)
    # a copy written twice (killed between the write and its marker) carries the same decision
    assert all(len(v) == 1 for v in by_request.values())
    assert len(decisions()) - n <= 200  # at most the batches in flight when it died
    assert (
        metric_value(metrics, "flywheel_gate_decisions_total") + metric_value(metrics, "flywheel_gate_replays_total")
        > 0
    )
