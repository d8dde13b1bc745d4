#!/usr/bin/env python
"""Sealing one window of 1,000,000 passed candidates: wall time and peak RSS of the builder.

    .venv/bin/python benchmarks/dataset_seal.py                      # 1,000,000 candidates
    .venv/bin/python benchmarks/dataset_seal.py --candidates 100000  # a quick run

1. builder   `flywheel datasets run` in a child process, started first (live, as in production):
             it reads the candidates into its window clock and its local spool as they come.
             With --catch-up it starts only after step 2, on the whole backlog.
2. produce   N passed candidates (about 700 bytes of Avro each, 4 partitions, 8 task types, 10 %
             corrections with preference pairs) into one 7-day window on the embedded broker, then
             one candidate per partition 14 days past the window's end, so the window is due.
3. seal      the builder seals the window (pass 1 over the spool, selection, pass 2 writing Avro +
             JSONL shards, manifest, atomic publish) and announces it. Wall time from the window
             being due (the producer done) to the ready event, the seal alone (from its log line),
             and the peak RSS (VmHWM) of the builder and its pool processes over the whole run.
4. ceiling   in a child process: a bare confluent-kafka consumer reading the same records once and
             writing their raw bytes to a file: the least any seal can cost.

Targets (the issue): under 60 s and under 1 GiB on this machine.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import join_throughput as jt  # noqa: E402

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, free_port, redis_answers  # noqa: E402
from flywheel.settings import DAY_MS, Settings  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from schemas.records import TrainingCandidate  # noqa: E402

WEEK = 7 * DAY_MS
T0 = (1_767_225_600_000 // WEEK) * WEEK
TASKS = ["qa", "qa", "qa", "sql", "sql", "summarise", "code", "legal", "medical", "tax"]
WORDS = "the quick answer explains how to configure the service retry policy with backoff and jitter".split()

CEILING = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, parts, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
started = time.perf_counter()
for rnd in range(1):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ceiling", "enable.auto.commit": False,
                  "fetch.max.bytes": 16 * 1024 * 1024, "queued.max.messages.kbytes": 65536,
                  "receive.message.max.bytes": 1024 * 1024 * 1024})
    c.assign([TopicPartition(topic, p, 0) for p in range(parts)])
    got = 0
    with open(out, "wb") as f:
        while got < n:
            for m in c.consume(2000, 1.0):
                if not m.error():
                    got += 1
                    f.write(m.value())
    c.close()
print(time.perf_counter() - started)
"""


def log(msg: str) -> None:
    print(f"[dataset_seal] {msg}", file=sys.stderr, flush=True)


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def produce(settings: Settings, n: int, seed: int) -> int:
    from confluent_kafka import Producer

    from flywheel.sdk import DEFAULT_CONFIG

    rng = random.Random(seed)
    codec = Codec()
    conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
    p = Producer(
        {
            **conf,
            "bootstrap.servers": settings.broker_url,
            "linger.ms": 50,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
        }
    )
    size = 0
    for i in range(n):
        corrected = i % 10 == 0
        response = text(rng, 40)
        c = TrainingCandidate(
            request_id=f"req-{i:08d}",
            timestamp=T0 + rng.randrange(WEEK),
            user_id=f"user-{rng.randrange(50_000)}",
            session_id=f"s-{i}",
            prompt=f"question {i}: " + text(rng, 25),
            response=response,
            user_action="corrected" if corrected else "accepted",
            task_type=rng.choice(TASKS),
            model_version="m1",
            label="sft_correction" if corrected else "sft_positive",
            correction=text(rng, 40) if corrected else "",
            quality_score=0.8,
            scores={"quality": 0.8, "toxicity": 0.01},
            policy_version="default-1@bench",
            uncertainty=rng.random() if i % 20 == 0 else None,
        )
        c.target = c.correction if corrected else response
        if corrected:
            c.pair_chosen, c.pair_rejected = c.correction, response
        value = codec.encode("candidate", c.to_dict())
        size += len(value)
        while True:
            try:
                p.produce(settings.topic_passed, key=c.request_id.encode(), value=value)
                break
            except BufferError:
                p.poll(0.1)
        if i % 10_000 == 0:
            p.poll(0)
    for part in range(settings.partitions):  # past the boundary on every partition: the window is ready
        c = TrainingCandidate(
            request_id=f"tick-{part}",
            timestamp=T0 + WEEK + 14 * DAY_MS + 1,
            user_id="u",
            session_id="s",
            prompt="p",
            response="r",
            user_action="accepted",
            task_type="qa",
        )
        p.produce(settings.topic_passed, key=None, value=codec.encode("candidate", c.to_dict()), partition=part)
    if p.flush(300):
        raise jt.BenchError("the producer did not finish")
    return size


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (the seal's pool processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="dataset-bench-"))
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
            app_id=f"dsbench-{run_id}",
            metrics_port=0,
            datasets_metrics_port=0,
            dataset_store=str(workdir / "store"),
            idle_partition_ms=2000,
            topic_passed=f"b{run_id}.passed",
            topic_rejected=f"b{run_id}.rejected",
            topic_datasets_ready=f"b{run_id}.ready",
            topic_erasure=f"b{run_id}.erasure",
            topic_verdicts=f"b{run_id}.verdicts",
        ).validate()
        create_topics(s)
        env = {**os.environ, **s.to_env(), "FLYWHEEL_LOG_LEVEL": "INFO"}
        log_path = workdir / "builder.log"
        peaks: dict[int, int] = {}  # pid -> its peak RSS; the builder's and its pool processes'
        seal_s = None
        proc = None

        def start_builder() -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "flywheel.cli", "datasets", "run"],
                env=env,
                stdout=open(log_path, "wb"),
                stderr=subprocess.STDOUT,
            )

        def sample() -> None:
            if proc is not None:
                for pid in descendants(proc.pid):
                    peaks[pid] = max(peaks.get(pid, 0), vm_hwm_kib(pid))

        try:
            if not args.catch_up:  # live: the builder reads the window as it is produced, as in production
                proc = start_builder()
                while '"dataset builder started"' not in log_path.read_text(errors="replace"):
                    if proc.poll() is not None:
                        raise jt.BenchError(f"the builder exited ({proc.returncode}); see {log_path}")
                    time.sleep(0.1)
            started = time.perf_counter()
            size = produce(s, args.candidates, args.seed)
            produced_s = time.perf_counter() - started
            log(f"produced {args.candidates:,} candidates ({size / 1e6:,.0f} MB of Avro) in {produced_s:.1f}s")
            started = time.perf_counter()  # the window is due: its boundary is on the log
            if args.catch_up:  # the builder starts on the whole backlog
                proc = start_builder()
            while time.perf_counter() - started < args.timeout:
                sample()
                text_log = log_path.read_text(errors="replace")
                if '"dataset ready"' in text_log:
                    for line in text_log.splitlines():
                        if '"dataset sealed"' in line:
                            sealed_line = json.loads(line)
                            seal_s, spooled = sealed_line.get("seconds"), sealed_line.get("from_spool")
                    break
                if proc.poll() is not None:
                    raise jt.BenchError(f"the builder exited ({proc.returncode}); see {log_path}")
                time.sleep(0.2)
            else:
                raise jt.BenchError(f"no dataset within {args.timeout:.0f}s; see {log_path}")
            wall = time.perf_counter() - started
            sample()
            peak = sum(peaks.values())  # each process's own peak, added: at least the tree's true peak
            builder_peak = peaks.get(proc.pid, 0)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        from flywheel.datastore import DatasetStore

        manifests = DatasetStore(s.datasets_url).list()
        if len(manifests) != 1:
            raise jt.BenchError(f"expected one dataset, found {len(manifests)}")
        m = manifests[0]
        log(
            f"sealed {m['dataset_id']}: {m['counts']['records']:,} records in {wall:.1f}s (seal {seal_s}s), "
            f"peak RSS {peak / 1024:,.0f} MiB over {len(peaks)} processes (builder {builder_peak / 1024:,.0f} MiB)"
        )

        out = workdir / "ceiling.bin"
        ceiling = subprocess.run(
            [
                sys.executable,
                "-c",
                CEILING,
                s.broker_url,
                s.topic_passed,
                str(s.partitions),
                str(args.candidates),
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        if ceiling.returncode:
            raise jt.BenchError(f"the ceiling failed: {ceiling.stderr[-300:]}")
        ceiling_s = float(ceiling.stdout.strip())
        log(f"ceiling: one bare read and one raw write in {ceiling_s:.1f}s")
        store_bytes = sum(sh["bytes"] for sh in m["shards"])
        return {
            "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
            "candidates": args.candidates,
            "avro_mb": size / 1e6,
            "records": m["counts"]["records"],
            "splits": m["counts"]["split"],
            "shards": len(m["shards"]),
            "output_mb": store_bytes / 1e6,
            "mode": "catch-up" if args.catch_up else "live",
            "produce_s": produced_s,
            "from_spool": spooled,
            "wall_s": wall,
            "seal_s": seal_s,
            "peak_rss_mib": peak / 1024,
            "builder_rss_mib": builder_peak / 1024,
            "processes": len(peaks),
            "ceiling_s": ceiling_s,
            "ratio": ceiling_s / (seal_s or wall),
        }
    finally:
        if broker is not None:
            broker.stop()
        if redis_server is not None:
            redis_server.stop()


def table(r: dict) -> str:
    due = "builder, start to ready event" if r["mode"] == "catch-up" else "window due to ready event"
    return "\n".join(
        [
            f"dataset seal on {r['machine']}: {r['candidates']:,} candidates ({r['avro_mb']:,.0f} MB Avro) in one window, {r['mode']}",
            f"  produced in                         {r['produce_s']:8.1f} s"
            + ("  (the builder reading as it came)" if r["mode"] == "live" else ""),
            f"  {due:<34s}{r['wall_s']:8.1f} s",
            f"  the seal (read, select, write, publish) {r['seal_s'] if r['seal_s'] is not None else float('nan'):5.1f} s  (target < 60 s;"
            f" partitions read from the spool: {r['from_spool']})",
            f"  peak RSS, builder + pool, added    {r['peak_rss_mib']:8.0f} MiB  (target < 1024 MiB; {r['processes']} processes,"
            f" the builder alone {r['builder_rss_mib']:.0f} MiB)",
            f"  ceiling: one bare read + raw write  {r['ceiling_s']:8.1f} s  -> the seal at {r['ratio']:.0%} of it",
            f"  output: {r['records']:,} records, {r['shards']} shards, {r['output_mb']:,.0f} MB; {r['splits']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(prog="dataset_seal", description=__doc__.splitlines()[0])
    p.add_argument(
        "--candidates", type=jt.positive_int, default=1_000_000, help="candidates in the window (default: 1000000)"
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds the builder may take (default: 900)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--catch-up",
        action="store_true",
        help="start the builder only after the whole window is on the log (a backlog to catch up), "
        "instead of reading it as it is produced",
    )
    return jt.report("dataset_seal", run, table, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
