"""`flywheel datasets verify`'s pure parts: what the seal read, rebuilt from a manifest, and the
file-by-file comparison (bytes, records by request id, users.txt, manifest fields), which names
request ids and fields, never texts."""

from __future__ import annotations

import hashlib
import io
import json

import fastavro
import pytest

from schemas.records import ReviewVerdict
from streams.datasets.builder import SealInputs, erased_forms, review_sets
from streams.datasets.verify import (
    CARRIED,
    VOLATILE,
    FileDiff,
    Report,
    VerifyError,
    compare_file,
    compare_manifests,
    compare_records,
    compare_users,
    field_diff,
    first_difference,
    match_erasures,
    request_id,
    span_from_manifest,
    summary,
)

SECRET = "the user's private words"
SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "request_id", "type": "string"},
        {"name": "prompt", "type": "string"},
        {"name": "priority", "type": "double"},
    ],
}


def sft(rid: str, prompt: str = SECRET, priority: float = 1.0) -> dict:
    return {"request_id": rid, "prompt": prompt, "priority": priority}


def chat(rid: str, answer: str = SECRET, priority: float = 1.0) -> dict:
    return {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}],
        "metadata": {"request_id": rid, "priority": priority, "split": "train"},
    }


def avro(records: list[dict]) -> bytes:
    buf = io.BytesIO()
    fastavro.writer(buf, SCHEMA, records, codec="deflate", sync_marker=b"0123456789abcdef")
    return buf.getvalue()


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def test_first_difference():
    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abc", b"xbc") == 0
    assert first_difference(b"abc", b"abx") == 2
    assert first_difference(b"ab", b"abc") == 2  # a prefix: where the shorter one ends
    big = bytes(200_000)
    assert first_difference(big, big[:65_539] + b"\x01" + big[65_540:]) == 65_539


def test_field_diff_names_fields_not_values():
    a = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": SECRET}],
        "metadata": {"priority": 1.0},
    }
    b = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "other"}],
        "metadata": {"priority": 1},
    }
    assert field_diff(a, b) == ["messages[1].content", "metadata.priority"]  # 1.0 and 1 are not the same bytes
    assert field_diff({"x": 1}, {"y": 1}) == ["x", "y"]
    assert field_diff({"l": [1, 2]}, {"l": [1]}) == ["l"]
    assert field_diff(a, a) == []


def test_request_id_of_avro_and_chat_records():
    assert request_id(sft("req-1")) == "req-1"
    assert request_id(chat("req-2")) == "req-2"
    assert request_id({"prompt": "p"}) is None and request_id([1]) is None


def test_compare_records_by_request_id():
    sealed = [sft("a"), sft("b"), sft("c", priority=2.0), sft("d")]
    rebuilt = [sft("a"), sft("c", priority=2.5), sft("d"), sft("e")]
    d = compare_records(sealed, rebuilt)
    assert (d.sealed, d.rebuilt) == (4, 4)
    assert d.missing == ["b"] and d.extra == ["e"] and (d.missing_count, d.extra_count) == (1, 1)
    assert d.differing == [{"request_id": "c", "fields": ["priority"]}] and not d.reordered
    assert not d.same_records
    assert SECRET not in json.dumps(d.__dict__)
    same = compare_records(sealed, list(sealed))
    assert same.same_records
    swapped = compare_records(sealed, [sealed[1], sealed[0], *sealed[2:]])
    assert swapped.reordered and not swapped.missing and not swapped.differing and not swapped.same_records
    # a request id twice (a correction pair and a regeneration pair): matched by occurrence
    twice = compare_records([chat("x"), chat("x", priority=3.0)], [chat("x"), chat("x", priority=4.0)])
    assert twice.differing == [{"request_id": "x", "fields": ["metadata.priority"]}]


def test_compare_users_counts_only():
    a, b = "".join(f"{i:064x}\n" for i in (1, 2, 3)).encode(), "".join(f"{i:064x}\n" for i in (2, 3, 4, 5)).encode()
    assert compare_users(a, b) == {"sealed": 3, "rebuilt": 4, "missing": 1, "extra": 2}


def test_compare_manifests_by_field_with_shards_by_path():
    shard = {"path": "sft/train-p000-00000.avro", "sha256": "aa", "bytes": 10, "records": 2}
    sealed = {
        "dataset_id": "ds-1",
        "counts": {"records": 2, "split": {"sft.train": 2}},
        "shards": [shard],
        "window": {"start_ms": 0},
    }
    rebuilt = {
        "dataset_id": "ds-2",
        "counts": {"records": 3, "split": {"sft.train": 2, "sft.validation": 1}},
        "shards": [
            {**shard, "sha256": "bb"},
            {"path": "sft/validation-p000-00000.avro", "sha256": "cc", "bytes": 5, "records": 1},
        ],
        "window": {"start_ms": 0},
    }
    fields = {f["field"]: (f["sealed"], f["rebuilt"]) for f in compare_manifests(sealed, rebuilt)}
    assert fields == {
        "dataset_id": ("ds-1", "ds-2"),
        "counts.records": (2, 3),
        "counts.split.sft.validation": (None, 1),
        "shards[sft/train-p000-00000.avro].sha256": ("aa", "bb"),
        "shards[sft/validation-p000-00000.avro].bytes": (None, 5),
        "shards[sft/validation-p000-00000.avro].records": (None, 1),
        "shards[sft/validation-p000-00000.avro].sha256": (None, "cc"),
    }
    assert compare_manifests(sealed, sealed) == []
    assert [f["field"] for f in compare_manifests(sealed, rebuilt, volatile=("counts", "shards", "dataset_id"))] == []
    assert VOLATILE == () and "source_offsets" in CARRIED  # listed, explicitly


def test_compare_file_avro_shard_tampered_after_the_seal():
    data = avro([sft("a"), sft("b"), sft("c")])
    entry = {"path": "sft/train-p000-00000.avro", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert compare_file(entry["path"], data, data, entry) is None
    at = len(data) - 20  # inside the deflated block
    tampered = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    d = compare_file(entry["path"], tampered, data, entry)
    assert d.status == "differs" and d.first_difference == at and d.matches_manifest is False
    assert d.sealed_bytes == d.rebuilt_bytes == len(data)
    assert d.unreadable or (d.records is not None and not d.records.same_records)
    # the rebuild differs from an intact stored file: the store is what its manifest says, the log says otherwise
    other = avro([sft("a"), sft("b", priority=9.0)])
    d = compare_file(entry["path"], data, other, entry)
    assert (
        d.matches_manifest is True
        and d.records.missing == ["c"]
        and d.records.differing == [{"request_id": "b", "fields": ["priority"]}]
    )
    assert SECRET not in json.dumps(d.__dict__, default=lambda o: o.__dict__)


def test_compare_file_jsonl_users_manifest_missing_and_extra():
    d = compare_file(
        "sft/train-p000-00000.jsonl", jsonl([chat("a"), chat("b")]), jsonl([chat("a"), chat("b", answer="x")])
    )
    assert d.records.differing == [{"request_id": "b", "fields": ["messages[1].content"]}]
    d = compare_file("sft/train-p000-00000.jsonl", b"\xff\xfe not json\n", jsonl([chat("a")]))
    assert d.unreadable == "the sealed file cannot be read (UnicodeDecodeError)"
    d = compare_file("users.txt", b"a\nb\n", b"a\n")
    assert d.users == {"sealed": 2, "rebuilt": 1, "missing": 1, "extra": 0}
    d = compare_file(
        "manifest.json",
        json.dumps({"counts": {"records": 2}}).encode(),
        json.dumps({"counts": {"records": 1}}).encode(),
    )
    assert d.fields == [{"field": "counts.records", "sealed": 2, "rebuilt": 1}]
    assert compare_file("dedup-keys.bin", b"\x01", None).status == "missing"
    assert compare_file("dedup-keys.bin", None, b"\x01").status == "extra"
    d = compare_file("dedup-keys.bin", b"\x01\x02", b"\x01\x03")
    assert d.first_difference == 1 and d.records is None and d.unreadable is None


def manifest(**changes) -> dict:
    m = {
        "dataset_id": "ds-x",
        "window": {
            "index": 2920,
            "start_ms": 1_766_016_000_000,
            "end_ms": 1_766_620_800_000,
            "days": 7,
            "decisions": 40,
            "passed": 30,
        },
        "lag_ms": 14 * 86_400_000,
        "late_events": 3,
        "first_event_time": 1_766_016_100_000,
        "source_offsets": {
            "t.passed/0": {"first": 0, "stop": 12},
            "t.passed/1": {"first": 5, "stop": 9},
            "t.rejected/0": {"first": 2, "stop": 7},
        },
        "verdict_offsets": {},
        "review_required": False,
        "erasure": {"digest": "x", "ids": 0},
    }
    m.update(changes)
    return m


def test_span_from_manifest_reads_every_source_from_the_log():
    span = span_from_manifest(manifest(), "t.passed")
    assert (span.index, span.start_ms, span.end_ms) == (2920, 1_766_016_000_000, 1_766_620_800_000)
    assert span.boundary_ms == span.end_ms + 14 * 86_400_000
    assert span.spans == {"t.passed/0": (0, 12), "t.passed/1": (5, 9), "t.rejected/0": (2, 7)}
    assert span.log_only == frozenset(span.spans)  # no spool
    assert (span.members, span.late, span.first_event_time) == (40, 3, 1_766_016_100_000)
    passed = sum(n for s, n in span.source_members.items() if s.startswith("t.passed/"))
    assert passed == 30 and sum(span.source_members.values()) == 40  # the manifest's sums, as the seal writes them
    with pytest.raises(VerifyError, match="does not say what its seal read"):
        span_from_manifest(manifest(source_offsets=None), "t.passed")


def verdict(rid: str, reviewer: str, passed: bool, safety: int = 5) -> ReviewVerdict:
    return ReviewVerdict(f"{rid}:{reviewer}", rid, reviewer, 4, 4, safety, passed, 0, 0, True)


def test_gold_and_failed_as_the_seal_reads_verdicts():
    vs = [
        verdict("a", "alice", True),
        verdict("b", "alice", True),
        verdict("b", "bob", False),
        verdict("c", "alice", False),
        verdict("c", "alice", True),
        verdict("d", "bob", True, safety=2),
    ]  # a reviewer's last verdict counts
    gold, failed = review_sets(vs, safety_floor=3)
    assert gold == frozenset({"a", "c"}) and failed == frozenset({"b", "d"})  # d: passed, but unsafe


def test_match_erasures_whole_topic_then_prefixes():
    reqs = [
        (100, 0, 0, erased_forms("alice", b"k")),
        (200, 1, 0, erased_forms("bob", b"k")),
        (300, 0, 1, erased_forms("carol", b"k")),
    ]
    gold = frozenset({"r1"})
    whole = frozenset().union(*(r[3] for r in reqs))
    assert match_erasures(reqs, gold, SealInputs(whole, gold).digest(), len(whole)) == (whole, 3)
    # the seal saw alice and bob: carol asked later
    seen = erased_forms("alice", b"k") | erased_forms("bob", b"k")
    assert match_erasures(list(reversed(reqs)), gold, SealInputs(frozenset(seen), gold).digest(), len(seen)) == (
        frozenset(seen),
        2,
    )
    assert match_erasures(reqs, None, SealInputs(frozenset(), None).digest(), 0) == (frozenset(), 0)
    assert match_erasures(reqs, gold, "not-a-digest", 2) == (None, 0)
    assert match_erasures([], None, SealInputs().digest(), 0) == (frozenset(), 0)


def test_summary_and_json_name_files_ids_and_fields():
    same = Report("ds-1", "ds-1", files_compared=5, records_compared=40)
    assert same.identical and summary(same) == [
        "ds-1: rebuilt from the log: identical (5 files, 40 shard records compared)"
    ]
    d = compare_file(
        "sft/train-p000-00000.jsonl", jsonl([chat("a"), chat("b")]), jsonl([chat("a", answer="x"), chat("c")])
    )
    r = Report("ds-1", "ds-2", files_compared=5, files=[d, FileDiff("users.txt", "missing")], notes=["a note"])
    lines = summary(r)
    assert not r.identical and lines[0] == "ds-1: rebuilt from the log: DIFFERENT (2 of 5 files differ)"
    text = "\n".join(lines)
    assert "sft/train-p000-00000.jsonl" in text and "b" in text and "c" in text and "a: messages[1].content" in text
    assert "users.txt: in the store, not in the rebuild" in text and "ds-2" in text and "note: a note" in text
    out = json.loads(json.dumps(r.to_dict()))
    assert out["identical"] is False and out["files"][0]["records"]["missing"] == ["b"]
    assert out["carried_from_manifest"] == list(CARRIED) and out["not_compared"] == []
    assert SECRET not in text and SECRET not in json.dumps(out)


def test_verify_stored_says_in_one_line_why_it_could_not_rebuild(tmp_path):
    from flywheel.settings import Settings
    from streams.datasets.verify import VerifyError, verify_stored

    settings = Settings(data_dir=str(tmp_path), dataset_store=str(tmp_path / "store"))
    with pytest.raises(VerifyError, match="ds-nope") as missing:
        verify_stored(settings, "ds-nope")
    assert "\n" not in str(missing.value) and not str(missing.value).startswith("'")
    bad = tmp_path / "policy.toml"
    bad.write_text("this is not toml = = =\n")
    with pytest.raises(VerifyError) as policy:
        verify_stored(settings, "ds-nope", policy_path=str(bad))
    assert "\n" not in str(policy.value) and str(bad) in str(policy.value)
