"""`flywheel reviewers` and `flywheel calibrate` end to end: real Redis, verdicts read from the broker,
a calibrated policy written as a new version, and its result exported by the review page's metrics."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import redis
from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import ReviewVerdict
from flywheel.policy import GatePolicy
from streams.review.accounts import Reviewers
from streams.review.queue import ReviewQueue, review_prefix
from tests.integration.helpers import forget_redis, settings_env

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
RIGHT = 0.62  # reviewers pass exactly the items whose quality is at least this


@pytest.fixture
def cli_settings(settings):
    yield settings
    forget_redis(settings)


def flywheel(settings, *argv, env_extra=None):
    env = {**settings_env(settings), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *argv], capture_output=True, text=True, timeout=120, env=env
    )


def test_review_status_prints_the_queue(cli_settings):
    from streams.review.items import ReviewItem

    s = cli_settings
    q = ReviewQueue(redis.Redis.from_url(s.redis_url), review_prefix(s))
    q.enqueue([ReviewItem(f"r{i}", {"task_type": "qa"}, True, ["random"], 0.07, 1) for i in range(3)])
    q.lease("alice")
    r = flywheel(s, "review", "--status")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert (status["depth"], status["ready"], status["leased"], status["counts"]["queued"]) == (3, 2, 1, 3)


def test_reviewers_add_list_remove(cli_settings):
    s = cli_settings
    r = flywheel(s, "reviewers", "add", "alice")
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    accounts = Reviewers(redis.Redis.from_url(s.redis_url), review_prefix(s))
    assert accounts.authenticate(token) == "alice"
    again = flywheel(s, "reviewers", "add", "alice")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "exists" in again.stderr
    bad = flywheel(s, "reviewers", "add", "no spaces")
    assert bad.returncode == 2 and "reviewer name" in bad.stderr
    listed = flywheel(s, "reviewers", "list")
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        "alice"
    ] and token not in listed.stdout
    assert flywheel(s, "reviewers", "remove", "alice").returncode == 0
    assert accounts.authenticate(token) is None


def constructed_verdicts(n: int = 400, seed: int = 3) -> list[ReviewVerdict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = round(rng.random(), 4)
        gate_passed = q >= 0.6  # the current policy's threshold
        out.append(
            ReviewVerdict(
                verdict_id=f"r{i}:alice",
                request_id=f"r{i}",
                reviewer="alice",
                accuracy=4,
                helpfulness=4,
                safety=5,
                passed=q >= RIGHT,
                reviewed_at=T0 + i,
                event_time=T0 + i,
                gate_passed=gate_passed,
                task_type=rng.choice(["qa", "sql"]),
                quality_score=q,
                gate_scores={"quality": q},
                gate_reasons=[] if gate_passed else ["low_quality"],
                sample_probability=rng.choice([0.07, 0.5, 1.0]),
                policy_version="default-1",
            )
        )
    return out


def test_calibrate_finds_the_known_threshold_and_writes_a_new_policy(cli_settings, tmp_path):
    s = cli_settings
    create_topics(s)
    codec = Codec()
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    verdicts = constructed_verdicts()
    for v in verdicts + verdicts[:20]:  # the relay may send a verdict twice: it counts once
        p.produce(s.topic_verdicts, key=v.request_id.encode(), value=codec.encode("verdict", v.to_dict()))
    assert p.flush(30) == 0

    out = tmp_path / "policy-calibrated.toml"
    r = flywheel(s, "calibrate", "--write", str(out), "--idle-timeout", "3")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["items"] == len(verdicts)
    assert report["gold"] == sum(1 for v in verdicts if v.gate_passed and v.passed)
    proposed = report["threshold"]["threshold"]
    below = max(v.quality_score for v in verdicts if v.quality_score < RIGHT)
    above = min(v.quality_score for v in verdicts if v.quality_score >= RIGHT)
    assert below < proposed <= above
    assert report["threshold"]["agreement_at_proposed"] == 1.0 > report["threshold"]["agreement_at_current"]
    assert report["overall"]["precision"] < 1.0 and report["overall"]["recall"] == 1.0  # the gate passes too much
    assert set(report["by_task_type"]) == {"qa", "sql"}

    new = GatePolicy.load(out)
    assert new.quality.threshold == proposed and new.version == "default-2"
    assert report["written"]["stamp"] == new.stamp
    assert new.with_version("default-1", quality={"threshold": 0.6}) == GatePolicy()  # nothing else changed

    # its result is a metric of the review page
    from prometheus_client import CollectorRegistry, generate_latest

    from streams.metrics import QueueCollector

    registry = CollectorRegistry()
    QueueCollector(ReviewQueue(redis.Redis.from_url(s.redis_url), review_prefix(s)), registry)
    text = generate_latest(registry).decode()
    assert f'flywheel_review_quality_threshold{{source="proposed"}} {proposed}' in text
    assert 'flywheel_review_gate_calibration_ratio{measure="recall"} 1.0' in text


def test_calibrate_with_too_few_verdicts_writes_nothing(cli_settings, tmp_path):
    s = cli_settings
    create_topics(s)
    out = tmp_path / "never.toml"
    r = flywheel(s, "calibrate", "--write", str(out), "--idle-timeout", "2")
    assert r.returncode == 1 and not out.exists()
    assert "no threshold proposed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = flywheel(s, "calibrate", "--policy", str(tmp_path / "missing.toml"))
    assert bad.returncode == 2 and "no such policy file" in bad.stderr
