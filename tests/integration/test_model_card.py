"""A registered model directory opens as it is: it carries a model card (README.md: base, lineage of
dataset versions, golden scores with their intervals, the recipe), loads with
`AutoModelForCausalLM.from_pretrained`, and `flywheel models export` writes it to a directory or an
fsspec URL that loads the same way."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
import yaml

from flywheel.cli import main
from trainer import card
from trainer.model import build_default, file_hashes, save
from trainer.registry import Registry

pytestmark = pytest.mark.integration

transformers = pytest.importorskip("transformers")

META = {  # what trainer/cycle.py registers for a candidate (the models event, the recipe's summary, lineage)
    "event_type": "candidate",
    "status": "candidate",
    "dataset_id": "ds-window-3",
    "base_model": "v0001",
    "gate_passed": True,
    "reasons": ["improved_over_incumbent:+0.1030[+0.0410,+0.1650]"],
    "metrics": {
        "overall": 0.6125,
        "task.sql": 0.5,
        "task.qa": 0.7,
        "delta_low": 0.041,
        "delta_high": 0.165,
        "delta_low.task.sql": -0.02,
        "delta_high.task.sql": 0.21,
        "paired_items": 80.0,
        "confidence": 0.95,
    },
    "incumbent_metrics": {"overall": 0.5095, "task.sql": 0.41, "task.qa": 0.6},
    "deltas": {"overall": 0.103, "task.sql": 0.09},
    "hyperparameters": {"learning_rate": "0.0005", "epochs": "2", "batch_size": "8", "lora": "false"},
    "golden_version": "g0002",
    "examples": 412,
    "lineage": ["ds-window-1", "ds-window-2", "ds-window-3"],
    "datasets": ["ds-window-3"],
    "tainted_by_erasure": [],
}


def _front(text: str) -> dict:
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


@pytest.fixture
def registry(redis_url, tmp_path):
    app = f"card-test-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_url)
    yield Registry(str(tmp_path / "data" / "models"), r, app), app
    for key in r.scan_iter(f"{app}:*"):
        r.delete(key)


def _register(reg: Registry) -> str:
    loaded = build_default(["what is two plus two", "four", "select count star from users"] * 20)
    version = reg.next_version()
    staged = reg.staging(version)
    save(loaded, staged)
    reg.register(version, staged, {**META, "file_hashes": file_hashes(staged)})
    return version


def test_a_registered_model_carries_its_card_and_loads_with_auto_model(registry):
    reg, _ = registry
    version = _register(reg)
    path = reg.path(version)
    text = (path / "README.md").read_text()
    meta = _front(text)
    assert (
        meta["library_name"] == "transformers"
        and meta["pipeline_tag"] == "text-generation"
        and meta["license"] is None
    )
    fw = meta["flywheel"]
    assert fw["version"] == version and fw["base_model"] == "v0001" and fw["lineage"] == META["lineage"]
    assert fw["golden_version"] == "g0002" and fw["recipe"]["learning_rate"] == "0.0005"
    by_metric = {s["metric"]: s for s in fw["scores"]}
    assert by_metric["overall"] == {
        "metric": "overall",
        "score": 0.6125,
        "incumbent": 0.5095,
        "delta": 0.103,
        "interval": [0.041, 0.165],
    }
    assert by_metric["task.sql"]["interval"] == [-0.02, 0.21] and by_metric["task.qa"]["interval"] is None
    assert "| overall | 0.6125 | 0.5095 | 0.1030 | [0.0410, 0.1650] |" in text
    assert "README.md" not in reg.show(version)["file_hashes"]  # the weights' hashes, as the trainer saved them
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == "gpt2" and tok("four")["input_ids"]


def test_models_export_writes_a_directory_or_url_that_loads(registry, redis_url, tmp_path, monkeypatch, capsys):
    reg, app = registry
    version = _register(reg)
    monkeypatch.setenv("FLYWHEEL_REDIS_URL", redis_url)
    monkeypatch.setenv("FLYWHEEL_APP_ID", app)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FLYWHEEL_KAFKA_BOOTSTRAP", raising=False)
    out = tmp_path / "export" / version
    assert main(["models", "export", version, str(out)]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": version, "exported_to": str(out)}
    assert _front((out / "README.md").read_text())["flywheel"]["lineage"] == META["lineage"]
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert main(["models", "export", version, str(out)]) == 2  # not over a directory that holds something
    assert "not empty" in capsys.readouterr().err
    assert main(["models", "export", "v9999", str(tmp_path / "x")]) == 2
    # an fsspec URL (an in-memory filesystem here; s3://, gs://, ... the same way)
    assert main(["models", "export", version, f"memory://exports/{version}"]) == 0
    import fsspec

    fs = fsspec.filesystem("memory")
    got = sorted(p.rsplit("/", 1)[1] for p in fs.find(f"/exports/{version}"))
    assert "config.json" in got and "README.md" in got and "flywheel-model.json" in got
    local = tmp_path / "from-url"
    fs.get(f"/exports/{version}/", str(local), recursive=True)
    transformers.AutoModelForCausalLM.from_pretrained(local, local_files_only=True)


def test_the_card_of_an_imported_base_names_its_source():
    text = card.render(
        {"name": "smollm2", "base_kind": "pretrained", "source": "/x/SmolLM2.gguf", "architecture": "llama"}
    )
    fw = _front(text)["flywheel"]
    assert fw["version"] == "smollm2" and fw["status"] == "base" and fw["source"] == "/x/SmolLM2.gguf"
    assert fw["scores"] == [] and "(not evaluated)" in text
