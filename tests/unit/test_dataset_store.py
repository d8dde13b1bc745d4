"""The dataset store: reproducible shards, staging and atomic publish, users index, dataset ids."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid

import fastavro
import fsspec
import pytest

from flywheel.datastore import DatasetStore, ShardWriter, dataset_id, manifest_json, sync_marker, user_hash, users_txt

T0 = 1_760_000_000_000  # 2025-10-09 UTC
KEY = b"test pseudonym key"


def sft(i: int, **kw) -> dict:
    r = {
        "request_id": f"r-{i}",
        "prompt": f"Prompt {i} — ünïcode",
        "target": f"target {i} " * (i % 5 + 1),
        "task_type": "chat",
        "user_action": "accepted",
        "label": "sft_positive",
        "model_version": "v1",
        "quality_score": 0.5 + i / 1000,
        "difficulty": (i % 10) / 10,
        "priority": float(i % 3),
        "priority_reasons": ["uncertainty"] if i % 3 else [],
        "split": "train",
        "event_time": T0 + i,
        "policy_version": "p@1",
        "messages": [
            {"role": "user", "content": f"Prompt {i} — ünïcode", "name": None, "tool_calls": [], "tool_call_id": None}
        ],
        "context": [f"passage {i}"] if i % 2 else [],
        "tools": [],
        "target_tool_calls": [],
    }
    r.update(kw)
    return r


def write(fs, directory: str, records, shard_records: int = 4, seed: str = "ds-1/sft/train") -> list[dict]:
    w = ShardWriter(fs, directory, "train", "sft_record", shard_records, seed=seed)
    for r in records:
        w.add(r)
    return w.close()


def local_fs():
    return fsspec.filesystem("file")


def memory_store() -> DatasetStore:
    return DatasetStore(f"memory://store-{uuid.uuid4().hex}")


def stage_dataset(
    store: DatasetStore, ds_id: str, records, window_start: int = T0, users=("alice", "bob")
) -> list[dict]:
    staging = store.staging(ds_id)
    shards = write(store.fs, f"{staging}/sft", records, seed=f"{ds_id}/sft/train")
    with store.fs.open(f"{staging}/users.txt", "wb") as f:
        f.write(users_txt(user_hash(u, KEY) for u in users))
    with store.fs.open(f"{staging}/manifest.json", "wb") as f:
        f.write(manifest_json({"dataset_id": ds_id, "window_start": window_start, "shards": shards}))
    return shards


# -- shards -----------------------------------------------------------------------------------------


def test_same_records_give_byte_identical_shards(tmp_path):
    fs = local_fs()
    records = [sft(i) for i in range(10)]
    a = write(fs, str(tmp_path / "a" / "sft"), records)
    b = write(fs, str(tmp_path / "b" / "sft"), records)
    assert a == b
    for entry in a:
        pa, pb = tmp_path / "a" / entry["path"], tmp_path / "b" / entry["path"]
        assert pa.read_bytes() == pb.read_bytes()
        assert hashlib.sha256(pa.read_bytes()).hexdigest() == entry["sha256"]
        assert pa.stat().st_size == entry["bytes"]
    # another seed: another sync marker, other bytes; the same records all the same
    c = write(fs, str(tmp_path / "c" / "sft"), records, seed="ds-2/sft/train")
    assert [e["sha256"] for e in c if e["path"].endswith(".avro")] != [
        e["sha256"] for e in a if e["path"].endswith(".avro")
    ]
    assert [e["sha256"] for e in c if e["path"].endswith(".jsonl")] == [
        e["sha256"] for e in a if e["path"].endswith(".jsonl")
    ]
    header = fastavro.reader(open(tmp_path / "a" / "sft" / "train-00000.avro", "rb"))
    assert set(header.metadata) == {"avro.schema", "avro.codec"} and header.metadata["avro.codec"] == "deflate"
    assert sync_marker("ds-1/sft/train", "train-00000") in (tmp_path / "a" / "sft" / "train-00000.avro").read_bytes()


def test_shards_roll_over_at_shard_records(tmp_path):
    entries = write(local_fs(), str(tmp_path / "sft"), [sft(i) for i in range(10)], shard_records=4)
    assert [e["path"] for e in entries] == [
        "sft/train-00000.avro",
        "sft/train-00000.jsonl",
        "sft/train-00001.avro",
        "sft/train-00001.jsonl",
        "sft/train-00002.avro",
        "sft/train-00002.jsonl",
    ]
    assert [e["records"] for e in entries] == [4, 4, 4, 4, 2, 2]
    assert (
        write(local_fs(), str(tmp_path / "exact" / "sft"), [sft(i) for i in range(8)], shard_records=4)[-1]["path"]
        == "sft/train-00001.jsonl"
    )
    assert write(local_fs(), str(tmp_path / "none"), []) == []


def test_jsonl_lines_equal_the_avro_records(tmp_path):
    records = [sft(i) for i in range(7)]
    entries = write(local_fs(), str(tmp_path / "sft"), records, shard_records=3)
    from_avro, from_jsonl = [], []
    for e in entries:
        data = (tmp_path / e["path"]).read_bytes()
        if e["path"].endswith(".avro"):
            from_avro.extend(fastavro.reader(io.BytesIO(data)))
        else:
            lines = data.decode("utf-8").splitlines()
            assert len(lines) == e["records"]
            from_jsonl.extend(json.loads(line) for line in lines)
            assert all(
                line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
                for line in lines
            )
    assert from_avro == from_jsonl == records
    assert "ünïcode" in (tmp_path / "sft" / "train-00000.jsonl").read_text(encoding="utf-8")  # not \\u escaped


def test_a_separate_jsonl_object_and_a_bad_record(tmp_path):
    fs = local_fs()
    w = ShardWriter(fs, str(tmp_path / "sft"), "train", "sft_record", 10, seed="s")
    w.add(sft(1), {"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(Exception):
        w.add({"request_id": "missing the rest"})
    w.abort()
    w2 = ShardWriter(fs, str(tmp_path / "sft2"), "train", "sft_record", 10, seed="s")
    w2.add(sft(1), {"messages": [{"role": "user", "content": "x"}]})
    entries = w2.close()
    assert (tmp_path / "sft2" / "train-00000.jsonl").read_text() == '{"messages":[{"content":"x","role":"user"}]}\n'
    assert [e["records"] for e in entries] == [1, 1]
    with pytest.raises(RuntimeError):
        w2.add(sft(2))


# -- staging and publish ----------------------------------------------------------------------------


def test_staging_is_invisible_until_publish(tmp_path):
    store = DatasetStore(str(tmp_path / "datasets"))
    assert store.list() == []
    stage_dataset(store, "ds-b", [sft(i) for i in range(5)], window_start=T0 + 7 * 86_400_000)
    assert store.list() == [] and not store.exists("ds-b")
    with pytest.raises(KeyError, match="ds-b"):
        store.manifest("ds-b")
    store.publish("ds-b")
    assert store.exists("ds-b") and not (tmp_path / "datasets" / ".staging" / "ds-b").exists()
    assert [m["dataset_id"] for m in store.list()] == ["ds-b"]
    stage_dataset(store, "ds-a", [sft(i) for i in range(3)], window_start=T0)
    assert [m["dataset_id"] for m in store.list()] == ["ds-b"]
    store.publish("ds-a")
    assert [m["dataset_id"] for m in store.list()] == [
        "ds-a",
        "ds-b",
    ]  # by window start, not by name or time of publish
    manifest = store.manifest("ds-a")
    with store.open(f"ds-a/{manifest['shards'][0]['path']}") as f:
        assert hashlib.sha256(f.read()).hexdigest() == manifest["shards"][0]["sha256"]
    assert store.uri("ds-a") == str(tmp_path / "datasets" / "ds-a")
    with pytest.raises(FileNotFoundError):
        store.publish("ds-never-staged")
    with pytest.raises(ValueError):
        store.open("ds-a/../../etc/passwd")


def test_a_crashed_write_is_redone_from_scratch_with_the_same_bytes(tmp_path):
    records = [sft(i) for i in range(9)]
    clean = DatasetStore(str(tmp_path / "clean"))
    clean_shards = stage_dataset(clean, "ds-x", records)
    clean.publish("ds-x")

    store = DatasetStore(str(tmp_path / "crashed"))
    staging = store.staging("ds-x")
    w = ShardWriter(store.fs, f"{staging}/sft", "train", "sft_record", 4, seed="ds-x/sft/train")
    for r in records[:6]:
        w.add(r)  # the process dies here: one closed shard, one half-written, no manifest
    w.abort()
    with store.fs.open(f"{staging}/sft/stray-file.bin", "wb") as f:
        f.write(b"half")
    assert store.list() == [] and not store.exists("ds-x")
    with pytest.raises(FileNotFoundError):
        store.publish("ds-x")  # no manifest: nothing to publish

    again = store.staging("ds-x")
    assert again == staging and store.fs.ls(again) == []  # the leftover is gone
    assert stage_dataset(store, "ds-x", records) == clean_shards
    store.publish("ds-x")
    for shard in clean_shards:
        assert (tmp_path / "crashed" / "ds-x" / shard["path"]).read_bytes() == (
            tmp_path / "clean" / "ds-x" / shard["path"]
        ).read_bytes()
    assert sorted(p.name for p in (tmp_path / "crashed" / "ds-x" / "sft").iterdir()) == sorted(
        p.name for p in (tmp_path / "clean" / "ds-x" / "sft").iterdir()
    )


def test_publish_is_idempotent(tmp_path):
    store = DatasetStore(str(tmp_path / "datasets"))
    first = stage_dataset(store, "ds-1", [sft(i) for i in range(3)])
    store.publish("ds-1")
    store.publish("ds-1")  # again: nothing staged, nothing changes
    # a second writer of the same id (after a crash between publish and the ready event): the first one stays
    stage_dataset(store, "ds-1", [sft(i) for i in range(5)])
    store.publish("ds-1")
    assert store.manifest("ds-1")["shards"] == first
    assert not (tmp_path / "datasets" / ".staging" / "ds-1").exists()
    assert len(store.list()) == 1


def test_holds_user(tmp_path):
    store = DatasetStore(str(tmp_path / "datasets"))
    users = [f"user-{i}" for i in range(200)]
    stage_dataset(store, "ds-u", [sft(0)], users=users)
    store.publish("ds-u")
    text = (tmp_path / "datasets" / "ds-u" / "users.txt").read_text()
    assert text.splitlines() == sorted(user_hash(u, KEY) for u in users) and "user-" not in text
    assert all(store.holds_user("ds-u", user_hash(u, KEY)) for u in users)
    assert not store.holds_user("ds-u", user_hash("user-200", KEY))
    assert not store.holds_user("ds-u", "0" * 64) and not store.holds_user("ds-u", "f" * 64)
    # keyed (HMAC-SHA256), never a plain hash a known id reverses
    assert (
        user_hash("alice", KEY)
        == hmac.new(KEY, b"alice", "sha256").hexdigest()
        != hashlib.sha256(b"alice").hexdigest()
    )
    with pytest.raises(KeyError):
        store.holds_user("ds-missing", user_hash("alice", KEY))


# -- ids and manifests ------------------------------------------------------------------------------


def test_dataset_id_is_stable_and_sensitive_to_every_input():
    args = dict(
        window_start=T0,
        window_end=T0 + 7 * 86_400_000,
        policy_stamp="default-1@abc",
        source_offsets={"flywheel.candidates.passed/0": [10, 20], "verdicts": {"0": 5}},
        erasure_digest="e0",
    )
    ds = dataset_id(**args)
    assert ds == dataset_id(**args)
    assert ds.startswith("ds-20251009-") and len(ds) == len("ds-20251009-") + 12
    reordered = {**args, "source_offsets": {"verdicts": {"0": 5}, "flywheel.candidates.passed/0": [10, 20]}}
    assert dataset_id(**reordered) == ds
    changes = [
        ("window_start", T0 + 1),
        ("window_end", T0 + 1),
        ("policy_stamp", "default-1@abd"),
        ("source_offsets", {"flywheel.candidates.passed/0": [10, 21], "verdicts": {"0": 5}}),
        ("source_offsets", {"flywheel.candidates.passed/0": [10, 20], "verdicts": {"0": 6}}),
        ("erasure_digest", "e1"),
    ]
    ids = {dataset_id(**{**args, k: v}) for k, v in changes}
    assert len(ids) == len(changes) and ds not in ids


def test_manifest_json_is_canonical():
    a = manifest_json({"b": 1, "a": {"d": [1, 2], "c": "é"}})
    assert a == manifest_json({"a": {"c": "é", "d": [1, 2]}, "b": 1})
    assert a.endswith(b"}\n") and a.decode("utf-8").startswith('{\n  "a": {')
    assert json.loads(a) == {"a": {"c": "é", "d": [1, 2]}, "b": 1}


# -- another fsspec backend -------------------------------------------------------------------------


def test_memory_store_works_end_to_end():
    store = memory_store()
    shards = stage_dataset(store, "ds-m", [sft(i) for i in range(6)])
    assert store.list() == [] and not store.exists("ds-m")
    store.publish("ds-m")
    assert store.exists("ds-m") and [m["dataset_id"] for m in store.list()] == ["ds-m"]
    assert not store.fs.exists(f"{store.root}/.staging/ds-m")
    for shard in shards:
        with store.open(f"ds-m/{shard['path']}") as f:
            assert hashlib.sha256(f.read()).hexdigest() == shard["sha256"]
    assert store.holds_user("ds-m", user_hash("alice", KEY)) and not store.holds_user("ds-m", user_hash("carol", KEY))
    assert store.uri("ds-m").startswith("memory://") and store.uri("ds-m").endswith("/ds-m")
    stage_dataset(store, "ds-m", [sft(0)])
    store.publish("ds-m")  # idempotent here too
    assert store.manifest("ds-m")["shards"] == shards


def test_memory_and_local_shards_are_the_same_bytes(tmp_path):
    records = [sft(i) for i in range(6)]
    mem = memory_store()
    assert write(mem.fs, f"{mem.root}/x/sft", records) == write(local_fs(), str(tmp_path / "x" / "sft"), records)


def test_a_half_published_dataset_on_an_object_store_is_replaced():
    store = memory_store()
    stage_dataset(store, "ds-h", [sft(i) for i in range(3)])
    # a crash mid-publish on a non-atomic filesystem: some files moved, no manifest
    with store.fs.open(f"{store.root}/ds-h/sft/train-00000.avro", "wb") as f:
        f.write(b"partial")
    assert not store.exists("ds-h") and store.list() == []
    store.publish("ds-h")
    manifest = store.manifest("ds-h")
    with store.open(f"ds-h/{manifest['shards'][0]['path']}") as f:
        assert hashlib.sha256(f.read()).hexdigest() == manifest["shards"][0]["sha256"]
