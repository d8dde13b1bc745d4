"""The trainer against the real broker and Redis: a dataset-ready event in, a registered model and
a `flywheel.models` event out, after a real (small) training run; contamination refusal; a crash in
the middle of training; cold start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import DatasetReady
from flywheel.datastore import DatasetStore, ShardWriter, manifest_json
from flywheel.policy import TrainerPolicy
from tests.integration.helpers import forget_redis, read_all, settings_env, wait_for
from trainer import synthetic
from trainer.bootstrap import bootstrap
from trainer.evaluate import answer
from trainer.examples import Pair
from trainer.golden import GoldenStore
from trainer.metrics import TrainerMetrics
from trainer.model import load
from trainer.registry import Registry
from trainer.service import TrainerService, build

pytestmark = pytest.mark.integration

POLICY = TrainerPolicy(epochs=3)
FIRST_EVENT = 1_767_225_600_000
WEEK_MS = 7 * 86_400_000


@pytest.fixture
def tr_settings(settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    create_topics(settings)
    yield settings
    forget_redis(settings)


def write_dataset(s, dataset_id: str, examples, pairs=(), window_start: int | None = None) -> None:
    """A sealed dataset as the builder publishes it: SFT shards, preference shards and a manifest."""
    store = DatasetStore(s.datasets_url)
    staging = store.staging(dataset_id)
    writers = {
        split: ShardWriter(
            store.fs, f"{staging}/sft", f"{split}-p000", "sft_record", 10_000, seed=f"{dataset_id}/{split}"
        )
        for split in ("train", "validation")
    }
    preference = ShardWriter(
        store.fs, f"{staging}/preference", "train-p000", "preference_record", 10_000, seed=f"{dataset_id}/preference"
    )
    for i, pair in enumerate(pairs):
        preference.add(
            {
                "request_id": f"{dataset_id}-pair-{i}",
                "prompt": pair.prompt,
                "chosen": pair.chosen,
                "rejected": pair.rejected,
                "source": "correction",
                "task_type": pair.task_type,
                "model_version": "v0001",
                "priority": 1.0,
                "priority_reasons": ["correction"],
                "split": "train",
                "event_time": FIRST_EVENT + i,
                "policy_version": "p@1",
            }
        )
    for i, ex in enumerate(examples):
        split = "validation" if i % 10 == 0 else "train"
        writers[split].add(
            {
                "request_id": f"{dataset_id}-{i}",
                "prompt": ex.prompt,
                "target": ex.target,
                "task_type": ex.task_type,
                "user_action": "accepted",
                "label": "sft_positive",
                "model_version": "v0001",
                "quality_score": 0.9,
                "difficulty": 0.1,
                "priority": 0.0,
                "priority_reasons": [],
                "split": split,
                "event_time": FIRST_EVENT + i,
                "policy_version": "p@1",
            }
        )
    shards = [{**e, "kind": "sft", "split": split, "partition": 0} for split, w in writers.items() for e in w.close()]
    shards += [{**e, "kind": "preference", "split": "train", "partition": 0} for e in preference.close()]
    with store.fs.open(f"{staging}/manifest.json", "wb") as f:
        window = (
            {} if window_start is None else {"window": {"start_ms": window_start, "end_ms": window_start + WEEK_MS}}
        )
        f.write(
            manifest_json({"dataset_id": dataset_id, "shards": shards, "counts": {"records": len(examples)}, **window})
        )
    store.publish(dataset_id)


def announce(s, dataset_id: str) -> None:
    ready = DatasetReady(
        dataset_id=dataset_id,
        uri=f"{s.datasets_url}/{dataset_id}",
        window_start=FIRST_EVENT,
        window_end=FIRST_EVENT + 7 * 86_400_000,
        lag_ms=14 * 86_400_000,
        policy_version="p@1",
        counts={"records": 1},
        first_event_time=FIRST_EVENT,
        sealed_at=int(time.time() * 1000),
    )
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    p.produce(s.topic_datasets_ready, key=dataset_id.encode(), value=Codec().encode("dataset_ready", ready.to_dict()))
    assert p.flush(30) == 0


def cold_start(s) -> Registry:
    """Golden items for all three tasks; v1 knows sql and support but has never seen qa."""
    registry = Registry(s.models_dir, redis.Redis.from_url(s.redis_url), s.app_id)
    golden = GoldenStore(s.golden_path)
    golden.add(synthetic.golden(["qa", "sql", "support"]))
    result = bootstrap(registry, golden, POLICY, 1200, tasks=("sql", "support"))
    assert registry.production() == result.version == "v0001"
    assert result.event.metrics["task.qa"] == 0.0
    return registry


def service(s, metrics=None, policy: TrainerPolicy = POLICY) -> TrainerService:
    registry, _golden, cycle, store, _ = build(s, metrics)
    cycle.policy = policy
    return TrainerService(s, cycle, registry, store, metrics)


def next_outcome(svc: TrainerService, seconds: float) -> str | None:
    """Poll until the service handles one ready event; its outcome, or None after `seconds`."""
    outcome, deadline = None, time.monotonic() + seconds
    while outcome is None and time.monotonic() < deadline:
        outcome = svc.step(1.0)
    return outcome


def models_events(s) -> list[dict]:
    return [e for _, _, e in read_all(s, s.topic_models, "model_event")]


def test_a_ready_dataset_becomes_a_registered_candidate_that_improves_where_it_should(tr_settings):
    s = tr_settings
    registry = cold_start(s)
    # traffic of every task, with qa new to the model
    write_dataset(
        s, "ds-qa-1", synthetic.generate(900, ["qa"], seed=5) + synthetic.generate(600, ["sql", "support"], seed=8)
    )
    announce(s, "ds-qa-1")
    metrics = TrainerMetrics()
    svc = service(s, metrics)
    try:
        outcome = next_outcome(svc, 300)
        assert outcome == "candidate", models_events(s)[-1]["reasons"]
        # the same dataset again (a redelivery): recorded already, not trained twice
        announce(s, "ds-qa-1")
        assert next_outcome(svc, 60) == "skipped"
    finally:
        svc.close()
    events = models_events(s)
    assert len(events) == 1
    e = events[0]
    assert (
        e["event_type"] == "candidate" and e["gate_passed"] and e["version"] == "v0002" and e["base_model"] == "v0001"
    )
    assert e["dataset_id"] == "ds-qa-1" and e["incumbent_metrics"]["task.qa"] == 0.0
    assert e["metrics"]["task.qa"] >= 0.5 and e["deltas"]["overall"] > 0  # learned the task it was given
    assert e["deltas"]["task.sql"] >= -POLICY.max_task_regression
    assert e["hyperparameters"]["epochs"] == "3" and "model.safetensors" in e["file_hashes"]
    assert e["time_to_improvement_ms"] == e["created_at"] - FIRST_EVENT
    assert e["hyperparameters"]["preference"] == "off" and e["hyperparameters"]["lora"] == "off"
    meta = registry.show("v0002")
    assert meta["status"] == "candidate" and (registry.path("v0002") / "config.json").exists()
    assert registry.production() == "v0001"  # rollout, not the trainer, moves production
    assert metrics.registry.get_sample_value("flywheel_trainer_cycles_total", {"outcome": "candidate"}) == 1
    assert metrics.registry.get_sample_value("flywheel_model_quality_delta", {"task_type": "qa"}) >= 0.5


def test_replay_joins_the_earlier_windows_datasets_so_a_task_absent_this_week_is_still_learned(tr_settings):
    s = tr_settings
    registry = cold_start(s)
    mixed = synthetic.generate(600, ["sql", "support"], seed=8)
    write_dataset(s, "ds-w0", synthetic.generate(900, ["qa"], seed=5) + mixed, window_start=FIRST_EVENT)
    write_dataset(s, "ds-w1", synthetic.generate(600, ["sql", "support"], seed=11), window_start=FIRST_EVENT + WEEK_MS)
    write_dataset(
        s, "ds-w2", synthetic.generate(300, ["sql"], seed=12), window_start=FIRST_EVENT + 2 * WEEK_MS
    )  # later: never replayed
    announce(s, "ds-w1")
    svc = service(s, policy=TrainerPolicy(epochs=3, replay_datasets=2))
    try:
        outcome = next_outcome(svc, 300)
    finally:
        svc.close()
    (e,) = models_events(s)
    assert outcome == "candidate" and e["dataset_id"] == "ds-w1", e["reasons"]
    assert e["metrics"]["task.qa"] >= 0.5  # qa is only in last week's dataset
    assert e["hyperparameters"]["replay_datasets"] == "2"
    assert registry.show(e["version"])["replayed_datasets"] == ["ds-w0"]
    assert e["examples"] == 1350 + 540  # 90 % of each is the train split


def test_preference_pairs_train_after_sft_through_lora_adapters_merged_into_the_candidate(tr_settings):
    s = tr_settings
    registry = cold_start(s)
    qa = synthetic.generate(600, ["qa"], seed=9)
    v1 = load(registry.path("v0001"), prefer_gpu=False)
    wrong = answer(v1, [e.prompt for e in qa[:150]])  # what v1 really says; the users corrected it
    pairs = [Pair(e.prompt, e.target, w, "qa") for e, w in zip(qa, wrong) if w != e.target]
    write_dataset(s, "ds-pairs", qa, pairs)
    announce(s, "ds-pairs")
    policy = TrainerPolicy(epochs=2, learning_rate=0.01, lora=True, lora_r=8, lora_alpha=16, preference="dpo")
    svc = service(s, policy=policy)
    try:
        outcome = next_outcome(svc, 300)
    finally:
        svc.close()
    assert outcome in ("candidate", "rejected")  # the gate's call; what is checked here is how it was trained
    (e,) = models_events(s)
    assert e["hyperparameters"]["lora"] == "r=8,alpha=16,dropout=0.0,targets=default"
    assert e["hyperparameters"]["preference"] == "dpo" and e["hyperparameters"]["dpo_nll_weight"] == "1.0"
    meta = registry.show(e["version"])
    assert 0 < meta["lora"]["trainable_parameters"] < meta["lora"]["parameters"] / 10
    pref = meta["preference"]
    assert pref["pairs"] == len(pairs) > 100 and pref["margin_after"] > pref["margin_before"]
    assert pref["accuracy_after"] >= pref["accuracy_before"]
    candidate = load(registry.path(e["version"]), prefer_gpu=False)  # a plain model directory: adapters merged
    assert not any("lora" in k for k in candidate.model.state_dict())
    assert meta["losses"][-1] < meta["losses"][0]
    # no claim on the golden score: the default model is trained from scratch, and adapters on attention
    # cannot teach it words whose output embeddings v1 never trained (README: LoRA is for pretrained bases)


def test_golden_prompts_in_a_dataset_are_dropped_and_too_many_refuse_it(tr_settings):
    s = tr_settings
    cold_start(s)
    golden = synthetic.golden(["qa"])
    leaked = golden[3]
    examples = synthetic.generate(60, ["qa"], seed=6)
    examples.append(
        type(examples[0])(leaked.prompt.upper(), leaked.expected, "qa")
    )  # case changed: still the same prompt
    write_dataset(s, "ds-leak", examples)
    # a dataset that is mostly the golden set: refused, not trained on
    write_dataset(
        s,
        "ds-leaky",
        synthetic.generate(4, ["qa"], seed=8) + [type(examples[0])(g.prompt, g.expected, "qa") for g in golden[:6]],
    )
    announce(s, "ds-leak")
    announce(s, "ds-leaky")
    svc = service(s)
    try:
        outcomes = [next_outcome(svc, 120), next_outcome(svc, 60)]
    finally:
        svc.close()
    assert outcomes[1] == "refused" and outcomes[0] in ("candidate", "rejected")
    # by dataset, not by read order: the models topic's events are keyed by dataset, so on more than
    # one partition the two may be read in either order
    events = {e["dataset_id"]: e for e in models_events(s)}
    assert sorted(events) == ["ds-leak", "ds-leaky"]
    trained, refused = events["ds-leak"], events["ds-leaky"]
    assert trained["metrics"]["contamination_dropped"] == 1.0  # one record, not the dataset
    assert refused["event_type"] == "refused" and not refused["gate_passed"] and refused["version"] == ""
    assert refused["reasons"][0].startswith("contaminated:") and "contamination_max_share" in refused["reasons"][0]
    assert not any(g.prompt in refused["reasons"][0] for g in golden)  # ids, never texts


def test_a_crash_in_the_middle_of_training_restarts_the_cycle(tr_settings, tmp_path):
    s = tr_settings
    cold_start(s)
    write_dataset(s, "ds-crash", synthetic.generate(1500, ["qa"], seed=7))
    announce(s, "ds-crash")
    env = {**os.environ, **settings_env(s), "FLYWHEEL_LOG_LEVEL": "INFO", "HF_HUB_OFFLINE": "1"}
    log1 = tmp_path / "first.log"
    first = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "trainer"],
        env=env,
        stdout=open(log1, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: '"training"' in log1.read_text(errors="replace"), 120, what="training to start")
        time.sleep(1.0)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # mid-training: nothing recorded, nothing committed
        first.wait(10)
    assert models_events(s) == []
    log2 = tmp_path / "second.log"
    second = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "trainer"],
        env=env,
        stdout=open(log2, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(models_events(s)) >= 1, 600, what="the restarted cycle's event")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(30)
    (e,) = models_events(s)
    assert e["dataset_id"] == "ds-crash" and e["event_type"] in ("candidate", "rejected")


def test_the_bootstrap_command_registers_v1_and_announces_it(tr_settings, tmp_path):
    s = tr_settings
    env = {**os.environ, **settings_env(s), "HF_HUB_OFFLINE": "1"}
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"prompt": "Which table holds invoices?", "target": "invoices", "task_type": "sql"}\n')
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "bootstrap",
            "--synthetic",
            "300",
            "--tasks",
            "sql,support",
            "--labels",
            str(labels),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["version"] == "v0001" and out["announced"] and out["examples"] == 301
    (e,) = models_events(s)
    assert e["event_type"] == "bootstrap" and e["version"] == "v0001" and e["gate_passed"]
    assert e["hyperparameters"]["synthetic"] == "300" and e["hyperparameters"]["labels"] == "1"
    registry = Registry(s.models_dir, redis.Redis.from_url(s.redis_url), s.app_id)
    assert registry.production() == "v0001"
    bad = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "bootstrap", "--synthetic", "10", "--tasks", "poetry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "poetry" in bad.stderr
