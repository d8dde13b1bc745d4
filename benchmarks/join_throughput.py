#!/usr/bin/env python
"""Join throughput benchmark: interaction + action events through the join on the embedded broker.

    .venv/bin/python benchmarks/join_throughput.py                # 200,000 events, 4 partitions
    .venv/bin/python benchmarks/join_throughput.py --events 20000 # a quick run

Phases, one after the other (never two at once, so they do not share the CPU):

1. produce   Start an embedded broker in a temp dir, create topics of their own, and pre-produce
             N/2 interactions and N/2 actions (one action per request, pre-encoded with the Codec,
             keyed by request_id, confluent-kafka with the SDK's `murmur2_random` partitioner), then
             one tick per partition per source topic far enough ahead that every request settles.
2. ceiling   A bare aiokafka loop that consumes every source record and produces its value to a
             topic of its own: a best-effort ceiling for "consume + produce" in Python on this broker.
3. worker    `flywheel worker` as a subprocess on the same topics with a fresh app id. From the
             first consumed event (metrics) until the last candidate is on the candidates topic
             (sum of high watermarks): events/s, and the worker's peak RSS.
4. latency   With the worker caught up, live traffic paced at --live-rate, with event time moving
             fast enough that requests settle all through the phase; p50/p99 of the worker's
             `flywheel_join_latency_seconds` histogram over the phase (difference of two scrapes).

Prints a table, then one JSON line. Exits 1 with a one-line error when a phase fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flywheel.embedded import EmbeddedBroker, free_port  # noqa: E402
from flywheel.settings import ENV_PREFIX, Settings  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from schemas.codec import TICK_HEADER  # noqa: E402

TARGET_EVENTS_PER_S = 10_000
TARGET_RATIO = 0.40
# The worker runs with a 4 s settle window, so that in the live phase, where event time moves at
# wall-clock speed, requests settle while traffic flows and the latency is the join's own.
SETTLE_WINDOW_MS = 4_000
WATERMARK_DELAY_MS = 2_000  # covers the wall-clock skew between the two topics at live rates
MAX_ACTION_DELAY_MS = 1_500  # an action comes 0.1 .. 1.5 s after its response
LIVE_MIN_SECONDS = 15.0  # the latency phase lasts at least this long
BACKLOG_SPACING_MS = 100  # one request per 100 ms of event time in the pre-produced backlog
ACTION_MIX = (  # one action per request
    ("accepted", 0.40),
    ("copied", 0.15),
    ("corrected", 0.10),
    ("regenerated", 0.10),
    ("abandoned", 0.05),
    ("thumbs_up", 0.10),
    ("thumbs_down", 0.05),
    ("rated", 0.05),
)
WORDS = (
    "the of and to in is that for it as with was on be by this are or an at from which can have not you "
    "model answer function return value error request response user data query result python code list "
    "string number table column file server client cache index token prompt context summary example "
    "please explain how why what when where should would could using create update delete select join "
    "order group filter sort parse format convert check test build deploy config setting option version"
).split()


class BenchError(RuntimeError):
    """A phase failed; the message is the one line printed before exiting 1."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- traffic --------------------------------------------------------------------------------------
@dataclass
class Traffic:
    interactions: list[tuple[bytes, bytes, int]]  # (key, value, event_time), event-time order
    actions: list[tuple[bytes, bytes, int]]
    last_event_time: int

    @property
    def events(self) -> int:
        return len(self.interactions) + len(self.actions)

    def merged(self, interactions_topic: str, actions_topic: str) -> list[tuple[str, bytes, bytes]]:
        """Both sources in one event-time order (interactions first on ties): how live traffic arrives."""
        rows = [(t, 0, interactions_topic, k, v) for k, v, t in self.interactions]
        rows += [(t, 1, actions_topic, k, v) for k, v, t in self.actions]
        rows.sort(key=lambda r: (r[0], r[1]))
        return [(topic, k, v) for _, _, topic, k, v in rows]


class TrafficMaker:
    def __init__(self, codec: Codec, seed: int, conversation: bool = False):
        self.codec = codec
        self.conversation = conversation  # 4 earlier turns (one a tool call), 3 retrieved passages, a tool offered
        self.rng = random.Random(seed)
        # one long text to slice prompts and responses from: cheap, and not a single repeated string
        self.corpus = " ".join(self.rng.choices(WORDS, k=200_000))
        self.actions = [a for a, _ in ACTION_MIX]
        self.weights = [w for _, w in ACTION_MIX]

    def _text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        start = self.rng.randrange(0, len(self.corpus) - n)
        return self.corpus[start : start + n]

    def _passages(self) -> list[str]:
        return [self._text(200, 400) for _ in range(3)]

    def _conversation(self, rid: str, prompt: str) -> dict:
        """What a chat app with retrieval and one tool sends: the earlier turns and the one answered."""
        call = f"call-{rid[:8]}"
        return {
            "system": "You are the support assistant of a shop. Answer from the documents.",
            "messages": [
                {"role": "user", "content": self._text(60, 160)},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": call, "name": "lookup_order", "arguments": '{"order": "%s"}' % rid[:6]}],
                },
                {"role": "tool", "content": self._text(40, 120), "tool_call_id": call},
                {"role": "assistant", "content": self._text(80, 200)},
                {"role": "user", "content": prompt},
            ],
            "tools": [
                {
                    "name": "lookup_order",
                    "description": "Find an order by its number",
                    "parameters": '{"type": "object"}',
                }
            ],
        }

    def make(self, requests: int, start_ms: int, spacing_ms: float) -> Traffic:
        rng, enc = self.rng, self.codec.encode
        interactions, actions = [], []
        users = max(1, requests // 20)
        last = start_ms
        for i in range(requests):
            rid = "%032x" % rng.getrandbits(128)
            key = rid.encode()
            user = f"user-{rng.randrange(users):06d}"
            session = f"sess-{rng.randrange(users * 3):07d}"
            t = start_ms + int(i * spacing_ms)
            interactions.append(
                (
                    key,
                    enc(
                        "interaction",
                        {
                            "request_id": rid,
                            "session_id": session,
                            "user_id": user,
                            "event_time": t,
                            "model_version": "llama-3.1-8b-ft-2024-11-20",
                            "variant": rng.choice(("control", "treatment")),
                            "task_type": rng.choice(("qa", "code", "summarise", "chat")),
                            "prompt": (prompt := self._text(100, 250)),
                            "response": self._text(200, 350),
                            "retrieved_context": self._passages() if self.conversation else None,
                            "latency_ms": round(rng.uniform(200, 3000), 1),
                            "uncertainty": round(rng.random(), 4),
                            "metadata": {"app": "bench"},
                            **(self._conversation(rid, prompt) if self.conversation else {}),
                        },
                    ),
                    t,
                )
            )
            action = rng.choices(self.actions, self.weights)[0]
            at = t + rng.randint(100, MAX_ACTION_DELAY_MS)
            last = max(last, at)
            actions.append(
                (
                    key,
                    enc(
                        "action",
                        {
                            "request_id": rid,
                            "user_id": user,
                            "event_time": at,
                            "action": action,
                            "correction": self._text(150, 300) if action == "corrected" else None,
                            "rating": float(rng.randint(1, 5)) if action == "rated" else None,
                            "session_id": session,
                        },
                    ),
                    at,
                )
            )
        actions.sort(key=lambda r: r[2])
        return Traffic(interactions, actions, last)


def producer_config(bootstrap: str, compression: str | None) -> dict:
    """The SDK's producer settings (flywheel.sdk.DEFAULT_CONFIG: idempotent, acks=all, linger 5 ms,
    lz4, murmur2_random), with a queue large enough to pre-produce the backlog in one go."""
    from flywheel.sdk import DEFAULT_CONFIG

    config = {
        **DEFAULT_CONFIG,
        "bootstrap.servers": bootstrap,
        "client.id": "flywheel-bench",
        "log_level": 3,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    if compression:
        config["compression.type"] = compression
    return config


class Sender:
    """confluent-kafka producer that counts delivery errors instead of losing them."""

    def __init__(self, config: dict):
        from confluent_kafka import Producer

        self.producer = Producer(config)
        self.errors = 0
        self.first_error = None

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.errors += 1
            self.first_error = self.first_error or str(err)

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None, headers=None) -> None:
        kwargs = {"on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.01)

    def ticks(self, topics: list[str], partitions: int, event_time_ms: int) -> int:
        headers = [(TICK_HEADER, str(event_time_ms).encode())]
        for topic in topics:
            for p in range(partitions):
                self.send(topic, None, b"", partition=p, headers=headers)
        return len(topics) * partitions

    def flush(self, timeout: float) -> None:
        left = self.producer.flush(timeout)
        if left:
            raise BenchError(f"producer: {left} records still queued after {timeout:.0f}s")
        if self.errors:
            raise BenchError(f"producer: {self.errors} records failed, first: {self.first_error}")


# -- broker helpers -------------------------------------------------------------------------------
class Offsets:
    def __init__(self, bootstrap: str):
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-offsets-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )

    def total(self, topic: str, partitions: int) -> int:
        from confluent_kafka import TopicPartition

        return sum(
            self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        )

    def close(self) -> None:
        self.consumer.close()


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(15)


# -- ceiling --------------------------------------------------------------------------------------
async def _ceiling(
    bootstrap: str, sources: list[str], out_topic: str, expected: int, timeout: float
) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        *sources,
        bootstrap_servers=bootstrap,
        group_id=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    # the worker's producer settings (Faust: acks=all, linger 5 ms), with a larger batch
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        await consumer.start()
        try:
            n, t0, pending = 0, None, []
            deadline = time.monotonic() + timeout
            while n < expected:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"ceiling: timed out after {timeout:.0f}s with {n} of {expected} records consumed"
                    )
                batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
                if not batches:
                    continue
                if t0 is None:
                    t0 = time.perf_counter()
                futs = []
                for tp, msgs in batches.items():
                    for m in msgs:
                        futs.append(await producer.send(out_topic, m.value, key=m.key, partition=tp.partition))
                    n += len(msgs)
                # wait for the previous batch's deliveries while this one is in flight: backpressure
                # without emptying the pipeline at every batch
                if pending:
                    await asyncio.gather(*pending)
                pending = futs
            await producer.flush()
            if pending:
                await asyncio.gather(*pending)
            return n, time.perf_counter() - t0
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def run_ceiling(
    bootstrap: str, sources: list[str], out_topic: str, expected: int, timeout: float
) -> tuple[int, float]:
    return asyncio.run(_ceiling(bootstrap, sources, out_topic, expected, timeout))


# -- the worker -----------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    out: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out[m[1]].append((dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


class Worker:
    def __init__(self, settings: Settings, workdir: Path):
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update({ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name)) for f in fields(Settings)})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        script = Path(sys.executable).parent / "flywheel"
        argv = [str(script), "worker"] if script.exists() else [sys.executable, "-m", "flywheel.cli", "worker"]
        self.log_path = workdir / "worker.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"the worker exited with code {self.proc.returncode}; last log line: {self.last_log_line()}"
            )

    def last_log_line(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "(empty log)"
        except OSError:
            return "(no log)"

    def scrape(self) -> dict[str, list[tuple[dict, float]]] | None:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as r:
                return parse_metrics(r.read().decode())
        except OSError:
            return None

    def memory_kb(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
        return out

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"the worker did not stop in {timeout:.0f}s; killing it")
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def metric_sum(metrics, name: str) -> float:
    return sum(v for _, v in metrics.get(name, ()))


def histogram(metrics, name: str) -> dict[float, float]:
    """Cumulative bucket counts by upper bound (inf for +Inf)."""
    return {float(labels["le"]): v for labels, v in metrics.get(name + "_bucket", ())}


def quantile(buckets: dict[float, float], q: float) -> tuple[float | None, bool]:
    """Prometheus' histogram_quantile over cumulative buckets: (seconds, True when beyond the last bound)."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None, False
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower, True
            if count == below:
                return le, False
            return lower + (le - lower) * (rank - below) / (count - below), False
        lower, below = le, count
    return lower, True


# -- the run --------------------------------------------------------------------------------------
def wait_for(what: str, check, timeout: float, interval: float, worker: Worker | None = None, progress=None):
    """Poll `check()` until it returns something truthy; BenchError naming `what()` on timeout."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 5
    while True:
        got = check()
        if got:
            return got
        if worker is not None:
            worker.check_alive()
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what()}")
        if progress is not None and now >= next_report:
            progress()
            next_report = now + 5
        time.sleep(interval)


def run(args) -> dict:
    codec = Codec()
    run_id = uuid.uuid4().hex[:8]
    nproc = os.cpu_count() or 1
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    requests = args.events // 2
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    broker = worker = offsets = None
    producers: list[Sender] = []  # dropped before the broker stops, so librdkafka does not log reconnects
    try:
        log(f"starting the embedded broker in {workdir}")
        broker = EmbeddedBroker(workdir / "broker")
        settings = Settings.from_env(
            kafka_bootstrap=broker.bootstrap,
            app_id=f"bench-{run_id}",
            data_dir=str(workdir / "data"),
            metrics_port=free_port(),
            partitions=args.partitions,
            settle_window_ms=SETTLE_WINDOW_MS,
            watermark_delay_ms=WATERMARK_DELAY_MS,
            topic_interactions=f"bench{run_id}.interactions",
            topic_actions=f"bench{run_id}.actions",
            topic_candidates=f"bench{run_id}.candidates",
            topic_deadletter=f"bench{run_id}.deadletter",
            roles=args.roles,
        )
        create_topics(settings)
        ceiling_topic = f"bench{run_id}.ceiling"
        create_topic(broker.bootstrap, ceiling_topic, args.partitions)
        sources = [settings.topic_interactions, settings.topic_actions]
        offsets = Offsets(broker.bootstrap)

        # 1. produce ----------------------------------------------------------------------------
        maker = TrafficMaker(codec, args.seed, conversation=args.conversation)
        start_ms = (int(time.time() * 1000) - 14 * 86_400_000) // 1000 * 1000  # two weeks ago
        log(f"encoding {requests:,} requests ({2 * requests:,} events)")
        traffic = maker.make(requests, start_ms, BACKLOG_SPACING_MS)
        avg_bytes = sum(len(v) for _, v, _ in traffic.interactions + traffic.actions) / traffic.events
        sender = Sender(producer_config(broker.bootstrap, args.compression))
        producers.append(sender)
        log("producing")
        t = time.perf_counter()
        for rows, topic in (
            (traffic.interactions, settings.topic_interactions),
            (traffic.actions, settings.topic_actions),
        ):
            for key, value, _ in rows:
                sender.send(topic, key, value)
            sender.producer.poll(0)
        sender.flush(args.timeout)
        produce_s = time.perf_counter() - t
        # every partition of both sources: event time far enough ahead that every request settles
        tick_ms = traffic.last_event_time + settings.settle_window_ms + settings.watermark_delay_ms + 60_000
        sender.ticks(sources, args.partitions, tick_ms)
        sender.flush(args.timeout)
        ticks_wall = time.time()  # from here on, the traffic's event time keeps pace with the wall clock
        source_records = sum(offsets.total(t, args.partitions) for t in sources)
        backlog_events = traffic.events
        del traffic
        log(
            f"produced {backlog_events:,} events ({avg_bytes:.0f} bytes on average) in {produce_s:.2f}s "
            f"= {backlog_events / produce_s:,.0f}/s; {source_records:,} source records with ticks"
        )
        if source_records != backlog_events + 2 * args.partitions:
            raise BenchError(
                f"expected {backlog_events + 2 * args.partitions} source records, the topics hold {source_records}"
            )

        # 2. ceiling ----------------------------------------------------------------------------
        log("ceiling: bare aiokafka consume + produce")
        n, ceiling_s = run_ceiling(broker.bootstrap, sources, ceiling_topic, source_records, args.timeout)
        ceiling_rate = n / ceiling_s
        log(f"ceiling: {n:,} records in {ceiling_s:.2f}s = {ceiling_rate:,.0f}/s")

        # 3. worker -----------------------------------------------------------------------------
        log(f"starting the worker (log: {workdir / 'worker.log'})")
        worker = Worker(settings, workdir)

        def consumed() -> float:
            m = worker.scrape()
            return metric_sum(m, "flywheel_events_consumed_total") if m else 0.0

        wait_for(lambda: "the worker to consume its first event", lambda: consumed() > 0, args.timeout, 0.02, worker)
        t0 = time.perf_counter()
        candidates = settings.topic_candidates
        seen = {"n": 0}

        def candidates_reach(n: int):
            def check() -> bool:
                seen["n"] = offsets.total(candidates, args.partitions)
                return seen["n"] >= n

            return check

        wait_for(
            lambda: f"candidates: {seen['n']:,} of {requests:,} arrived",
            candidates_reach(requests),
            args.timeout,
            0.05,
            worker,
            progress=lambda: log(
                f"worker: {seen['n']:,} of {requests:,} candidates, {consumed():,.0f} events consumed"
            ),
        )
        worker_s = time.perf_counter() - t0
        worker_rate = source_records / worker_s
        caught_up_kb = worker.memory_kb()
        log(
            f"worker: {source_records:,} records in {worker_s:.2f}s = {worker_rate:,.0f}/s; "
            f"RSS {caught_up_kb['VmRSS'] / 1024:.0f} MB (peak {caught_up_kb['VmHWM'] / 1024:.0f} MB)"
        )
        if seen["n"] != requests:
            raise BenchError(f"{seen['n']} candidates for {requests} requests")

        # 4. latency ----------------------------------------------------------------------------
        latency = {
            "p50_ms": None,
            "p99_ms": None,
            "observations": 0,
            "live_rate": None,
            "buckets": {},
            "beyond": False,
        }
        if args.live_events >= 2:
            live_rate = args.live_rate or max(100.0, worker_rate / 2)
            # at wall-clock speed a request settles settle window + watermark delay after it is
            # made, so the phase lasts long enough for most of its requests to settle inside it
            live_requests = max(args.live_events, int(live_rate * LIVE_MIN_SECONDS)) // 2
            # event time moves at wall-clock speed (two events per request), so requests settle
            # while traffic flows, as in production; the last ones settle on the final ticks,
            # outside the measurement
            spacing = 2000 / live_rate
            # wait until the worker has consumed the backlog's ticks too (and committed nothing pending)
            wait_for(
                lambda: "the worker to consume the whole backlog",
                lambda: consumed() >= source_records,
                args.timeout,
                0.1,
                worker,
            )
            time.sleep(1.0)
            # The live traffic starts as much event time after the ticks as wall time has passed since
            # they were produced: production's event time is the wall clock. (Starting it a fixed 1 s
            # after the ticks, however long the worker took, made a worker whose inputs had been idle
            # longer than idle_input_ms + watermark delay + settle window have already settled past
            # the first live requests, whose actions then came late.)
            live_start_ms = tick_ms + int((time.time() - ticks_wall) * 1000) + 1000
            live = maker.make(live_requests, live_start_ms, spacing).merged(*sources)
            before = worker.scrape()
            live_sender = Sender(producer_config(broker.bootstrap, args.compression))
            producers.append(live_sender)
            log(
                f"latency: {len(live):,} live events at {live_rate:,.0f}/s "
                f"({spacing:.2f} ms of event time per request)"
            )
            t = time.perf_counter()
            for i, (topic, key, value) in enumerate(live):
                if i % 20 == 0:
                    ahead = t + i / live_rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                    live_sender.producer.poll(0)
                live_sender.send(topic, key, value)
            live_sender.flush(args.timeout)
            live_s = time.perf_counter() - t
            live_total = source_records + len(live)
            wait_for(
                lambda: "the worker to consume the live events",
                lambda: consumed() >= live_total,
                args.timeout,
                0.05,
                worker,
            )
            time.sleep(0.5)  # the last batch's candidates and observations
            after = worker.scrape()
            hist_before = histogram(before, "flywheel_join_latency_seconds")
            hist = {
                le: c - hist_before.get(le, 0.0) for le, c in histogram(after, "flywheel_join_latency_seconds").items()
            }
            p50, beyond50 = quantile(hist, 0.50)
            p99, beyond99 = quantile(hist, 0.99)
            latency = {
                "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "p99_ms": None if p99 is None else round(p99 * 1000, 1),
                "observations": int(hist.get(math.inf, 0)),
                "live_rate": round(len(live) / live_s),
                "buckets": hist,
                "beyond": beyond50 or beyond99,
            }
            log(
                f"latency: {len(live):,} events in {live_s:.2f}s = {len(live) / live_s:,.0f}/s; "
                f"{latency['observations']:,} candidates during the phase, p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms"
            )
            # settle the rest, and check that every live request gave exactly one candidate
            live_last = live_start_ms + int((live_requests - 1) * spacing) + MAX_ACTION_DELAY_MS
            live_sender.ticks(sources, args.partitions, live_last + SETTLE_WINDOW_MS + WATERMARK_DELAY_MS + 60_000)
            live_sender.flush(args.timeout)
            expected = requests + live_requests
            wait_for(
                lambda: f"live candidates: {seen['n'] - requests:,} of {live_requests:,} arrived",
                candidates_reach(expected),
                args.timeout,
                0.1,
                worker,
            )
            if seen["n"] != expected:
                raise BenchError(f"{seen['n']} candidates for {expected} requests")

        end_kb = worker.memory_kb()
        deadletters = offsets.total(settings.topic_deadletter, args.partitions)
        return {
            "events": backlog_events,
            "source_records": source_records,
            "produce_rate": round(backlog_events / produce_s),
            "ceiling_events_per_s": round(ceiling_rate),
            "worker_events_per_s": round(worker_rate),
            "ratio": round(worker_rate / ceiling_rate, 3),
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "latency_observations": latency["observations"],
            "live_rate": latency["live_rate"],
            "worker_peak_rss_mb": round(end_kb["VmHWM"] / 1024, 1),
            "worker_end_rss_mb": round(end_kb["VmRSS"] / 1024, 1),
            "worker_caught_up_rss_mb": round(caught_up_kb["VmRSS"] / 1024, 1),
            "deadletters": deadletters,
            "partitions": args.partitions,
            "nproc": nproc,
            "machine": f"{platform.machine()} {platform.system()}, {nproc} CPUs, Python {platform.python_version()}",
            "ceiling_s": round(ceiling_s, 2),
            "worker_s": round(worker_s, 2),
            "avg_event_bytes": round(avg_bytes),
            "meets_targets": worker_rate >= TARGET_EVENTS_PER_S and worker_rate / ceiling_rate >= TARGET_RATIO,
            "_buckets": latency["buckets"],
            "_beyond": latency["beyond"],
        }
    finally:
        if worker is not None:
            worker.stop()
        if offsets is not None:
            offsets.close()
        producers.clear()
        sender = live_sender = None  # noqa: F841
        release(broker, workdir, args.keep)


def release(broker, workdir: Path, keep: bool) -> None:
    """Stop the run's broker and remove its working directory (unless asked to keep it)."""
    if broker is not None:
        broker.stop()
    if keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def table(r: dict) -> str:
    def ms(v):
        return "n/a" if v is None else f"{v:,.1f} ms"

    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    rows = [
        f"join throughput: {r['events']:,} events ({r['events'] // 2:,} requests, ~{r['avg_event_bytes']} bytes each), "
        f"{r['partitions']} partitions, {r['machine']}",
        f"  {'produce (confluent-kafka, informational)':<44}{r['produce_rate']:>12,} events/s",
        f"  {'ceiling (bare aiokafka consume + produce)':<44}{r['ceiling_events_per_s']:>12,} events/s   ({r['ceiling_s']:.2f} s)",
        f"  {'worker (flywheel join, 1 process)':<44}{r['worker_events_per_s']:>12,} events/s   ({r['worker_s']:.2f} s)"
        f"   target >= {TARGET_EVENTS_PER_S:,}: {ok(r['worker_events_per_s'] >= TARGET_EVENTS_PER_S)}",
        f"  {'worker / ceiling':<44}{r['ratio'] * 100:>11.1f} %"
        f"{'':<26}target >= {TARGET_RATIO:.0%}: {ok(r['ratio'] >= TARGET_RATIO)}",
    ]
    if r["live_rate"] is not None:
        beyond = " (beyond the last bucket: a lower bound)" if r["_beyond"] else ""
        label = f"join latency at {r['live_rate']:,} events/s live"
        rows.append(
            f"  {label:<44}"
            f"p50 {ms(r['p50_ms'])}, p99 {ms(r['p99_ms'])}  ({r['latency_observations']:,} candidates){beyond}"
        )
        hist, prev, parts = r["_buckets"], 0.0, []
        for le in sorted(hist):
            n = hist[le] - prev
            prev = hist[le]
            if n:
                parts.append(f"{'+Inf' if math.isinf(le) else f'<={le * 1000:g}ms'}: {int(n)}")
        rows.append(f"  {'  latency buckets (this phase)':<44}{', '.join(parts) or 'none'}")
    rows.append(
        f"  {'worker RSS':<44}peak {r['worker_peak_rss_mb']:,.0f} MB, end {r['worker_end_rss_mb']:,.0f} MB "
        f"(after catch-up {r['worker_caught_up_rss_mb']:,.0f} MB)"
    )
    if r["deadletters"]:
        rows.append(f"  {'dead letters (expected none)':<44}{r['deadletters']:,}")
    return "\n".join(rows)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="join_throughput",
        description="Interaction + action events through the join on the embedded broker: events/s against a bare "
        "aiokafka consume-and-produce ceiling, p50/p99 join latency under live load, worker RSS. "
        "Prints a table and a final JSON line.",
    )
    p.add_argument(
        "--events",
        type=positive_int,
        default=200_000,
        help="events to pre-produce: half interactions, half actions, one action per request (default: 200000)",
    )
    p.add_argument("--partitions", type=positive_int, default=4, help="partitions of every topic (default: 4)")
    p.add_argument(
        "--live-events",
        type=int,
        default=20_000,
        help="events of paced live traffic for the latency phase, at least 15 s of it; 0 skips it (default: 20000)",
    )
    p.add_argument(
        "--live-rate",
        type=float,
        default=None,
        help="events/s of the live traffic (default: half the measured worker throughput)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each phase may take before the run fails (default: 600)"
    )
    p.add_argument(
        "--compression",
        default=None,
        choices=("none", "gzip", "snappy", "lz4", "zstd"),
        help="producer compression (default: the SDK's, lz4)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the traffic (default: 0)")
    p.add_argument(
        "--roles",
        default="join",
        help="the worker's roles (FLYWHEEL_ROLES); the default measures the join alone, "
        "'join,gate,review,rollout,guards' runs the whole worker beside it (default: join)",
    )
    p.add_argument(
        "--conversation",
        action="store_true",
        help="conversation-sized interactions: 4 earlier turns (one a tool call), 3 retrieved passages, a tool offered",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, worker log)")
    args = p.parse_args(argv)
    if args.events < 2:
        p.error("--events must be at least 2")
    if args.live_rate is not None and args.live_rate <= 0:
        p.error("--live-rate must be greater than 0")
    return report("join_throughput", run, table, args)


def report(name: str, run, table, args) -> int:
    """Run a benchmark; print its table and one JSON line, or one error line (exit 1)."""
    try:
        result = run(args)
    except BenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    print(table(result))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
