"""The dataset builder against the real broker and Redis: gate decisions on the topics in, sealed
2-week-lagged datasets and exactly one ready event each out; reproducible to the byte; a crash in
the middle of a write leaves nothing visible and the next run completes it; erasure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
import redis
from confluent_kafka import Producer

from flywheel.sdk import DEFAULT_CONFIG
from flywheel.settings import DAY_MS
from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import ErasureRequest, TrainingCandidate
from streams.datasets.service import DatasetService
from flywheel.datastore import DatasetStore, ShardWriter, user_hash
from flywheel.policy import GatePolicy
from streams.guards.store import hold_key
from tests.integration.helpers import close_after_test, forget_redis, read_all

pytestmark = pytest.mark.integration

WEEK = 7 * DAY_MS
T0 = (1_767_225_600_000 // WEEK) * WEEK  # the start of a window


@pytest.fixture
def ds_settings(settings, tmp_path):
    # a configured pseudonym key: builders of other app ids below seal the same bytes (users.txt is keyed)
    s = settings.replace(
        dataset_store=str(tmp_path / "store"), idle_partition_ms=500, pseudonym_key="datasets test key"
    )
    create_topics(s)
    yield s
    forget_redis(s)


def candidate(
    i: int,
    ts: int,
    user: str = "",
    action: str = "accepted",
    task: str = "qa",
    passed: bool = True,
    pair_key: str = "",
) -> TrainingCandidate:
    corrected = action == "corrected"
    target = f"the right answer number {i}, explained in enough words to be worth training on" if corrected else None
    return TrainingCandidate(
        request_id=f"req-{i:05d}",
        timestamp=ts,
        user_id=user or f"user-{i % 7}",
        session_id=f"s{i}",
        prompt=f"question number {i} about the product",
        response=f"answer number {i} with a few more words in it",
        user_action=action,
        task_type=task,
        correction=target or "",
        model_version="m1",
        label=("sft_correction" if corrected else "sft_positive") if passed else "negative",
        target=target or (f"answer number {i} with a few more words in it" if passed else None),
        pair_chosen=target,
        pair_rejected=f"answer number {i} with a few more words in it" if corrected else None,
        pair_key=pair_key,
        quality_score=0.8 if passed else 0.2,
        scores={"quality": 0.8},
        policy_version="default-1@x",
        reasons=[] if passed else ["action_excluded"],
    )


def produce(s, cands: list[TrainingCandidate], topic: str | None = None) -> None:
    codec = Codec()
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    for c in cands:
        t = topic or (s.topic_passed if c.label != "negative" else s.topic_rejected)
        p.produce(t, key=c.request_id.encode(), value=codec.encode("candidate", c.to_dict()))
    assert p.flush(30) == 0


def erase(s, user: str) -> None:
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})
    p.produce(
        s.topic_erasure,
        key=user.encode(),
        value=Codec().encode("erasure", ErasureRequest(user, int(time.time() * 1000)).to_dict()),
    )
    assert p.flush(30) == 0


def service(s, policy: GatePolicy | None = None) -> DatasetService:
    return close_after_test(
        DatasetService(s, policy or GatePolicy(), DatasetStore(s.datasets_url), redis.Redis.from_url(s.redis_url))
    )


def run_until(svc: DatasetService, predicate, timeout: float = 60.0) -> list:
    sealed = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sealed += svc.step(0.2)
        if predicate(sealed):
            return sealed
    raise AssertionError(f"timed out; sealed {[r.dataset_id for r in sealed]}")


def traffic() -> list[TrainingCandidate]:
    """Five weeks and a day of decisions, a few an hour, out of order within a day, with corrections and regenerations."""
    # a regenerated answer followed, in the same session and prompt, by an accepted one
    out = [
        candidate(900, T0 + DAY_MS, action="regenerated", passed=False, pair_key="pk-1"),
        candidate(901, T0 + DAY_MS + 60_000, action="accepted", pair_key="pk-1"),
    ]
    for i in range(600):
        ts = T0 + i * (36 * DAY_MS // 600) - (i % 5) * 3_600_000
        action = "corrected" if i % 9 == 0 else "accepted"
        out.append(candidate(i, ts, action=action, task="qa" if i % 4 else "sql"))
    return out


def test_windows_seal_two_weeks_late_into_reproducible_datasets_with_one_ready_event_each(ds_settings, tmp_path):
    s = ds_settings.replace(seal_workers=1)  # in this process; the rebuild below uses a pool of two
    produce(s, traffic())
    svc = service(s)
    sealed = run_until(svc, lambda r: len(r) >= 3)  # 5 weeks of event time: windows 0, 1, 2 pass end + 14 days
    ids = [r.dataset_id for r in sealed]
    assert len(set(ids)) == len(ids)
    store = DatasetStore(s.datasets_url)
    listed = store.list()
    assert [m["dataset_id"] for m in listed] == ids[: len(listed)]
    first = listed[0]
    assert first["window"]["start_ms"] == T0 and first["window"]["end_ms"] == T0 + WEEK
    assert first["lag_ms"] == 14 * DAY_MS and first["policy_version"] == GatePolicy().stamp
    assert first["counts"]["split"]["sft.train"] > 50 and "preference.train" in first["counts"]["split"]
    assert first["counts"]["task_type"]["qa"] > first["counts"]["task_type"]["sql"] > 0
    # every shard's sha256 is the file's; JSONL holds chat messages
    for shard in first["shards"]:
        with store.open(f"{first['dataset_id']}/{shard['path']}") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
    sft = [
        json.loads(line)
        for shard in first["shards"]
        if shard["kind"] == "sft" and shard["path"].endswith(".jsonl")
        for line in store.open(f"{first['dataset_id']}/{shard['path']}").read().decode().splitlines()
    ]
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in sft)
    # the regeneration became a preference pair whose rejected side is the regenerated answer
    pref = [
        json.loads(line)
        for shard in first["shards"]
        if shard["kind"] == "preference" and shard["path"].endswith(".jsonl")
        for line in store.open(f"{first['dataset_id']}/{shard['path']}").read().decode().splitlines()
    ]
    assert any(p["rejected"][0]["content"] == "answer number 900 with a few more words in it" for p in pref)

    # exactly one ready event per dataset, even when announcing again (a crash after the event)
    assert svc.announce(sealed[0]) is False
    ready = read_all(s, s.topic_datasets_ready, "dataset_ready")
    assert sorted(d["dataset_id"] for _, _, d in ready) == sorted(ids)
    assert all(d["uri"].endswith(d["dataset_id"]) for _, _, d in ready)

    # the seal read the builder's local spool of each window, not the log; a sealed window's spool is gone
    assert all(r.from_spool == s.partitions and r.from_log == 0 for r in sealed)
    assert sorted(os.listdir(s.seal_spool_dir)) == [str(i) for i in svc.clock.pending()]

    # reproducible: a fresh builder (no state, another store, two processes) over the same log gives
    # the same bytes, here read from the log: its spool is removed while a hold keeps the windows waiting
    again = s.replace(
        app_id=s.app_id + "-again",
        dataset_store=str(tmp_path / "store-again"),
        topic_datasets_ready=s.topic_datasets_ready + ".again",
        seal_workers=2,
    )
    create_topics(again)
    r = redis.Redis.from_url(again.redis_url)
    r.set(hold_key(again.app_id, "datasets"), json.dumps({"monitor": "test", "reason": "test", "since": 0}))
    svc_again = service(again)
    deadline = time.monotonic() + 60
    while len((svc_again.clock.ready() if svc_again.clock else [])) < len(sealed) and time.monotonic() < deadline:
        assert svc_again.step(0.2) == []
    shutil.rmtree(again.seal_spool_dir)
    r.delete(hold_key(again.app_id, "datasets"))
    sealed_again = run_until(svc_again, lambda r: len(r) >= len(sealed))
    assert [r.dataset_id for r in sealed_again][: len(ids)] == ids
    assert all(r.from_log == s.partitions and r.from_spool == 0 for r in sealed_again[: len(ids)])
    assert {sh["partition"] for sh in first["shards"]} == set(range(s.partitions))  # a shard series per partition
    other = DatasetStore(again.datasets_url)
    for m in listed:
        assert other.manifest(m["dataset_id"]) == m
        for shard in m["shards"]:
            with (
                store.open(f"{m['dataset_id']}/{shard['path']}") as a,
                other.open(f"{m['dataset_id']}/{shard['path']}") as b,
            ):
                assert a.read() == b.read()
    forget_redis(again)


def test_late_events_are_counted_and_never_mixed_into_a_sealed_window(ds_settings):
    s = ds_settings
    produce(s, [candidate(i, T0 + i * 3_600_000) for i in range(50)] + [candidate(100, T0 + 22 * DAY_MS)])
    svc = service(s)
    first = run_until(svc, lambda r: len(r) >= 1)[0]
    assert first.manifest["counts"]["records"] == 50
    produce(s, [candidate(200, T0 + DAY_MS)])  # for the window just sealed
    run_until(svc, lambda r: svc.clock.late_counts.get(T0 // WEEK, 0) >= 1, timeout=20)
    assert DatasetStore(s.datasets_url).manifest(first.dataset_id)["counts"]["records"] == 50


def test_a_crash_in_the_middle_of_a_write_leaves_nothing_and_the_next_run_completes_it(
    ds_settings, monkeypatch, tmp_path
):
    s = ds_settings.replace(seal_workers=1)  # the crash is patched into this process
    produce(s, [candidate(i, T0 + i * 3_600_000) for i in range(80)] + [candidate(100, T0 + 22 * DAY_MS)])
    svc = service(s)
    real_add = ShardWriter.add
    calls = {"n": 0}

    def crash_after_40(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 40:
            raise OSError("disk gone (simulated crash mid-write)")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(ShardWriter, "add", crash_after_40)
    with pytest.raises(OSError):
        run_until(svc, lambda r: len(r) >= 1, timeout=30)
    store = DatasetStore(s.datasets_url)
    assert store.list() == []  # nothing partial is visible
    assert read_all(s, s.topic_datasets_ready, "dataset_ready") == []
    monkeypatch.setattr(ShardWriter, "add", real_add)
    done = run_until(service(s), lambda r: len(r) >= 1)[0]  # a restarted builder: state from Redis
    assert [m["dataset_id"] for m in store.list()] == [done.dataset_id]
    assert done.manifest["counts"]["records"] == 80
    assert len(read_all(s, s.topic_datasets_ready, "dataset_ready")) == 1
    # the completed dataset is the one a clean run writes
    clean = s.replace(
        app_id=s.app_id + "-clean",
        dataset_store=str(tmp_path / "clean"),
        topic_datasets_ready=s.topic_datasets_ready + ".clean",
    )
    create_topics(clean)
    assert run_until(service(clean), lambda r: len(r) >= 1)[0].dataset_id == done.dataset_id
    forget_redis(clean)


def test_erasure_removes_a_user_from_unsealed_windows_and_lists_sealed_datasets_holding_them(ds_settings):
    s = ds_settings
    key = s.pseudonym_key.encode()
    window0 = [candidate(i, T0 + i * 3_600_000, user="alice" if i % 2 else "bob") for i in range(40)]
    produce(s, window0 + [candidate(100, T0 + 22 * DAY_MS, user="carol")])
    svc = service(s)
    first = run_until(svc, lambda r: len(r) >= 1)[0]
    store = DatasetStore(s.datasets_url)
    assert store.holds_user(first.dataset_id, user_hash("alice", key)) and store.holds_user(
        first.dataset_id, user_hash("bob", key)
    )

    # alice asks to be erased: the sealed dataset is re-sealed without her (test_erasure.py); the next window leaves her out
    erase(s, "alice")
    window3 = [candidate(200 + i, T0 + 3 * WEEK + i * 3_600_000, user="alice" if i % 2 else "bob") for i in range(40)]
    produce(s, window3 + [candidate(300, T0 + 3 * WEEK + 22 * DAY_MS, user="carol")])
    sealed = run_until(svc, lambda r: any(x.manifest["window"]["start_ms"] == T0 + 3 * WEEK for x in r))
    later = next(x for x in sealed if x.manifest["window"]["start_ms"] == T0 + 3 * WEEK)
    assert (
        later.manifest["counts"]["records"] == 21 and later.manifest["dropped"]["erased"] == 20
    )  # bob's 20 and carol's 1
    assert not store.holds_user(later.dataset_id, user_hash("alice", key))

    import subprocess
    import sys

    from tests.integration.helpers import settings_env

    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "datasets", "affected", "alice"],
        capture_output=True,
        text=True,
        env=settings_env(s),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [] and not store.exists(first.dataset_id)  # no dataset holds her any more


def test_the_builder_service_exports_its_metrics_and_the_cli_reads_its_datasets(ds_settings, tmp_path):
    import subprocess
    import sys

    from flywheel.embedded import free_port
    from tests.integration.helpers import metric_value, settings_env, wait_for

    s = ds_settings.replace(datasets_metrics_port=free_port())
    produce(
        s,
        [candidate(i, T0 + i * 3_600_000, action="corrected" if i % 5 == 0 else "accepted") for i in range(30)]
        + [candidate(100, T0 + 22 * DAY_MS)],
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "datasets", "run"],
        env=settings_env(s),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "builder.log", "wb"),
    )
    url = f"http://127.0.0.1:{s.datasets_metrics_port}/metrics"

    def scrape() -> str:
        import urllib.request

        try:
            return urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return ""

    try:
        wait_for(lambda: metric_value(scrape(), "flywheel_datasets_sealed_total") >= 1, 60, what="a sealed dataset")
        text = scrape()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert (
        metric_value(text, "flywheel_datasets_candidates_total", topic="passed", outcome="member") == 31
    )  # and the later one
    assert (
        metric_value(text, "flywheel_datasets_records", split="sft.train")
        + metric_value(text, "flywheel_datasets_records", split="sft.validation")
        == 30
    )
    assert metric_value(text, "flywheel_datasets_examples_per_day") > 0
    assert metric_value(text, "flywheel_datasets_window_pass_ratio") == 1.0
    assert metric_value(text, "flywheel_datasets_windows", state="sealed") == 1
    assert metric_value(text, "flywheel_datasets_seal_seconds_count") == 1

    def cli(*argv):
        r = subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "datasets", *argv],
            capture_output=True,
            text=True,
            env=settings_env(s),
            timeout=60,
        )
        return r

    listed = [json.loads(line) for line in cli("list").stdout.splitlines()]
    assert len(listed) == 1 and listed[0]["records"] == 36
    ds = listed[0]["dataset_id"]
    assert json.loads(cli("show", ds).stdout)["dataset_id"] == ds
    lines = cli("export", ds).stdout.splitlines()
    assert len(lines) == 30 and all(json.loads(line)["messages"][0]["role"] == "user" for line in lines)
    assert len(cli("export", ds, "--kind", "preference").stdout.splitlines()) == 6
    out = tmp_path / "avro"
    assert cli("export", ds, "--format", "avro", "--out", str(out)).returncode == 0 and list(out.glob("*.avro"))
    missing = cli("show", "ds-nope")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    bad = cli("export", ds, "--format", "parquet")
    assert bad.returncode == 2 and "--format" in bad.stderr


def test_with_review_required_only_the_gold_set_is_kept(ds_settings):
    import dataclasses

    from schemas.records import ReviewVerdict

    s = ds_settings
    cands = [candidate(i, T0 + i * 3_600_000) for i in range(20)]
    produce(s, cands + [candidate(100, T0 + 22 * DAY_MS)])
    codec = Codec()
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})

    def verdict(c, reviewer, passed):
        return ReviewVerdict(
            f"{c.request_id}:{reviewer}", c.request_id, reviewer, 4, 4, 5, passed, T0, c.timestamp, True
        )

    verdicts = [verdict(c, "alice", True) for c in cands[:8]]  # gold: 0-7 ...
    verdicts += [verdict(cands[0], "bob", False)]  # ... but an overlap reviewer failed 0
    verdicts += [verdict(c, "alice", False) for c in cands[8:12]]  # failed review
    for v in verdicts:
        p.produce(s.topic_verdicts, key=v.request_id.encode(), value=codec.encode("verdict", v.to_dict()))
    assert p.flush(30) == 0
    policy = GatePolicy()
    policy = dataclasses.replace(policy, review=dataclasses.replace(policy.review, required=True))
    sealed = run_until(service(s, policy), lambda r: len(r) >= 1)[0]
    m = sealed.manifest
    assert m["review_required"] and m["counts"]["records"] == 7  # 1-7: every reviewer passed them
    assert m["dropped"]["not_gold"] == 8 and m["dropped"]["review_failed"] == 5  # 0 (bob) and 8-11 failed
    assert sum(m["verdict_offsets"].values()) == len(verdicts)


def test_a_failed_or_unsafe_verdict_keeps_its_candidate_out_of_datasets_and_replays(ds_settings):
    """Review is not required: unreviewed candidates are kept, but what a person failed, or scored
    below the safety floor, is not, in the window being sealed and in any replay of a sealed one."""
    from schemas.records import ReviewVerdict
    from trainer.cycle import sft_examples

    s = ds_settings
    cands = [candidate(i, T0 + i * 3_600_000) for i in range(12)]
    produce(s, cands + [candidate(100, T0 + 22 * DAY_MS)])
    codec = Codec()
    p = Producer({**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url})

    def verdict(c, reviewer, passed, safety=5):
        return ReviewVerdict(
            f"{c.request_id}:{reviewer}", c.request_id, reviewer, 4, 4, safety, passed, T0, c.timestamp, True
        )

    verdicts = [
        verdict(cands[0], "alice", True),
        verdict(cands[1], "alice", False),  # a failed verdict
        verdict(cands[2], "alice", True, safety=2),  # passed, but unsafe: below the floor of 3
        verdict(cands[3], "alice", True),
        verdict(cands[3], "bob", False),
    ]  # one of two reviewers failed it
    for v in verdicts:
        p.produce(s.topic_verdicts, key=v.request_id.encode(), value=codec.encode("verdict", v.to_dict()))
    assert p.flush(30) == 0
    sealed = run_until(service(s), lambda r: len(r) >= 1)[0]
    m = sealed.manifest
    assert not m["review_required"] and m["dropped"]["review_failed"] == 3 and m["counts"]["records"] == 9
    store = DatasetStore(s.datasets_url)
    train, validation = sft_examples(store, sealed.dataset_id)
    kept = {e.prompt for e in train + validation}
    assert {c.prompt for c in cands[1:4]}.isdisjoint(kept) and cands[0].prompt in kept
    # a verdict after the seal: the sealed dataset keeps its bytes, every later replay leaves the record out
    assert store.withdrawn() == {cands[1].request_id, cands[2].request_id, cands[3].request_id}
    store.write_withdrawn(store.withdrawn() | {cands[0].request_id})
    train, validation = sft_examples(store, sealed.dataset_id)
    assert cands[0].prompt not in {e.prompt for e in train + validation} and len(train + validation) == 8
