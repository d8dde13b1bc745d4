"""Erasure and the trainer, against the real broker and Redis: a user erased between two cycles is in
none of the second cycle's training records (its replay reads the re-sealed version of the earlier
window); the model trained on the old version is flagged (models event, `flywheel models show`), and
with `on_erased_lineage = "retrain"` the next cycle fine-tunes the newest clean model instead."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis

from flywheel.topics import create_topics
from flywheel.policy import TrainerPolicy
from tests.integration.helpers import forget_redis, read_all
from tests.integration.test_datasets import erase, produce, run_until, service as dataset_service
from tests.integration.test_erasure import KEY, LONG, cli, due, step_until, users_of
from trainer import recipe, synthetic
from trainer.bootstrap import bootstrap
from trainer.golden import GoldenStore
from trainer.registry import Registry
from trainer.service import TrainerService, build

pytestmark = pytest.mark.integration

POLICY = TrainerPolicy(epochs=1, replay_datasets=1, max_new_tokens=8)


@pytest.fixture
def tr(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = settings.replace(
        dataset_store=str(tmp_path / "store"), idle_partition_ms=500, seal_workers=1, pseudonym_key=KEY
    )
    create_topics(s)
    yield s
    forget_redis(s)


def next_outcome(svc: TrainerService, seconds: float = 180) -> str | None:
    import time

    outcome, deadline = None, time.monotonic() + seconds
    while outcome is None and time.monotonic() < deadline:
        outcome = svc.step(1.0)
    return outcome


def test_a_user_erased_between_two_cycles_is_in_none_of_the_second_cycles_records(tr, monkeypatch):
    s = tr
    registry = Registry(s.models_dir, redis.Redis.from_url(s.redis_url), s.app_id)
    golden = GoldenStore(s.golden_path)
    golden.add(synthetic.golden(["sql"]))
    assert bootstrap(registry, golden, POLICY, 80, tasks=("sql",)).version == "v0001"

    w0, w1 = users_of(0, 40, ("alice", "bob"), 0), users_of(1, 40, ("alice", "bob"), 100)
    w0 = [
        dataclasses.replace(c, prompt=f"{c.prompt} ({c.user_id} {c.request_id})") for c in w0
    ]  # whose is whose, by prompt
    w1 = [dataclasses.replace(c, prompt=f"{c.prompt} ({c.user_id} {c.request_id})") for c in w1]
    produce(s, w0 + w1 + [due(22)])
    builder = dataset_service(s)
    d0 = run_until(builder, lambda r: len(r) >= 1, LONG)[0].dataset_id

    trained: list[list[str]] = []
    real_train = recipe.train

    def spy(model, train, *args, **kwargs):
        trained.append([e.prompt for e in train])
        return real_train(model, train, *args, **kwargs)

    monkeypatch.setattr(recipe, "train", spy)
    _, _, cycle, store, _ = build(s)
    cycle.policy = POLICY
    trainer = TrainerService(s, cycle, registry, store)
    try:
        assert next_outcome(trainer) in ("candidate", "rejected")  # cycle 1: window 0, alice's records in it
        assert any("(alice " in p for p in trained[0])

        # alice is erased between the cycles: window 0 is re-sealed without her, the old version deleted
        erase(s, "alice")
        step_until(builder, lambda: not store.exists(d0))
        (n0,) = [m["dataset_id"] for m in store.latest()]
        # its ready event trains nothing (report only): the model trained on d0 is flagged
        assert next_outcome(trainer) == "refused"
        assert registry.show("v0002")["tainted_by_erasure"] == [d0] and not registry.show("v0002")["retire"]

        # production is now the flagged model (as if rollout had promoted it), and the policy says retrain
        registry.set_production("v0002")
        cycle.policy = dataclasses.replace(POLICY, on_erased_lineage="retrain")
        produce(s, [due(29, 1)])
        d1 = run_until(builder, lambda r: len(r) >= 1, LONG)[0]
        assert d1.manifest["dropped"]["erased"] == 20  # window 1 sealed without her
        assert next_outcome(trainer) in ("candidate", "rejected")  # cycle 2: window 1, window 0 replayed
    finally:
        trainer.close()

    second = trained[-1]
    assert len(trained) == 2 and not [p for p in second if "(alice " in p]  # none of her records, replay included
    assert any(f"(bob {c.request_id})" in p for p in second for c in w0 if c.user_id == "bob")  # the replay's, from n0
    events = [e for _, _, e in read_all(s, s.topic_models, "model_event")]
    flags = [e for e in events if e["event_type"] == "erasure_flagged"]
    assert [(e["version"], e["tainted_by_erasure"]) for e in flags] == [
        ("v0002", [d0]),
        ("v0002", [d0]),
    ]  # report, then retire
    assert "report only" in flags[0]["reasons"][-1] and "to retire" in flags[1]["reasons"][-1]
    (last,) = [e for e in events if e["version"] == "v0003"]  # (the topic's partitions keep no order between versions)
    assert last["base_model"] == "v0001"  # retrained from the newest clean model
    assert last["datasets"] == sorted([d1.dataset_id, n0]) and last["tainted_by_erasure"] == []
    assert registry.show("v0003")["replayed_datasets"] == [n0]
    shown = json.loads(cli(s, "models", "show", "v0002").stdout)
    assert shown["tainted_by_erasure"] == [d0] and shown["erasure_replaced_by"] == {d0: n0} and shown["retire"]
    listed = {
        json.loads(line)["version"]: json.loads(line)["tainted_by_erasure"]
        for line in cli(s, "models", "list").stdout.splitlines()
    }
    assert listed == {"v0001": False, "v0002": True, "v0003": False}
    status = json.loads(cli(s, "erasure", "status", "alice", "--json").stdout)
    assert [(m["version"], m["trained_on"], m["production"]) for m in status["models"]] == [("v0002", [d0], True)]
