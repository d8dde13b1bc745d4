"""The A/B rollout through the real broker and Redis: a candidate model event starts a test, the app
assigns users through the SDK's `Assigner`, joined requests are counted per arm, and the worker's
controller ramps and promotes the better model (and rolls a worse one back); people override from
the command line; a replayed batch is not counted twice."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import uuid

import pytest
import redis

from flywheel.routing import Assigner
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import ModelEvent, TrainingCandidate
from flywheel.policy import GatePolicy, RolloutPolicy
from streams.rollout.controller import RolloutController
from tests.integration.helpers import WorkerProcess, forget_redis, metric_value, read_all, settings_env, wait_for
from tests.integration.test_review_worker import produce

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
FAST = dict(stage_min_requests=40, min_requests=60, guard_min_requests=60, decide_interval_s=0.3, watch_requests=300)


@pytest.fixture
def ro_settings(settings, tmp_path):
    policy = GatePolicy().with_version("rollout-test", rollout=FAST)
    path = tmp_path / "policy.toml"
    path.write_text(policy.to_toml())
    s = settings.replace(
        roles="rollout", gate_batch_size=200, gate_batch_ms=100, worker_id="rollout-0", gate_policy=str(path)
    )
    create_topics(s)
    yield s
    forget_redis(s)


def joined(version: str, accepted: bool, user: str) -> TrainingCandidate:
    action = "accepted" if accepted else "regenerated"
    return TrainingCandidate(
        request_id=uuid.uuid4().hex,
        timestamp=T0,
        user_id=user,
        session_id="s",
        prompt="question",
        response="an answer of some words",
        user_action=action,
        actions=[action],
        model_version=version,
        latency_ms=100.0,
        policy_version="p@1",
    )


def traffic(s, assigner: Assigner, acceptance: dict[str, float], n: int, rng: random.Random) -> dict[str, int]:
    """`n` requests from an app that asks the SDK which model serves each user."""
    codec, records, served = Codec(), [], {}
    for _ in range(n):
        user = f"user-{rng.randrange(100_000)}"
        version = assigner.assign(user)
        served[version] = served.get(version, 0) + 1
        c = joined(version, rng.random() < acceptance[version], user)
        records.append((s.topic_candidates, c.request_id.encode(), codec.encode("candidate", c.to_dict())))
    produce(s, records)
    return served


def announce_candidate(s, version: str) -> None:
    e = ModelEvent(
        event_id=uuid.uuid4().hex,
        event_type="candidate",
        created_at=T0,
        version=version,
        base_model="v0001",
        gate_passed=True,
        reasons=["improved"],
    )
    produce(s, [(s.topic_models, version.encode(), Codec().encode("model_event", e.to_dict()))])


def rollout_events(s) -> list[dict]:
    return [
        e for _, _, e in read_all(s, s.topic_models, "model_event", idle=1.0) if e["event_type"].startswith("rollout_")
    ]


def run_until(s, worker, assigner, acceptance, final: str, rng, rounds: int = 60) -> list[dict]:
    for _ in range(rounds):
        traffic(s, assigner, acceptance, 150, rng)
        try:
            wait_for(lambda: any(e["event_type"] == final for e in rollout_events(s)), 3, what=final)
            return rollout_events(s)
        except AssertionError:
            continue
    raise AssertionError(f"no {final}: {[e['event_type'] for e in rollout_events(s)]}\n{worker.log_tail()}")


def test_a_better_candidate_is_ramped_and_promoted_and_apps_follow(ro_settings, tmp_path):
    s = ro_settings
    r = redis.Redis.from_url(s.redis_url)
    r.set(f"{s.app_id}:models:production", "v0001")
    assigner = Assigner(r, s.app_id, refresh_s=0)
    assert assigner.assign("anyone") == "v0001"  # before any rollout: the production pointer
    worker = WorkerProcess(s, tmp_path)
    rng = random.Random(5)
    try:
        announce_candidate(s, "v0002")
        wait_for(lambda: assigner.routing().candidate == "v0002", 60, what="the rollout to start")
        assert assigner.routing().weight == RolloutPolicy().ramp[0]
        sticky = {u: assigner.assign(u) for u in (f"user-{i}" for i in range(2000))}
        share = sum(v == "v0002" for v in sticky.values()) / len(sticky)
        assert 0.03 < share < 0.07  # 5 % of users
        events = run_until(s, worker, assigner, {"v0001": 0.3, "v0002": 0.8}, "rollout_promote", rng)
        types = [e["event_type"] for e in events]
        assert types[0] == "rollout_started" and "rollout_ramp" in types
        promoted = next(e for e in events if e["event_type"] == "rollout_promote")
        assert promoted["reasons"][0].startswith("won:") and promoted["version"] == "v0002"
        assert promoted["metrics"]["candidate.acceptance"] > promoted["metrics"]["incumbent.acceptance"]
        # users in the candidate arm at 5 % stayed there through the ramp; now everyone gets v0002
        assert all(assigner.assign(u) == "v0002" for u in sticky)
        assert r.get(f"{s.app_id}:models:production") == b"v0002"
        # the watch after the promotion: acceptance holds, the rollout ends promoted
        events = run_until(s, worker, assigner, {"v0001": 0.3, "v0002": 0.8}, "rollout_done", rng)
        assert RolloutController(r, s.app_id, RolloutPolicy()).state().status == "promoted"
        body = worker.metrics()
        assert metric_value(body, "flywheel_rollout_decisions_total", action="promote") == 1
        assert metric_value(body, "flywheel_rollout_acceptance_ratio", arm="candidate") > 0.6
    finally:
        worker.stop()


def test_a_worse_candidate_is_rolled_back_and_people_can_override(ro_settings, tmp_path):
    s = ro_settings
    r = redis.Redis.from_url(s.redis_url)
    r.set(f"{s.app_id}:models:production", "v0001")
    assigner = Assigner(r, s.app_id, refresh_s=0)
    worker = WorkerProcess(s, tmp_path)
    rng = random.Random(6)
    try:
        announce_candidate(s, "v0002")
        wait_for(lambda: assigner.routing().candidate == "v0002", 60, what="the rollout to start")
        events = run_until(s, worker, assigner, {"v0001": 0.7, "v0002": 0.2}, "rollout_rollback", rng)
        back = next(e for e in events if e["event_type"] == "rollout_rollback")
        assert back["reasons"][0].startswith("lost:") and not back["gate_passed"]
        assert assigner.routing().candidate is None and assigner.assign("user-1") == "v0001"
        assert r.get(f"{s.app_id}:models:production") == b"v0001"
        # the next candidate: a person pauses it, then promotes it by hand
        announce_candidate(s, "v0003")
        wait_for(lambda: assigner.routing().candidate == "v0003", 60, what="the second rollout")
        env = settings_env(s)
        cli = [sys.executable, "-m", "flywheel.cli", "rollout"]
        paused = subprocess.run(cli + ["pause"], env=env, capture_output=True, text=True, timeout=60)
        assert paused.returncode == 0, paused.stderr
        assert assigner.routing().weight == 0.0 and assigner.assign("user-1") == "v0001"
        again = subprocess.run(cli + ["pause"], env=env, capture_output=True, text=True, timeout=60)
        assert (
            again.returncode == 2
            and again.stderr.count("\n") == 1
            and "cannot pause: the rollout is paused" in again.stderr
        )
        promoted = subprocess.run(cli + ["promote"], env=env, capture_output=True, text=True, timeout=60)
        assert promoted.returncode == 0, promoted.stderr
        status = json.loads(
            subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=60).stdout
        )
        assert status["state"]["status"] == "watching" and status["production"] == "v0003"
        _, action, reason = status["state"]["history"][-1]
        assert action == "promote" and reason.startswith("manual:")
        wait_for(
            lambda: any(e["event_type"] == "rollout_promote" and e["version"] == "v0003" for e in rollout_events(s)),
            30,
            what="the manual promotion's event",
        )
    finally:
        worker.stop()


def test_a_replayed_batch_is_not_counted_twice(ro_settings):
    s = ro_settings
    r = redis.Redis.from_url(s.redis_url)
    r.set(f"{s.app_id}:models:production", "v0001")
    controller = RolloutController(r, s.app_id, RolloutPolicy(**FAST))
    assert controller.start("v0002") is not None
    batch = [
        (joined("v0001" if i % 2 else "v0002", i % 3 == 0, f"u{i}"), "flywheel.candidates/0", i) for i in range(100)
    ]
    assert controller.count(batch) == 100
    assert controller.count(batch[50:] + [(joined("v0002", True, "x"), "flywheel.candidates/0", 100)]) == 1
    state = controller.state()
    inc, cand = controller.stats(state, "ab", "v0001"), controller.stats(state, "ab", "v0002")
    assert inc.requests == 50 and cand.requests == 51 and cand.accepted == 18
    assert controller.start("v0002") is None  # a redelivered models event starts nothing
    controller.start("v0003")
    assert controller.state().pending == "v0003"  # waits for the running test to end
