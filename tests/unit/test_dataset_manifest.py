"""The typed manifest (schemas/datasets.py): a seal's manifest.json comes back from it byte for byte,
so typing it changed no dataset id, card or hash; and a store's manifest reads typed."""

from __future__ import annotations

import random

import pytest

from flywheel.datastore import DatasetStore, manifest_json
from flywheel.policy import GatePolicy
from flywheel.settings import DAY_MS, Settings
from schemas.codec import Codec
from schemas.datasets import Manifest
from schemas.records import TrainingCandidate
from streams.datasets import card
from streams.datasets.builder import SealInputs, WindowBuilder, iter_records
from streams.datasets.spool import WindowSpool
from streams.datasets.windows import WindowSpan

WEEK = 7 * DAY_MS
T0 = (1_767_225_600_000 // WEEK) * WEEK


def seal(tmp_path, n: int = 60, extra: dict | None = None):
    """A window of `n` candidates sealed from the builder's spool, no broker: (builder, result)."""
    s = Settings(data_dir=str(tmp_path), dataset_store=str(tmp_path / "store"), seal_workers=1, app_id="manifest")
    codec, rng, spool = Codec(), random.Random(7), WindowSpool(s.seal_spool_dir)
    source = f"{s.topic_passed}/0"
    for i in range(n):
        corrected = i % 5 == 0
        c = TrainingCandidate(
            request_id=f"req-{i}",
            timestamp=T0 + rng.randrange(WEEK),
            user_id=f"user-{i % 7}",
            session_id=f"s-{i}",
            prompt=f"question {i} about retries",
            response=f"answer {i}",
            user_action="corrected" if corrected else "accepted",
            task_type=rng.choice(["qa", "sql"]),
            model_version="m1",
            label="sft_correction" if corrected else "sft_positive",
            correction=f"better answer {i}" if corrected else "",
            quality_score=rng.random(),
        )
        if corrected:
            c.pair_chosen, c.pair_rejected = c.correction, c.response
        spool.append(0, source, i, codec.encode("candidate", c.to_dict()), None)
    spool.close()
    span = WindowSpan(0, T0, T0 + WEEK, T0 + WEEK + 14 * DAY_MS, {source: (0, n)}, n, T0, 0, {source: n})
    builder = WindowBuilder(s, GatePolicy(), DatasetStore(s.datasets_url), codec)
    return builder, builder.seal(span, SealInputs(key=b"k" * 32), extra)


def test_a_sealed_manifest_comes_back_from_the_typed_one_byte_for_byte(tmp_path):
    builder, result = seal(tmp_path, extra={"supersedes": "ds-20260101-000000000000", "resealed": {"reason": "x"}})
    store = builder.store
    with store.open(f"{result.dataset_id}/manifest.json") as f:
        written = f.read()
    typed = store.read_manifest(result.dataset_id)
    assert manifest_json(typed.to_dict()) == written
    assert list(result.record.to_dict()) == list(result.manifest)  # the builder's key order too (unsorted printing)
    assert typed == result.record
    assert typed.extra == {"supersedes": "ds-20260101-000000000000", "resealed": {"reason": "x"}}
    assert typed.records == result.manifest["counts"]["records"] > 0
    assert typed.window_start_ms == T0 and typed.pseudonym_key
    # the card is the same whether it is written from the typed manifest or from manifest.json's object
    with store.open(f"{result.dataset_id}/{card.CARD}") as f:
        assert f.read().decode() == card.render(result.manifest) == card.render(typed)
    sft_avro = typed.shards_of("sft")
    assert sft_avro and all(sh["path"].endswith(".avro") for sh in sft_avro)
    assert len(list(iter_records(store, result.dataset_id, "sft", "avro"))) == len(sft_avro)


def test_an_older_manifest_round_trips_without_the_keys_it_never_had():
    old = {"dataset_id": "ds-20250101-abcdef012345", "window": {"start_ms": 1, "end_ms": 2}, "shards": [], "x": [1]}
    m = Manifest.from_dict(old)
    assert m.to_dict() == old and m.files is None and m.extra == {"x": [1]} and m.records == 0


@pytest.mark.parametrize("bad", [{}, {"dataset_id": 3}, ["ds-1"]])
def test_what_is_no_manifest_is_refused(bad):
    with pytest.raises(ValueError):
        Manifest.from_dict(bad)


def test_a_manifest_is_frozen():
    m = Manifest.from_dict({"dataset_id": "ds-1"})
    with pytest.raises(AttributeError):
        m.dataset_id = "ds-2"  # type: ignore[misc]
