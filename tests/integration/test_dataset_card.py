"""A sealed dataset directory opens in the Hugging Face ecosystem as it is: its README.md (the dataset
card, streams/datasets/card.py) declares the configs and splits, `datasets.load_dataset(DIR)` loads
them without further arguments, and TRL's SFTTrainer trains a step on what it loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from streams.datasets import card
from flywheel.policy import GatePolicy

from flywheel.datastore import DatasetStore
from tests.integration.test_datasets import ds_settings, produce, run_until, service, traffic  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

datasets = pytest.importorskip("datasets")


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


@pytest.fixture
def sealed(ds_settings) -> tuple[DatasetStore, dict]:
    s = ds_settings.replace(seal_workers=1)
    produce(s, traffic())
    run_until(service(s), lambda r: len(r) >= 1)
    store = DatasetStore(s.datasets_url)
    return store, store.list()[0]


def test_a_sealed_dataset_carries_a_card_and_load_dataset_opens_every_config_and_split(sealed):
    store, m = sealed
    ds_dir = Path(store.uri(m["dataset_id"]))
    text = (ds_dir / "README.md").read_text()
    # the card is not one of the manifest's files: the content-addressed id did not move
    assert "README.md" not in m["files"] and not any(sh["path"] == "README.md" for sh in m["shards"])
    assert text == card.render(m)  # derived from the manifest alone: reproducible like the shards
    meta = _front_matter(text)
    assert "license" in meta and meta["license"] is None  # left for the owner
    fw = meta["flywheel"]
    assert fw["dataset_id"] == m["dataset_id"] and fw["policy_version"] == GatePolicy().stamp == m["policy_version"]
    assert fw["window"]["start_ms"] == m["window"]["start_ms"] and fw["window"]["end_ms"] == m["window"]["end_ms"]
    assert fw["funnel"]["decisions"] == m["window"]["decisions"] and fw["funnel"]["passed"] == m["window"]["passed"]
    assert fw["funnel"]["records"] == m["counts"]["records"] and fw["funnel"]["dropped"] == m["dropped"]
    names = {c["config_name"]: c for c in meta["configs"]}
    assert set(names) == {"sft", "preference"} and names["sft"].get("default") is True

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    counts = m["counts"]["split"]
    loaded = datasets.load_dataset(str(ds_dir))  # no config, no data_files: the card says it all
    assert set(loaded) == {k.split(".", 1)[1] for k in counts if k.startswith("sft.")}
    for split, d in loaded.items():
        assert d.num_rows == counts[f"sft.{split}"], split
    assert [t["role"] for t in loaded["train"][0]["messages"]][-1] == "assistant"
    pref = datasets.load_dataset(str(ds_dir), "preference")
    for split, d in pref.items():
        assert d.num_rows == counts[f"preference.{split}"], split
    row = pref["train"][0]
    assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["content"] != row["chosen"][0]["content"]
    request_ids = {r["metadata"]["request_id"] for r in loaded["train"]}
    assert len(request_ids) == counts["sft.train"]


def test_trl_sft_trainer_trains_a_step_on_a_sealed_dataset(sealed, tmp_path):
    trl = pytest.importorskip("trl")
    from trainer.model import build_default

    store, m = sealed
    train = datasets.load_dataset(store.uri(m["dataset_id"]), split="train").remove_columns(["metadata"])
    corpus = [t["content"] for r in train for t in r["messages"]]
    loaded = build_default(corpus)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        max_length=128,
        disable_tqdm=True,
    )
    t = trl.SFTTrainer(model=loaded.model, args=args, train_dataset=train, processing_class=loaded.tokenizer)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    result = t.train()
    assert result.global_step == 1 and result.training_loss > 0
    assert any(not p.detach().equal(before[n]) for n, p in loaded.model.named_parameters())  # it learned something
    print(json.dumps({"trl": trl.__version__, "loss": round(result.training_loss, 3), "rows": train.num_rows}))


def test_datasets_export_shows_a_progress_bar_on_a_terminal_and_writes_the_records(
    sealed, tmp_path, monkeypatch, capsys
):
    import io
    import sys

    from flywheel.cli import main

    store, m = sealed
    monkeypatch.setenv("FLYWHEEL_DATASET_STORE", store.url)

    class Terminal(io.StringIO):  # stderr as a terminal: the bar shows there, never on stdout
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = tmp_path / "sft.jsonl"
    assert main(["datasets", "export", m["dataset_id"], "--kind", "sft", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == sum(n for k, n in m["counts"]["split"].items() if k.startswith("sft."))
    assert "export sft" in term.getvalue() and f"/{len(lines)} " in term.getvalue()  # the bar, with the total
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: nothing
    assert (
        main(["datasets", "export", m["dataset_id"], "--kind", "preference", "--out", str(tmp_path / "p.jsonl")]) == 0
    )
    assert sys.stderr.getvalue() == ""


def test_datasets_push_copies_what_a_reader_needs_to_a_directory_or_url_that_load_dataset_opens(
    sealed, tmp_path, monkeypatch, capsys
):
    from flywheel.cli import main

    store, m = sealed
    monkeypatch.setenv("FLYWHEEL_DATASET_STORE", store.url)
    dest = tmp_path / "pushed" / "my-dataset"
    assert main(["datasets", "push", m["dataset_id"], str(dest)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset_id"] == m["dataset_id"] and out["files"] == len(m["shards"]) + 2
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == sorted(
        [sh["path"] for sh in m["shards"]] + ["README.md", "manifest.json"]
    )  # no users.txt, no keys
    loaded = datasets.load_dataset(str(dest))
    assert {s: d.num_rows for s, d in loaded.items()} == {
        k.split(".", 1)[1]: n for k, n in m["counts"]["split"].items() if k.startswith("sft.")
    }
    assert main(["datasets", "push", m["dataset_id"], str(dest)]) == 0  # again: the same dataset, idempotent
    capsys.readouterr()
    (dest / "manifest.json").write_text(json.dumps({"dataset_id": "ds-other"}))
    assert main(["datasets", "push", m["dataset_id"], str(dest)]) == 2
    assert "holds dataset ds-other" in capsys.readouterr().err
    # an fsspec URL (in memory here; hf://datasets/ORG/NAME or s3:// the same way)
    assert main(["datasets", "push", m["dataset_id"], f"memory://pushed/{m['dataset_id']}"]) == 0
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.cat(f"/pushed/{m['dataset_id']}/README.md").decode() == card.render(m)
