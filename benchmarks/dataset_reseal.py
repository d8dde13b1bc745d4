#!/usr/bin/env python
"""Re-sealing one window of 1,000,000 candidates without one user (an erasure): time and peak RSS.

    .venv/bin/python benchmarks/dataset_reseal.py                      # 1,000,000 candidates
    .venv/bin/python benchmarks/dataset_reseal.py --candidates 200000  # a shorter run

1. seal     as benchmarks/dataset_seal.py: `flywheel datasets run` in a child process reads N passed
            candidates (users drawn from 50,000) as they are produced, and seals their window.
            That builder is then stopped (SIGTERM).
2. reseal   a fresh `flywheel datasets run` (its peak RSS is the re-seal's alone: it has nothing
            else to read) takes the lease; one erasure request for a user with records in the
            window is sent. The builder re-seals the window from the log without the user
            (pass 1 and pass 2 read the log: the window's spool went with the seal), publishes
            the new version, announces it and deletes the old one. Wall time from the request to
            the "dataset re-sealed" log line, the re-seal alone (its own `seconds`), and the peak
            RSS (VmHWM) of the builder and its pool processes, added.
3. check    the new version holds every record of the old one but the user's.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataset_seal as ds  # noqa: E402
import join_throughput as jt  # noqa: E402

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, free_port, redis_answers  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402

KEY = "dataset-reseal benchmark key"


def log(msg: str) -> None:
    print(f"[dataset_reseal] {msg}", file=sys.stderr, flush=True)


def wait_line(path: Path, needle: str, proc: subprocess.Popen, timeout: float, sample=None) -> dict | None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if sample is not None:
            sample()
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                try:
                    return json.loads(line)
                except ValueError:
                    return {}
        if proc.poll() is not None:
            raise jt.BenchError(f"the builder exited ({proc.returncode}); see {path}")
        time.sleep(0.2)
    raise jt.BenchError(f"no {needle!r} within {timeout:.0f}s; see {path}")


def a_user_in(s: Settings, store, manifest: dict) -> str:
    """A user with records in the dataset: the user of a candidate on the log whose request is in a shard."""
    from confluent_kafka import Consumer, TopicPartition

    from schemas.codec import Codec

    shard = next(sh["path"] for sh in manifest["shards"] if sh["path"].endswith(".jsonl"))
    with store.open(f"{manifest['dataset_id']}/{shard}") as f:
        kept = {json.loads(line)["metadata"]["request_id"] for line in f.read().decode().splitlines()[:1000]}
    partition = int(shard.rsplit("-p", 1)[1][:3])
    c = Consumer({"bootstrap.servers": s.broker_url, "group.id": "reseal-bench-peek", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(s.topic_passed, partition, 0)])
        for _ in range(200_000):
            m = c.poll(1.0)
            if m is None:
                break
            if not m.error():
                cand = Codec().decode("candidate", m.value())
                if cand["request_id"] in kept:
                    return cand["user_id"]
    finally:
        c.close()
    raise jt.BenchError("no user of the dataset found on the log")


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="dataset-reseal-"))
    run_id = uuid.uuid4().hex[:8]
    broker = redis_server = None
    try:
        redis_url = "redis://127.0.0.1:6379/0"
        if not redis_answers(redis_url):
            redis_url = f"redis://127.0.0.1:{free_port()}/0"
            redis_server = EmbeddedRedis(redis_url, workdir / "redis")
        broker = EmbeddedBroker(workdir / "broker")
        s = Settings(
            kafka_bootstrap=broker.bootstrap,
            redis_url=redis_url,
            app_id=f"rsbench-{run_id}",
            metrics_port=0,
            datasets_metrics_port=0,
            dataset_store=str(workdir / "store"),
            idle_partition_ms=2000,
            pseudonym_key=KEY,
            topic_passed=f"r{run_id}.passed",
            topic_rejected=f"r{run_id}.rejected",
            topic_datasets_ready=f"r{run_id}.ready",
            topic_erasure=f"r{run_id}.erasure",
            topic_verdicts=f"r{run_id}.verdicts",
        ).validate()
        create_topics(s)
        env = {**os.environ, **s.to_env(), "FLYWHEEL_LOG_LEVEL": "INFO"}

        def start(name: str) -> tuple[subprocess.Popen, Path]:
            path = workdir / f"{name}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "flywheel.cli", "datasets", "run"],
                env=env,
                stdout=open(path, "wb"),
                stderr=subprocess.STDOUT,
            )
            wait_line(path, '"dataset builder started"', proc, 120)
            return proc, path

        # 1: the seal, as dataset_seal.py makes it
        sealer, seal_log = start("seal")
        try:
            started = time.perf_counter()
            size = ds.produce(s, args.candidates, args.seed)
            log(
                f"produced {args.candidates:,} candidates ({size / 1e6:,.0f} MB of Avro) in {time.perf_counter() - started:.1f}s"
            )
            sealed = wait_line(seal_log, '"dataset sealed"', sealer, args.timeout)
            wait_line(seal_log, '"dataset ready"', sealer, args.timeout)
        finally:
            sealer.send_signal(signal.SIGTERM)
            sealer.wait(60)
        from flywheel.datastore import DatasetStore

        store = DatasetStore(s.datasets_url)
        (before,) = store.list()
        log(f"sealed {before['dataset_id']}: {before['counts']['records']:,} records (seal {sealed.get('seconds')}s)")

        # 2: the re-seal, in a fresh builder
        user = args.user or a_user_in(s, store, before)
        peaks: dict[int, int] = {}
        resealer, reseal_log = start("reseal")
        proc = resealer

        def sample() -> None:
            for pid in ds.descendants(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0), ds.vm_hwm_kib(pid))

        try:
            wait_line(reseal_log, '"dataset builder active', resealer, 120)
            sample()
            idle_peak = sum(peaks.values())
            from confluent_kafka import Producer

            from flywheel.sdk import DEFAULT_CONFIG
            from schemas.codec import Codec
            from schemas.records import ErasureRequest

            p = Producer(
                {**{k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}, "bootstrap.servers": s.broker_url}
            )
            started = time.perf_counter()
            p.produce(
                s.topic_erasure,
                key=user.encode(),
                value=Codec().encode("erasure", ErasureRequest(user, int(time.time() * 1000)).to_dict()),
            )
            if p.flush(30):
                raise jt.BenchError("the erasure request was not acknowledged")
            del p
            recorded = wait_line(reseal_log, '"erasure recorded"', resealer, 120, sample)
            if not recorded.get("datasets_to_reseal"):
                raise jt.BenchError(f"{user} is in no sealed dataset: nothing to re-seal")
            done = wait_line(reseal_log, '"erasure: dataset re-sealed"', resealer, args.timeout, sample)
            wall = time.perf_counter() - started
            sample()
        finally:
            resealer.send_signal(signal.SIGTERM)
            resealer.wait(60)
        peak = sum(peaks.values())

        # 3: the new version: every record but the user's
        (after,) = store.list()
        if after.get("supersedes") != before["dataset_id"] or store.exists(before["dataset_id"]):
            raise jt.BenchError(f"the re-seal did not replace {before['dataset_id']}: {after['dataset_id']}")
        removed = before["counts"]["records"] - after["counts"]["records"]
        log(
            f"re-sealed {after['dataset_id']} ({after['resealed']['mode']}): {after['counts']['records']:,} records, "
            f"{removed} removed, in {wall:.1f}s (re-seal {done.get('seconds')}s), peak RSS {peak / 1024:,.0f} MiB "
            f"over {len(peaks)} processes"
        )
        return {
            "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
            "candidates": args.candidates,
            "avro_mb": size / 1e6,
            "records_before": before["counts"]["records"],
            "records_after": after["counts"]["records"],
            "records_removed": removed,
            "mode": after["resealed"]["mode"],
            "seal_s": sealed.get("seconds"),
            "wall_s": wall,
            "reseal_s": done.get("seconds"),
            "peak_rss_mib": peak / 1024,
            "idle_rss_mib": idle_peak / 1024,
            "processes": len(peaks),
            "builder_rss_mib": peaks.get(resealer.pid, 0) / 1024,
        }
    finally:
        if broker is not None:
            broker.stop()
        if redis_server is not None:
            redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # about the window's size, twice


def table(r: dict) -> str:
    return "\n".join(
        [
            f"dataset re-seal on {r['machine']}: {r['candidates']:,} candidates ({r['avro_mb']:,.0f} MB Avro) in one window, one user erased",
            f"  the seal (for comparison, from the spool)      {r['seal_s'] if r['seal_s'] is not None else float('nan'):8.1f} s",
            f"  erasure request to re-sealed (read, seal from the log, publish, announce, delete)  {r['wall_s']:8.1f} s",
            f"  the re-seal alone                               {r['reseal_s'] if r['reseal_s'] is not None else float('nan'):8.1f} s  ({r['mode']})",
            f"  peak RSS, builder + pool, added                 {r['peak_rss_mib']:8.0f} MiB  ({r['processes']} processes, "
            f"the builder alone {r['builder_rss_mib']:.0f} MiB, idle before the request {r['idle_rss_mib']:.0f} MiB)",
            f"  records: {r['records_before']:,} -> {r['records_after']:,} ({r['records_removed']} removed)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(prog="dataset_reseal", description=__doc__.splitlines()[0])
    p.add_argument(
        "--candidates", type=jt.positive_int, default=1_000_000, help="candidates in the window (default: 1000000)"
    )
    p.add_argument(
        "--user", default="", help="the user erased (default: the first candidate's; users are user-0 .. user-49999)"
    )
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds the seal and the re-seal may each take (default: 900)"
    )
    p.add_argument("--seed", type=int, default=0)
    return jt.report("dataset_reseal", run, table, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
