"""The negative-flywheel guards through the real broker and Redis: a worker counts joined requests,
gate decisions and dead letters; when undecodable events flood in, the dead-letter monitor fires,
pauses the running A/B test (an event on the models topic says why) and holds datasets, so the
dataset builder seals nothing until a person releases the hold; people see it all from the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
import redis

from flywheel.routing import Assigner
from schemas.codec import Codec
from flywheel.policy import GatePolicy, RolloutPolicy
from streams.guards.store import read_hold
from streams.rollout.controller import RolloutController
from tests.integration.helpers import WorkerProcess, forget_redis, metric_value, read_all, settings_env, wait_for
from tests.integration.test_datasets import T0 as WINDOW_T0
from tests.integration.test_datasets import candidate as decided
from tests.integration.test_datasets import produce as produce_decisions
from tests.integration.test_datasets import run_until, service
from tests.integration.test_review_worker import produce
from tests.integration.test_rollout import joined

pytestmark = pytest.mark.integration

GUARDS = dict(
    bucket_s=1,
    recent_buckets=2,
    baseline_buckets=4,
    min_recent=40,
    min_baseline=80,
    evaluate_interval_s=0.3,
    actions={"deadletter_rate": ("hold_datasets", "pause_rollout")},
)
SLOW_ROLLOUT = dict(stage_min_requests=100_000, max_requests=1_000_000, decide_interval_s=0.5)


@pytest.fixture
def guard_settings(settings, tmp_path):
    policy = GatePolicy().with_version("guards-test", guards=GUARDS, rollout=SLOW_ROLLOUT)
    path = tmp_path / "policy.toml"
    path.write_text(policy.to_toml())
    from flywheel.topics import create_topics

    s = settings.replace(
        roles="join,rollout,guards",
        gate_batch_size=200,
        gate_batch_ms=100,
        worker_id="guards-0",
        gate_policy=str(path),
        dataset_store=str(tmp_path / "store"),
        idle_partition_ms=500,
    )
    create_topics(s)
    yield s
    forget_redis(s)


def requests(s, assigner: Assigner, n: int, rng: random.Random, garbage: int = 0) -> None:
    """`n` joined requests as the app's model versions served them, and `garbage` undecodable raw events."""
    codec, records = Codec(), []
    for _ in range(n):
        user = f"user-{rng.randrange(100_000)}"
        c = joined(assigner.assign(user), rng.random() < 0.6, user)
        records.append((s.topic_candidates, c.request_id.encode(), codec.encode("candidate", c.to_dict())))
    records += [(s.topic_interactions, f"junk-{rng.random()}".encode(), b"\x00 not an event") for _ in range(garbage)]
    produce(s, records)


def cli(s, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args], env=settings_env(s), capture_output=True, text=True, timeout=60
    )


def test_a_dead_letter_flood_pauses_the_rollout_and_holds_datasets_until_released(guard_settings, tmp_path):
    s = guard_settings
    r = redis.Redis.from_url(s.redis_url)
    r.set(f"{s.app_id}:models:production", "v0001")
    controller = RolloutController(r, s.app_id, RolloutPolicy(**SLOW_ROLLOUT))
    assert controller.start("v0002") is not None
    assigner = Assigner(r, s.app_id, refresh_s=0)
    rng = random.Random(7)
    worker = WorkerProcess(s, tmp_path)
    try:
        wait_for(lambda: "join partitions assigned" in worker.log_tail(100_000), 120, what="the worker to start")
        deadline = time.monotonic() + 8  # steady traffic: a baseline for every monitor, none fires
        while time.monotonic() < deadline:
            requests(s, assigner, 20, rng)
            time.sleep(0.2)
        body = worker.metrics()
        assert metric_value(body, "flywheel_guard_judged", monitor="deadletter_rate") == 1
        assert metric_value(body, "flywheel_guard_firing") == 0, body
        assert 0.4 < metric_value(body, "flywheel_satisfaction_acceptance_ratio", version="v0001") < 0.8
        assert read_hold(r, s.app_id, "datasets") is None and controller.state().status == "ramping"

        deadline = time.monotonic() + 30  # then a third of the traffic cannot be read
        while time.monotonic() < deadline and read_hold(r, s.app_id, "datasets") is None:
            requests(s, assigner, 20, rng, garbage=10)
            time.sleep(0.2)
        hold = read_hold(r, s.app_id, "datasets")
        assert hold is not None and hold["monitor"] == "deadletter_rate", worker.log_tail()
        wait_for(lambda: controller.state().status == "paused", 10, what="the rollout paused")
        assert controller.state().reason.startswith("guard:deadletter_rate:")
        assert assigner.assign("anyone") == "v0001" and assigner.routing().weight == 0.0
        paused = [
            e for _, _, e in read_all(s, s.topic_models, "model_event", idle=1.0) if e["event_type"] == "rollout_pause"
        ]
        assert len(paused) == 1 and paused[0]["reasons"][0].startswith("guard:deadletter_rate:")
        body = worker.metrics()
        assert metric_value(body, "flywheel_guard_firing", monitor="deadletter_rate") == 1
        assert metric_value(body, "flywheel_guard_value", monitor="deadletter_rate") > 0.05  # the bound is 0.02
        assert (
            metric_value(body, "flywheel_guard_actions_total", monitor="deadletter_rate", action="hold_datasets") == 1
        )
        assert (
            metric_value(body, "flywheel_guard_actions_total", monitor="deadletter_rate", action="pause_rollout") == 1
        )
        assert metric_value(body, "flywheel_guard_hold", target="datasets") == 1

        status = json.loads(cli(s, "guards", "status").stdout)
        dl = next(m for m in status["monitors"] if m["monitor"] == "deadletter_rate")
        assert dl["firing"] and "deadletter_rate" in status["firing_since"] and "datasets" in status["holds"]
        assert "v0001" in status["satisfaction"]

        # a person resumes the rollout while the monitor still fires: theirs to decide, the guard leaves it
        assert cli(s, "rollout", "resume").returncode == 0
        requests(s, assigner, 20, rng, garbage=10)
        time.sleep(1.5)
        assert controller.state().status == "ramping"
    finally:
        worker.stop()


def test_a_held_builder_seals_nothing_until_the_hold_is_released(guard_settings):
    s = guard_settings
    r = redis.Redis.from_url(s.redis_url)
    produce_decisions(
        s, [decided(i, WINDOW_T0 + i * 3_600_000) for i in range(50)] + [decided(100, WINDOW_T0 + 22 * 86_400_000)]
    )
    from flywheel.policy import GuardPolicy
    from streams.guards.store import GuardStore
    from streams.metrics import DatasetMetrics

    store = GuardStore(r, s.app_id, GuardPolicy())
    assert store.hold("datasets", "pass_rate_shift", "guard:pass_rate_shift:0.300>0.15")
    assert not store.hold("datasets", "deadletter_rate", "another")  # one hold at a time: the first reason stays
    svc = service(s)
    svc.metrics = DatasetMetrics()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert svc.step(0.2) == []
    assert svc.clock.ready() and svc.metrics.held._value.get() == 1.0  # due, and waiting

    released = cli(s, "guards", "release", "datasets")
    assert released.returncode == 0 and json.loads(released.stdout) == {"released": True, "target": "datasets"}
    sealed = run_until(svc, lambda got: len(got) >= 1, timeout=30)
    assert sealed[0].manifest["counts"]["records"] == 50 and svc.metrics.held._value.get() == 0.0
    wrong = cli(s, "guards", "release", "models")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "no such hold 'models'" in wrong.stderr
