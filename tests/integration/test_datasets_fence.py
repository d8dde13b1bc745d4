"""One active dataset builder per flywheel, and `flywheel datasets verify`, on the real embedded broker
and Redis: two `flywheel datasets run` processes against one store and one spool seal each window
once (the other stands by, consuming nothing); a clean stop hands the lease over at once, a kill -9
after the lease lapses; a sealed dataset rebuilt from the log matches to the byte (review gold as of
the seal's verdict offsets, the erasure set as of the seal, the earlier window's duplicate keys),
and a byte changed in a stored shard is found and named."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from flywheel.embedded import free_port
from schemas.codec import Codec
from schemas.records import ReviewVerdict
from streams.datasets.service import lease_key
from flywheel.datastore import DatasetStore
from flywheel.policy import GatePolicy
from tests.integration.helpers import _die_with_parent, metric_value, read_all, settings_env, wait_for
from tests.integration.test_clocks import enc, producer
from tests.integration.test_datasets import DAY_MS, T0, WEEK, candidate, erase, run_until, service

pytestmark = pytest.mark.integration

ACTIVE, TAKEOVERS, SEALED, READ = (
    "flywheel_datasets_active",
    "flywheel_datasets_lease_takeovers_total",
    "flywheel_datasets_sealed_total",
    "flywheel_datasets_candidates_total",
)
TOOK = "dataset builder active: took the lease from"


class Builder:
    """`flywheel datasets run` in a child process, with its own /metrics port and log file."""

    def __init__(self, s, log_dir: Path, name: str):
        self.name, self.port = name, free_port()
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "datasets", "run"],
            env=settings_env(s.replace(datasets_metrics_port=self.port)),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=_die_with_parent,
        )

    def value(self, name: str) -> float | None:
        """A metric's value, None while /metrics does not answer."""
        import urllib.request

        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return metric_value(text, name)

    def logged(self, words: str) -> bool:
        return words in self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def builders(tmp_path):
    started: list[Builder] = []

    def start(s, name: str) -> Builder:
        started.append(Builder(s, tmp_path, name))
        return started[-1]

    yield start
    for b in started:
        b.stop(signal.SIGKILL)


@pytest.fixture
def ds_settings(settings, tmp_path):
    from flywheel.topics import create_topics
    from tests.integration.helpers import forget_redis

    s = settings.replace(dataset_store=str(tmp_path / "store"), idle_partition_ms=500, seal_workers=1)
    create_topics(s)
    yield s
    forget_redis(s)


def send(s, records) -> None:
    """(topic, partition or None, key, value, headers) each; acknowledged."""
    p = producer(s)
    for topic, partition, key, value, headers in records:
        p.produce(
            topic, key=key, value=value, headers=headers, **({} if partition is None else {"partition": partition})
        )
    assert p.flush(30) == 0


def window(s, k: int, n: int = 12, base: int = 0) -> None:
    """Window k's members, then on every partition a record dated past its end plus the lag: it is due."""
    send(
        s,
        [
            (s.topic_passed, None, c.request_id.encode(), enc(c), None)
            for c in (candidate(base + i, T0 + k * WEEK + i * 3_600_000) for i in range(n))
        ],
    )
    send(
        s,
        [
            (
                s.topic_passed,
                p,
                f"due-{k}-{p}".encode(),
                enc(candidate(9000 + 10 * k + p, T0 + k * WEEK + 22 * DAY_MS)),
                None,
            )
            for p in range(s.partitions)
        ],
    )


def sealed_windows(s) -> list[int]:
    return [m["window"]["start_ms"] for m in DatasetStore(s.datasets_url).list()]


def test_one_active_builder_seals_each_window_once_and_a_standby_takes_over(ds_settings, builders):
    s = ds_settings
    a, b = builders(s, "a"), builders(s, "b")
    wait_for(lambda: {a.value(ACTIVE), b.value(ACTIVE)} == {0.0, 1.0}, 30, what="one active builder and one standby")
    active, standby = (a, b) if a.value(ACTIVE) == 1.0 else (b, a)
    wait_for(lambda: standby.logged("dataset builder standby"), 10, what="the standby's log line")

    window(s, 0)
    wait_for(lambda: active.value(SEALED) == 1, 60, what="window 0 sealed")
    assert sealed_windows(s) == [T0]
    assert (
        standby.value(SEALED) == 0 and standby.value(READ) == 0 and standby.value(ACTIVE) == 0
    )  # it consumed nothing

    # a clean stop lets go of the lease: the standby takes over at once and seals the next window
    stopped = time.monotonic()
    assert active.stop() == 0
    wait_for(lambda: standby.value(ACTIVE) == 1.0, 10, what="the standby taking over")
    assert time.monotonic() - stopped < 5
    assert standby.value(TAKEOVERS) == 1 and standby.logged(TOOK)
    window(s, 1, base=100)
    wait_for(lambda: standby.value(SEALED) == 1, 60, what="window 1 sealed by the new active builder")
    assert sealed_windows(s) == [T0, T0 + WEEK]

    # kill -9 of the active builder: its lease lapses (LEASE_MS), then the next standby takes over
    third = builders(s, "c")
    wait_for(
        lambda: third.value(ACTIVE) == 0.0 and third.logged("dataset builder standby"),
        30,
        what="a third builder standing by",
    )
    holder = json.loads(redis.Redis.from_url(s.redis_url).get(lease_key(s)))
    assert holder["pid"] == standby.proc.pid
    standby.stop(signal.SIGKILL)
    window(s, 2, base=200)
    wait_for(lambda: third.value(ACTIVE) == 1.0, 45, what="the lease to lapse and the third builder to take over")
    assert third.value(TAKEOVERS) == 1
    took = [line for line in third.log_path.read_text().splitlines() if TOOK in line]
    assert len(took) == 1 and str(standby.proc.pid) in took[0]  # names the builder it took over from
    wait_for(lambda: third.value(SEALED) == 1, 60, what="window 2 sealed after the takeover")

    assert sealed_windows(s) == [T0, T0 + WEEK, T0 + 2 * WEEK]  # one dataset per window
    ready = [d["dataset_id"] for _, _, d in read_all(s, s.topic_datasets_ready, "dataset_ready")]
    assert sorted(ready) == sorted(m["dataset_id"] for m in DatasetStore(s.datasets_url).list())
    assert third.stop() == 0
    assert redis.Redis.from_url(s.redis_url).get(lease_key(s)) is None  # let go


def cli(s, *argv) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "datasets", *argv],
        capture_output=True,
        text=True,
        env=settings_env(s),
        timeout=120,
    )


def test_verify_rebuilds_a_sealed_window_to_the_byte_and_names_a_changed_shard(ds_settings, tmp_path):
    # review required: the gold set is part of what the seal read; the CLI loads the same policy from its file
    policy = GatePolicy()
    policy = dataclasses.replace(policy, review=dataclasses.replace(policy.review, required=True))
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(policy.to_toml())
    s = ds_settings.replace(gate_policy=str(policy_file))
    assert GatePolicy.load(policy_file).stamp == policy.stamp
    codec = Codec()
    w0 = [
        candidate(
            i,
            T0 + i * 3_600_000,
            user=("alice", "bob", "carol")[i % 3],
            action="corrected" if i % 4 == 0 else "accepted",
        )
        for i in range(30)
    ]
    w1 = [candidate(100 + i, T0 + WEEK + i * 3_600_000) for i in range(20)]
    w1.append(
        dataclasses.replace(candidate(3, T0 + WEEK + DAY_MS), request_id="req-again-3")
    )  # window 0's record again

    def verdicts(cands, passed=lambda c: True, reviewer="alice"):
        send(
            s,
            [
                (
                    s.topic_verdicts,
                    None,
                    c.request_id.encode(),
                    codec.encode(
                        "verdict",
                        ReviewVerdict(
                            f"{c.request_id}:{reviewer}",
                            c.request_id,
                            reviewer,
                            4,
                            4,
                            5,
                            passed(c),
                            T0,
                            c.timestamp,
                            True,
                        ).to_dict(),
                    ),
                    None,
                )
                for c in cands
            ],
        )

    verdicts(w0, passed=lambda c: c.request_id != "req-00007")
    erase(s, "carol")
    svc = service(s, policy)
    from flywheel.pseudonyms import resolve_key
    from streams.datasets.builder import erased_forms

    erased, carol = (
        f"{s.app_id}:datasets:erased",
        sorted(erased_forms("carol", resolve_key(s)))[0],
    )  # keyed pseudonyms only
    run_until(svc, lambda _: redis.Redis.from_url(s.redis_url).zscore(erased, carol) is not None, timeout=30)
    send(s, [(s.topic_passed, None, c.request_id.encode(), enc(c), None) for c in w0])
    send(
        s,
        [
            (s.topic_passed, p, f"due-0-{p}".encode(), enc(candidate(900 + p, T0 + 22 * DAY_MS)), None)
            for p in range(s.partitions)
        ],
    )
    first = run_until(svc, lambda r: len(r) >= 1)[0]
    assert first.manifest["erasure"]["ids"] == 3 and first.manifest["dropped"]["erased"] == 10
    assert first.manifest["dropped"]["review_failed"] == 1 and "not_gold" not in first.manifest["dropped"]

    # after the seal: bob asks to be erased (window 0 is re-sealed without him: a new version replaces it), and a
    # second reviewer fails a record window 0 holds
    erase(s, "bob")
    verdicts([w0[0]], passed=lambda c: False, reviewer="dave")
    verdicts(w1)
    send(s, [(s.topic_passed, None, c.request_id.encode(), enc(c), None) for c in w1])
    send(
        s,
        [
            (s.topic_passed, p, f"due-1-{p}".encode(), enc(candidate(950 + p, T0 + 29 * DAY_MS)), None)
            for p in range(s.partitions)
        ],
    )
    second = run_until(svc, lambda r: len(r) >= 1)[0]
    assert second.manifest["window"]["start_ms"] == T0 + WEEK
    assert second.manifest["dropped"].get("selection.duplicate", 0) >= 1  # against window 0's kept keys
    svc.close()
    store = DatasetStore(s.datasets_url)
    first_id = first.dataset_id
    first = SimpleNamespace(dataset_id=store.newest_version(first_id), manifest=None)
    first.manifest = store.manifest(first.dataset_id)
    assert first.dataset_id != first_id and first.manifest["supersedes"] == first_id and not store.exists(first_id)

    for ds in (first.dataset_id, second.dataset_id):
        out = cli(s, "verify", ds)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith(f"{ds}: rebuilt from the log: identical")
    report = json.loads(cli(s, "verify", first.dataset_id, "--json").stdout)
    assert report["identical"] and report["rebuilt_id"] == first.dataset_id
    assert report["inputs"]["erasure"] == {
        "requests": 2,
        "ids": 6,
        "matched": True,
        "used": "every request on the topic",
    }
    assert (
        report["inputs"]["gold"] == 29 and report["files_compared"] == len(first.manifest["files"]) + 2
    )  # + manifest.json, README.md (the card)

    # one byte of one stored shard changed: exit 1, and the shard is named
    shard = next(
        sh["path"] for sh in first.manifest["shards"] if sh["kind"] == "sft" and sh["path"].endswith(".jsonl")
    )
    path = Path(s.datasets_url) / first.dataset_id / shard
    data = bytearray(path.read_bytes())
    at = data.index(b'"content":"') + len(b'"content":"')  # a letter of a text
    data[at] = ord("X") if data[at] != ord("X") else ord("Y")
    path.write_bytes(bytes(data))
    out = cli(s, "verify", first.dataset_id)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DIFFERENT (1 of" in out.stdout and shard in out.stdout and "changed after the seal" in out.stdout
    assert "messages[0].content" in out.stdout and "question number" not in out.stdout  # field names, never texts
    report = json.loads(cli(s, "verify", first.dataset_id, "--json").stdout)
    assert not report["identical"] and [f["path"] for f in report["files"]] == [shard]
    assert report["files"][0]["first_difference"] == at and report["files"][0]["matches_manifest"] is False

    missing = cli(s, "verify", "ds-nope")
    assert (
        missing.returncode == 2
        and missing.stderr.startswith("flywheel: error:")
        and len(missing.stderr.strip().splitlines()) == 1
    )
    # the rebuilds wrote nothing into the store
    assert sorted(p.name for p in Path(s.datasets_url).iterdir() if not p.name.startswith(".")) == sorted(
        [first.dataset_id, second.dataset_id]
    )


def test_a_builder_waits_for_a_reset_and_steps_down_when_its_lease_is_gone(ds_settings):
    from streams.datasets.service import RESET_MARK, DatasetService, state_key
    from streams.metrics import DatasetMetrics
    from tests.integration.helpers import close_after_test
    from tests.integration.test_clocks import caught_up, step_until

    s = ds_settings
    r = redis.Redis.from_url(s.redis_url)
    metrics = DatasetMetrics()
    svc = close_after_test(
        DatasetService(s, GatePolicy(), DatasetStore(s.datasets_url), redis.Redis.from_url(s.redis_url), metrics)
    )
    # while `flywheel clocks reset` holds the lease the builder stands by; when the reset lets go it starts (no takeover)
    r.set(lease_key(s), RESET_MARK + b'{"partition": 0}', px=60_000)
    assert svc.step(0.2) == [] and not svc.active and svc.consumer is None
    r.delete(lease_key(s))
    send(
        s,
        [
            (s.topic_passed, None, c.request_id.encode(), enc(c), None)
            for c in (candidate(i, T0 + i * 3_600_000) for i in range(12))
        ],
    )
    step_until(svc, caught_up(svc, s))
    assert svc.active and metric_value(_text(metrics), ACTIVE) == 1 and metric_value(_text(metrics), TAKEOVERS) == 0
    saved = r.get(state_key(s))

    # the lease lapsed (a long pause) and another builder took it: the next batch finds out before it is written
    other = b'{"host": "elsewhere", "pid": 1}'
    r.set(lease_key(s), other, px=60_000)
    send(
        s,
        [
            (s.topic_passed, p, f"due-{p}".encode(), enc(candidate(900 + p, T0 + 22 * DAY_MS)), None)
            for p in range(s.partitions)
        ],
    )
    sealed: list = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        sealed += svc.step(0.2)
    assert sealed == [] and not svc.active and svc.consumer is None and metric_value(_text(metrics), ACTIVE) == 0
    assert (
        r.get(state_key(s)) == saved and r.get(lease_key(s)) == other
    )  # nothing written, the other's lease untouched
    assert DatasetStore(s.datasets_url).list() == []

    # the other one lets go: this one takes over, from the saved state, and seals the window
    r.delete(lease_key(s))
    first = run_until(svc, lambda got: len(got) >= 1, timeout=30)[0]
    assert first.manifest["counts"]["records"] == 12 and svc.active
    assert metric_value(_text(metrics), TAKEOVERS) == 1


def _text(metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()
