"""The dataset and model cards as text: the YAML parses, configs follow the manifest's shards
(curriculum buckets in order, empty shards and Avro left out), the same manifest gives the same
bytes, and awkward values (quotes, colons, newlines, unicode) stay valid YAML."""

from __future__ import annotations

import yaml

from streams.datasets import card as dcard
from trainer import card as mcard


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:])


def shard(kind: str, split: str, partition: int, records: int = 5, ext: str = "jsonl") -> dict:
    return {
        "kind": kind,
        "split": split,
        "partition": partition,
        "records": records,
        "path": f"{kind}/{split}-p{partition:03d}-00000.{ext}",
        "sha256": "0" * 64,
        "bytes": 10,
    }


def manifest(shards: list[dict], **extra) -> dict:
    return {
        "dataset_id": "ds-20260101-abc",
        "policy_version": 'v: "odd" #1\nnext',
        "builder_version": "5",
        "window": {
            "index": 3,
            "start_ms": 1_767_225_600_000,
            "end_ms": 1_767_830_400_000,
            "days": 7,
            "decisions": 40,
            "passed": 30,
        },
        "counts": {"records": 25, "split": {"sft.train": 20, "sft.validation": 5}},
        "dropped": {"selection.duplicate": 3, "too_short: ü": 2},
        "shards": shards,
        **extra,
    }


def test_curriculum_buckets_stay_in_order_as_one_split_and_empty_or_avro_shards_are_left_out():
    shards = [
        shard("sft", "train-b00", 0),
        shard("sft", "train-b00", 1),
        shard("sft", "train-b01", 0),
        shard("sft", "train-b00", 0, ext="avro"),
        shard("sft", "validation", 1, records=0),
        shard("sft", "validation", 0),
        shard("preference", "train", 2),
    ]
    cfgs = dcard.configs(manifest(shards))
    assert cfgs[0] == {
        "config_name": "sft",
        "default": True,
        "data_files": [
            {
                "split": "train",
                "path": [
                    "sft/train-b00-p000-00000.jsonl",
                    "sft/train-b00-p001-00000.jsonl",
                    "sft/train-b01-p000-00000.jsonl",
                ],
            },
            {"split": "validation", "path": ["sft/validation-p000-00000.jsonl"]},
        ],
    }
    assert cfgs[1] == {
        "config_name": "preference",
        "data_files": [{"split": "train", "path": ["preference/train-p002-00000.jsonl"]}],
    }
    text = dcard.render(manifest(shards))
    meta = _front(text)
    assert meta["configs"][0]["config_name"] == "sft" and meta["configs"][0]["default"] is True
    assert meta["configs"][0]["data_files"] == cfgs[0]["data_files"]
    assert meta["flywheel"]["policy_version"] == 'v: "odd" #1\nnext'
    assert meta["flywheel"]["funnel"] == {
        "decisions": 40,
        "passed": 30,
        "records": 25,
        "splits": {"sft.train": 20, "sft.validation": 5},
        "dropped": {"selection.duplicate": 3, "too_short: ü": 2},
    }
    assert meta["flywheel"]["window"]["start"] == "2026-01-01T00:00:00Z" and meta["license"] is None
    assert dcard.render(manifest(list(shards))) == text  # reproducible


def test_a_dataset_without_records_has_no_configs_and_still_a_valid_card():
    meta = _front(dcard.render(manifest([])))
    assert meta["configs"] == [] and meta["flywheel"]["dataset_id"] == "ds-20260101-abc"


def test_a_dataset_with_only_pairs_makes_preference_the_default():
    assert dcard.configs(manifest([shard("preference", "train", 0)]))[0] == {
        "config_name": "preference",
        "default": True,
        "data_files": [{"split": "train", "path": ["preference/train-p000-00000.jsonl"]}],
    }


def test_the_model_card_parses_with_awkward_values():
    meta = {
        "version": "v0003",
        "status": "rejected",
        "base_model": "v0002",
        "reasons": ["task_regressed:sql:-0.1[-0.2,-0.05]"],
        "metrics": {"overall": 0.5, "task.a: b": 0.25, "delta_low.task.a: b": -0.1, "delta_high.task.a: b": 0.2},
        "hyperparameters": {"chat_template": '{% if x %}"y"{% endif %}\nz'},
        "datasets": ["ds-1"],
    }
    fw = _front(mcard.render(meta))["flywheel"]
    assert fw["lineage"] == ["ds-1"] and fw["reasons"] == meta["reasons"]
    assert fw["recipe"]["chat_template"] == meta["hyperparameters"]["chat_template"]
    assert {s["metric"]: s["interval"] for s in fw["scores"]} == {"overall": None, "task.a: b": [-0.1, 0.2]}
