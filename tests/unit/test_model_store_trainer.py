"""The trainer on a model store at a URL (issue 26): cold start and one cycle on a `memory://` store,
the incumbent fetched from the store into the cache, the candidate uploaded, nothing of the store's
versions read from the trainer's disk. Real fsspec, the real Redis, real (tiny) training."""

from __future__ import annotations

import shutil
import uuid

import fsspec
import pytest
import redis

from flywheel.policy import TrainerPolicy
from flywheel.settings import Settings
from trainer import synthetic
from trainer.bootstrap import bootstrap
from trainer.registry import META_FILE
from trainer.service import build

pytest.importorskip("transformers")
write_dataset = pytest.importorskip("tests.integration.test_trainer").write_dataset

POLICY = TrainerPolicy(epochs=1)


def test_cold_start_and_a_cycle_on_a_url_store_upload_and_fetch_their_models(redis_url, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    url = f"memory://trainer-models-{uuid.uuid4().hex[:8]}"
    fs, root = fsspec.core.url_to_fs(url)
    app = f"store-trainer-{uuid.uuid4().hex[:8]}"
    s = Settings(data_dir=str(tmp_path / "data"), model_store=url, app_id=app, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        registry, golden, cycle, store, _ = build(s)  # the trainer's parts, as `flywheel trainer` makes them
        cycle.policy = POLICY
        assert registry.location == url and registry.root.parent == tmp_path / "data" / "model-cache"
        golden.add(synthetic.golden(["sql", "support"]))
        result = bootstrap(registry, golden, POLICY, 300, tasks=("sql", "support"))
        assert registry.production() == result.version == "v0001"
        assert fs.exists(f"{root}/v0001/{META_FILE}") and fs.exists(f"{root}/v0001/model.safetensors")
        assert not (tmp_path / "data" / "models").exists()  # the store is the URL, not the data dir

        # the trainer's cache is lost (a new machine): the cycle fetches its incumbent from the store
        cache = registry.root
        shutil.rmtree(cache / "v0001")
        write_dataset(s, "ds-store-1", synthetic.generate(200, ("sql", "support"), seed=7))
        outcome = cycle.run(store, "ds-store-1")
        version = outcome.event.version
        assert outcome.outcome in ("candidate", "rejected") and version == "v0002"
        assert (cache / "v0001" / "config.json").exists()  # fetched back for the cycle
        assert fs.exists(f"{root}/v0002/{META_FILE}") and fs.exists(f"{root}/v0002/README.md")
        assert registry.show(version)["base_model"] == "v0001"
        assert registry.show(version)["lineage"] == ["ds-store-1"]
        assert not [p for p in cache.iterdir() if p.name.startswith((".staging-", ".download-"))]
    finally:
        for key in client.scan_iter(f"{s.app_id}:*"):
            client.delete(key)
        client.close()
        if fs.exists(root):
            fs.rm(root, recursive=True)
