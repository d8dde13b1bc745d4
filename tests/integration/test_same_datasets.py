"""Same events in, same datasets out: the simulator's traffic through real worker processes (join and
gate) and the dataset builder, four ways: produced as a backlog before one worker starts, produced
live beside one worker, live beside two workers sharing the partitions, and as a backlog read by a
worker killed with kill -9 twice. Every way seals the same windows under the same dataset ids, with
byte-identical shards: the keep band and duplicates are decided over the window, records are
ordered by event time, and a dataset is named by its content."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flywheel.sdk import FlywheelProducer
from flywheel.settings import DAY_MS
from flywheel.simulate import Traffic, TrafficSpec, generate, send
from flywheel.topics import create_topics
from flywheel.datastore import DatasetStore
from tests.integration.helpers import WorkerProcess, end_offsets, forget_redis, settings_env, wait_for

pytestmark = pytest.mark.integration
WEEK = 7 * DAY_MS
REQUESTS = 1_200
POLICY = """version = "same-datasets"
[datasets]
lag_days = 0
[keep_rate]
min_samples = 10
"""


def fresh(settings, tag: str, tmp_path: Path):
    run = f"{tag}{uuid.uuid4().hex[:6]}"
    names = {
        f.replace("topic_", ""): f
        for f in (
            "topic_interactions",
            "topic_actions",
            "topic_candidates",
            "topic_deadletter",
            "topic_passed",
            "topic_rejected",
            "topic_verdicts",
            "topic_datasets_ready",
            "topic_erasure",
            "topic_models",
        )
    }
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    # one pseudonym key for every way (users.txt holds keyed pseudonyms: the bytes are the same under one key)
    s = settings.replace(
        app_id=f"same-{run}",
        roles="join,gate",
        gate_policy=str(policy),
        idle_partition_ms=500,
        pseudonym_key="same-datasets test key",
        dataset_store=str(tmp_path / f"store-{run}"),
        data_dir=str(tmp_path / f"data-{run}"),
        seal_spool=str(tmp_path / f"spool-{run}"),
        **{field: f"t{run}.{name}" for name, field in names.items()},
    )
    create_topics(s)
    return s


def decided(s) -> int:
    return end_offsets(s, s.topic_passed) + end_offsets(s, s.topic_rejected)


def seal_all(s, tmp_path: Path, expected_windows: int) -> dict[int, tuple[str, dict[str, str]]]:
    """Run the builder until it has sealed `expected_windows`; {window start: (dataset id, file sha256s)}."""
    builder = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "datasets", "run"],
        env=settings_env(s),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"builder-{s.app_id}.log", "wb"),
    )
    store = DatasetStore(s.datasets_url)
    try:
        wait_for(
            lambda: len(store.list()) >= expected_windows, 240, interval=1, what=f"{expected_windows} sealed windows"
        )
        time.sleep(2)  # nothing more should come
    finally:
        builder.terminate()
        builder.wait(60)
    out = {}
    for m in store.list():
        files = {}
        for sh in m["shards"]:
            with store.open(f"{m['dataset_id']}/{sh['path']}") as f:
                files[sh["path"]] = hashlib.sha256(f.read()).hexdigest()
        assert m["window"]["start_ms"] not in out, "two datasets for one window"
        out[m["window"]["start_ms"]] = (m["dataset_id"], files, m["counts"]["records"], m["dropped"])
    return out


def until_decided(s, n: int, workers: list[WorkerProcess], timeout: float = 240) -> None:
    def done():
        for w in workers:
            assert w.proc.poll() is None, w.log_tail()
        return decided(s) >= n

    wait_for(done, timeout, interval=0.5, what=f"{n} gate decisions")


def run_way(way: str, settings, tmp_path: Path, traffic: Traffic, expected_windows: int):
    s = fresh(settings, way, tmp_path)
    n = len(traffic.expected)
    workers: list[WorkerProcess] = []
    try:
        if way == "backlog":
            with FlywheelProducer(s) as sdk:
                send(traffic, sdk, settle_window_ms=s.settle_window_ms, tail_ticks=True)
            workers.append(WorkerProcess(s.replace(worker_id="w-0"), tmp_path, f"{way}-0"))
        elif way in ("live", "two-workers"):
            workers.append(WorkerProcess(s.replace(worker_id="w-0"), tmp_path, f"{way}-0"))
            if way == "two-workers":
                workers.append(WorkerProcess(s.replace(worker_id="w-1"), tmp_path, f"{way}-1"))
            time.sleep(8)  # the workers join the group before the traffic starts
            with FlywheelProducer(s) as sdk:
                send(traffic, sdk, settle_window_ms=s.settle_window_ms, tail_ticks=True, rate=1_500)
        elif way == "kill-9":
            with FlywheelProducer(s) as sdk:
                send(traffic, sdk, settle_window_ms=s.settle_window_ms, tail_ticks=True)
            for k, share in enumerate((0.25, 0.6)):
                w = WorkerProcess(s.replace(worker_id="w-0"), tmp_path, f"{way}-{k}")
                wait_for(
                    lambda: decided(s) >= n * share or w.proc.poll() is not None,
                    240,
                    interval=0.2,
                    what=f"{share:.0%} of the decisions",
                )
                w.kill9()
            workers.append(WorkerProcess(s.replace(worker_id="w-0"), tmp_path, f"{way}-last"))
        until_decided(s, n, workers)
        return seal_all(s, tmp_path, expected_windows)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                assert w.stop() == 0, w.log_tail()
        forget_redis(s)


def test_the_same_traffic_seals_the_same_datasets_whatever_carried_it(settings, tmp_path):
    spec = TrafficSpec(
        requests=REQUESTS,
        seed=19,
        event_rate=REQUESTS / (22 * 86_400),
        duplicate_rate=0.05,
        out_of_order_rate=0.1,
        late_rate=0.03,
    )
    traffic = generate(spec, settings.settle_window_ms)
    times = [e.record["event_time"] for e in traffic.events if e.kind == "interaction"]
    last = max(times)
    expected = len({t // WEEK for t in times if (t // WEEK + 1) * WEEK <= last})
    assert expected >= 2
    results = {
        way: run_way(way, settings, tmp_path, traffic, expected)
        for way in ("backlog", "live", "two-workers", "kill-9")
    }
    reference = results["backlog"]
    records = sum(r[2] for r in reference.values())
    assert records > 100
    dropped = {k: v for r in reference.values() for k, v in r[3].items() if k.startswith("selection.")}
    assert dropped.get("selection.keep_band", 0) > 0  # the band cut something: the test would see order effects
    summary = {way: {w: r[0] for w, r in sorted(res.items())} for way, res in results.items()}
    print(json.dumps(summary, indent=1))
    for way, res in results.items():
        assert {w: (r[0], r[1]) for w, r in res.items()} == {w: (r[0], r[1]) for w, r in reference.items()}, (
            f"{way} sealed other datasets than the backlog: {summary}"
        )
