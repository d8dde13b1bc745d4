#!/usr/bin/env python
"""HTTP ingest benchmark: `flywheel ingest` as a process on the embedded broker, loaded by an asyncio
client, beside two ceilings measured in the same run.

    .venv/bin/python benchmarks/ingest_throughput.py                 # 20 s per phase
    .venv/bin/python benchmarks/ingest_throughput.py --seconds 5     # a quick run

Events are conversation-sized (4 turns, 3 retrieved passages, ~1.6 KB of JSON). Phases, one after
the other:

1. in process   the ingest's own work without HTTP, in this process: parse each event's JSON,
                 `flywheel.ingest.server.validate` (the codec's checks, encode), produce, then flush:
                 the events/s ceiling for one ingest process on this machine and broker.
2. http ceiling  GET /healthz of the running ingest with the same client and concurrency: requests/s
                 of the HTTP stack and the client on this machine with no validation and no Kafka.
3. single        POST /v1/interactions, one event a request, --concurrency requests in flight.
4. batch         POST /v1/batch of --batch events a request.

For 3 and 4: requests/s, events/s, p50 / p99 latency (each answer waits for the broker's acks), 429s;
then every accepted event is counted on the topic (high watermarks): none may be missing.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from flywheel.embedded import EmbeddedBroker, free_port  # noqa: E402
from flywheel.ingest.server import validate  # noqa: E402
from flywheel.sdk import FlywheelProducer  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402
from schemas.codec import parse_json  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex


def event(i: int, now_ms: int) -> dict:
    return {
        "request_id": f"b-{uuid.uuid4().hex[:12]}-{i}",
        "session_id": f"s-{i % 500}",
        "user_id": f"u-{i % 2000}",
        "event_time": now_ms,
        "model_version": "m-3",
        "task_type": "support",
        "system": "You are the support assistant of Acme. Answer from the documents; say so when they do not hold the answer.",
        "messages": [
            {"role": "user", "content": f"Hi, my order {i} has not arrived yet and it has been two weeks."},
            {"role": "assistant", "content": "I am sorry to hear that. Could you tell me the country it ships to?"},
            {"role": "user", "content": "Germany. I paid for express shipping, which should take three days."},
        ],
        "retrieved_context": [
            "Express shipping within the EU takes 2-4 business days after dispatch.",
            "Orders that have not arrived 10 business days after dispatch are refunded in full or sent again.",
            "Refunds are paid to the original payment method within 5 business days of approval.",
        ],
        "response": "Express orders to Germany arrive in 2-4 business days, so yours is late. I can send it again "
        "or refund it in full; the refund reaches your card within 5 business days.",
        "latency_ms": 812.5,
    }


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def load(url: str, seconds: float, concurrency: int, make_body, headers: dict) -> dict:
    latencies: list[float] = []
    counts = {"ok": 0, "events": 0, "429": 0, "other": 0}
    stop_at = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, w: int):
        i = 0
        while time.perf_counter() < stop_at:
            body, n = make_body(w, i)
            i += 1
            t = time.perf_counter()
            if body is None:
                async with session.get(url) as r:
                    await r.read()
                    status = r.status
            else:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
            latencies.append(time.perf_counter() - t)
            if status == 200:
                counts["ok"] += 1
                counts["events"] += n
            elif status == 429:
                counts["429"] += 1
                await asyncio.sleep(0.05)
            else:
                counts["other"] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests_per_s": counts["ok"] / elapsed,
        "events_per_s": counts["events"] / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "requests": counts["ok"],
        "events": counts["events"],
        "throttled": counts["429"],
        "errors": counts["other"],
        "seconds": elapsed,
    }


def topic_count(bootstrap: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        c.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--inprocess-events", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args(argv)
    run = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-ingest-bench-"))
    broker = EmbeddedBroker(workdir / "broker")
    proc = None
    try:
        settings = Settings.from_env(
            kafka_bootstrap=broker.bootstrap,
            app_id=f"bench-{run}",
            data_dir=str(workdir / "data"),
            partitions=args.partitions,
            topic_interactions=f"ib{run}.interactions",
            topic_actions=f"ib{run}.actions",
        )
        create_topics(settings)
        now = int(time.time() * 1000)
        sample = json.dumps(event(0, now)).encode()
        load_before = os.getloadavg()

        # 1. the ingest's own work without HTTP: parse, validate (flywheel.ingest.server.validate), produce, flush
        producer = FlywheelProducer(settings)
        raw = [json.dumps(event(i, now)).encode() for i in range(args.inprocess_events)]
        t = time.perf_counter()
        for body in raw:
            ev, value = validate(
                producer.codec, producer, "interaction", parse_json(body), now_ms=now, max_ahead_ms=-1
            )
            producer.send_encoded(ev, value)
        producer.flush(120)
        inprocess_rate = args.inprocess_events / (time.perf_counter() - t)
        producer.close()
        del raw

        # the ingest process
        port = free_port()
        env = {**os.environ, **settings.to_env(), "FLYWHEEL_INGEST_TOKENS": TOKEN}
        proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "ingest", "--port", str(port), "--max-pending", "20000"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        proc.stdout.readline()  # the announcement
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        def single(w, i):
            e = event(w * 1_000_000 + i, now)
            return json.dumps(e).encode(), 1

        def batch(w, i):
            return json.dumps(
                {"interactions": [event(w * 1_000_000 + i * args.batch + k, now) for k in range(args.batch)]}
            ).encode(), args.batch

        http_ceiling = asyncio.run(
            load(base + "/healthz", args.seconds, args.concurrency, lambda w, i: (None, 0), headers)
        )
        one = asyncio.run(load(base + "/v1/interactions", args.seconds, args.concurrency, single, headers))
        many = asyncio.run(load(base + "/v1/batch", args.seconds, max(4, args.concurrency // 4), batch, headers))
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
        proc = None
        load_after = os.getloadavg()
        on_topic = topic_count(broker.bootstrap, settings.topic_interactions, args.partitions)
        accepted = args.inprocess_events + one["events"] + many["events"]

        rows = [
            ("in process (no HTTP)", "", f"{inprocess_rate:,.0f}", "", ""),
            (
                "http ceiling (GET /healthz)",
                f"{http_ceiling['requests_per_s']:,.0f}",
                "",
                f"{http_ceiling['p50_ms']:.1f}",
                f"{http_ceiling['p99_ms']:.1f}",
            ),
            (
                "POST /v1/interactions",
                f"{one['requests_per_s']:,.0f}",
                f"{one['events_per_s']:,.0f}",
                f"{one['p50_ms']:.1f}",
                f"{one['p99_ms']:.1f}",
            ),
            (
                f"POST /v1/batch x{args.batch}",
                f"{many['requests_per_s']:,.0f}",
                f"{many['events_per_s']:,.0f}",
                f"{many['p50_ms']:.1f}",
                f"{many['p99_ms']:.1f}",
            ),
        ]
        print(f"{'phase':32} {'requests/s':>11} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for r in rows:
            print(f"{r[0]:32} {r[1]:>11} {r[2]:>10} {r[3]:>8} {r[4]:>8}")
        print(
            f"event JSON {len(sample)} B; concurrency {args.concurrency} (batch: {max(4, args.concurrency // 4)}); "
            f"{args.seconds:g} s a phase; load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs; "
            f"accepted {accepted:,}, on the topic {on_topic:,}; ingest exit {rc}"
        )
        print(
            json.dumps(
                {
                    "inprocess_events_per_s": round(inprocess_rate),
                    "http_ceiling": http_ceiling,
                    "single": one,
                    "batch": many,
                    "accepted": accepted,
                    "on_topic": on_topic,
                    "lost": accepted - on_topic,
                    "event_bytes": len(sample),
                    "load_before": load_before[0],
                    "load_after": load_after[0],
                    "ingest_exit": rc,
                },
                default=round,
            )
        )
        return 0 if on_topic == accepted and rc == 0 else 1
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
