#!/usr/bin/env python
"""Quality gate throughput: simulated candidates through the gate, in process and as workers.

    .venv/bin/python benchmarks/gate_throughput.py                  # 3,000 candidates, 4 partitions
    .venv/bin/python benchmarks/gate_throughput.py --candidates 600 # a quick run

Phases, strictly one after the other (never two at once, so they do not share the CPU):

1. candidates  Simulated traffic (`flywheel.simulate`, with personal data and abuse in it) through
               the pure `JoinCore` offline (a dict store, partitions by the SDK's murmur2), with a
               final tick so every request settles: exactly one candidate (Avro bytes) per request.
2. stages      `build_gate` with a real Redis (the default URL if it answers, else an embedded
               one), deciding every candidate in batches of the worker's gate_batch_size after one
               untimed warm-up batch: candidates/s of the whole pipeline in one process, seconds
               per stage (what to optimise first), the pass rate and the funnel (the stage that
               rejected each candidate first). Three times: the default policy (privacy-complete:
               names by spaCy NER and cues, secrets, ids, patterns), the same with the redactor's
               cache off (a text seen in an earlier batch is redacted again; within a batch a
               repeated text, such as a response that is also the target, is still done once),
               and patterns only (`[pii] ner_model = ""`: no names; secrets and ids stay).
3. ceiling     Embedded broker, the run's topics; the candidates are produced to their partitions,
               then a bare aiokafka consume + produce loop copies them: records/s, a ceiling for any
               Python consume-decide-produce loop on this broker.
4. join alone  The simulated interactions and actions (and the ticks that settle them) on the run's
               source topics, one `flywheel worker` with roles=join: candidates/s from the moment it
               had its partitions ("join partitions assigned" in its log) to the last candidate's
               broker timestamp, so its start-up is not counted: the yardstick of "gate / join".
5. gate x 1    One `flywheel worker` with roles=gate on the phase-3 candidates, default policy
               (privacy-complete): decisions/s from the moment its gate was built ("gate ready" in
               its log; the models load on the first batch) to the last decision's broker timestamp
               on passed + rejected. Peak RSS, and its `flywheel_gate_stage_seconds` sums per stage.
   patterns    The same, one worker, with the patterns-only policy (names off), for comparison.
6. gate x 2    Two workers (default policy) in one group (static membership, which the embedded
               broker needs): decisions/s the same way, from the first of the two to be ready (and,
               apart, from the moment both were), scaling = rate2 / rate1 (linear is 2.0, out of
               reach when the broker, Redis and both workers share two cores).

The naive N / (last - first output timestamp) figures are in the JSON too (`*_first_last`); they
leave out the join's reading before the first request settles, and the gate's first batch.
Prints a table, then one JSON line. Exits 1 with a one-line error when a phase fails.
"""

from __future__ import annotations

import calendar
import json
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import join_throughput as jt  # noqa: E402  (puts the repository root on sys.path too)

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, free_port, redis_answers  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.simulate import TrafficSpec, generate  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402
from schemas.codec import TICK_HEADER, Codec  # noqa: E402

TARGET_PER_WORKER = 200  # decisions/s of one gate worker, privacy-complete (the default policy)
TARGET_SCALING = 1.6  # two workers over one
PATTERNS_ONLY = '[pii]\nner_model = ""\n'  # the policy file of the patterns-only runs: names off
START_MS = 1_767_225_600_000  # 2026-01-01: fixed, so request ids and texts repeat between runs
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
JOIN_BATCH = 500  # records per offline JoinCore batch
BenchError, log = jt.BenchError, jt.log


def partition_of(key: bytes, partitions: int) -> int:
    """librdkafka's murmur2_random (the SDK's partitioner) for a non-empty key."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- 1. candidates ----------------------------------------------------------------------------------
def make_candidates(codec: Codec, settings: Settings, requests: int, seed: int):
    from streams.join.core import JoinCore, DictStore, Record

    spec = TrafficSpec(requests, seed=seed, start_ms=START_MS, pii_rate=0.03, toxic_rate=0.01)
    traffic = generate(spec, settings.settle_window_ms)
    parts = settings.partitions
    events = [
        (e.kind, partition_of(e.request_id.encode(), parts), e.request_id.encode(), codec.encode(e.kind, e.record))
        for e in traffic.events
    ]
    core = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=settings.settle_window_ms,
        watermark_delay_ms=settings.watermark_delay_ms,
        marker_horizon_ms=settings.marker_horizon_ms,
        max_event_bytes=settings.max_event_bytes,
    )
    offsets: Counter = Counter()

    def rec(kind, p, key, value, headers=None):
        offsets[kind, p] += 1
        return Record(kind, kind, p, offsets[kind, p], key, value, headers or {})

    candidates = []
    for i in range(0, len(events), JOIN_BATCH):
        candidates += core.apply_all([rec(*e) for e in events[i : i + JOIN_BATCH]]).candidates
    tick_ms = traffic.last_event_time + settings.settle_window_ms + settings.watermark_delay_ms + 1
    tick = {TICK_HEADER: str(tick_ms).encode()}
    ticks = [rec(k, p, None, b"", tick) for p in range(parts) for k in ("interaction", "action")]
    candidates += core.apply_all(ticks).candidates
    if len(candidates) != requests or len({c.key for c in candidates}) != requests:
        raise BenchError(f"the offline join gave {len(candidates)} candidates for {requests} requests")
    return traffic, events, tick_ms, candidates


# -- 2. stages in process ---------------------------------------------------------------------------
def run_stages(
    codec: Codec,
    candidates,
    redis_client,
    prefix: str,
    batch: int,
    policy=None,
    cache: bool = True,
    label: str = "default",
) -> dict:
    from schemas.records import TrainingCandidate
    from streams.gate.pipeline import build_gate
    from flywheel.policy import GatePolicy

    seconds: dict[str, float] = defaultdict(float)
    checked: Counter = Counter()
    timing = {"on": False}

    def observe(stage: str, s: float, n: int) -> None:
        if timing["on"]:
            seconds[stage] += s
            checked[stage] += n

    t = time.perf_counter()
    gate = build_gate(policy or GatePolicy(), redis_client=redis_client, key_prefix=prefix, observe_stage=observe)
    log(f"stages ({label}): gate built in {time.perf_counter() - t:.1f}s: {', '.join(s.name for s in gate.stages)}")
    redactor = next((s.redactor for s in gate.stages if s.name == "pii"), None)
    if redactor is not None and not cache:
        redactor.cache_size = 0

    def decode(rows):
        return [TrainingCandidate.from_dict(codec.decode("candidate", c.value)) for c in rows]

    decisions = gate.decide(decode(candidates[:batch]))  # warm-up: decided once, not timed
    timing["on"] = True
    hits0 = redactor.cache_hits if redactor is not None else 0
    texts0 = redactor.texts_seen if redactor is not None else 0
    decode_s = decide_s = 0.0
    for i in range(batch, len(candidates), batch):
        t0 = time.perf_counter()
        rows = decode(candidates[i : i + batch])
        t1 = time.perf_counter()
        decisions += gate.decide(rows)
        t2 = time.perf_counter()
        decode_s, decide_s = decode_s + t1 - t0, decide_s + t2 - t1
    timed = len(candidates) - batch
    total = decode_s + decide_s
    stages = {"decode": {"seconds": decode_s, "checked": timed}}
    stages.update({name: {"seconds": seconds[name], "checked": checked[name]} for name in seconds})
    stages["(outside stages)"] = {"seconds": decide_s - sum(seconds.values()), "checked": timed}
    for s in stages.values():
        s["ms_per_candidate"] = round(1000 * s["seconds"] / s["checked"], 3) if s["checked"] else 0.0
        s["share"] = round(s["seconds"] / total, 4)
        s["seconds"] = round(s["seconds"], 3)
    passed = sum(d.passed for d in decisions)
    funnel = Counter(d.removed_by for d in decisions if not d.passed)
    texts = (redactor.texts_seen - texts0) if redactor is not None else 0
    hit_share = (redactor.cache_hits - hits0) / texts if texts else 0.0
    return {
        "rate": timed / total,
        "seconds": total,
        "timed": timed,
        "stages": stages,
        "passed": passed,
        "pass_rate": passed / len(decisions),
        "funnel": dict(funnel.most_common()),
        "cache_hit_share": hit_share,
        "texts_per_candidate": texts / timed if timed else 0.0,
        "reasons": dict(
            Counter(r for d in decisions for r in d.reasons if r in ("secret_found", "pii_detected")).most_common()
        ),
    }


# -- workers and records ----------------------------------------------------------------------------
def start_worker(base: Settings, workdir: Path, name: str, **changes) -> jt.Worker:
    sub = workdir / name
    (sub / "data").mkdir(parents=True)
    settings = base.replace(data_dir=str(sub / "data"), metrics_port=free_port(), **changes)
    create_topics(settings)
    log(f"{name}: starting a worker (roles={settings.roles}, log: {sub / 'worker.log'})")
    return jt.Worker(settings, sub)


def record_times(bootstrap: str, topics: list[str], partitions: int, expected: int, timeout: float) -> list[float]:
    """Broker timestamps (seconds) of every record on `topics`."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"gatebench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
        out: list[float] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"read {len(out)} of {expected} records on {', '.join(topics)} in {timeout:.0f}s")
            out += [m.timestamp()[1] / 1000 for m in consumer.consume(1000, 0.5) if not m.error()]
        return sorted(out)
    finally:
        consumer.close()


def logged_at(worker: jt.Worker, msg: str) -> float | None:
    """When the worker first logged `msg` (its JSON log's "ts"), in epoch seconds."""
    try:
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if f'"msg": "{msg}"' in line:
                ts = json.loads(line)["ts"]  # 2026-01-01T00:00:00.123Z
                return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000
    except (OSError, ValueError, KeyError):
        pass
    return None


def run_gate(
    name: str,
    base: Settings,
    workdir: Path,
    workers: int,
    n: int,
    offsets: jt.Offsets,
    timeout: float,
    policy_file: str = "",
) -> dict:
    app = f"{base.app_id}-{name}"
    passed, rejected = f"{base.topic_candidates}.{name}.passed", f"{base.topic_candidates}.{name}.rejected"
    procs: list[jt.Worker] = []
    try:
        for i in range(workers):
            procs.append(
                start_worker(
                    base,
                    workdir,
                    f"{name}-w{i}",
                    roles="gate",
                    app_id=app,
                    worker_id=f"{app}-w{i}",
                    topic_passed=passed,
                    topic_rejected=rejected,
                    gate_policy=policy_file,
                )
            )
        seen = {"n": 0}

        def done() -> bool:
            for w in procs:
                w.check_alive()
            seen["n"] = offsets.total(passed, base.partitions) + offsets.total(rejected, base.partitions)
            return seen["n"] >= n

        jt.wait_for(
            lambda: f"{name}: {n - seen['n']:,} of {n:,} decisions missing on {passed} + {rejected}",
            done,
            timeout,
            0.1,
            progress=lambda: log(f"{name}: {seen['n']:,} of {n:,} decisions"),
        )
        if seen["n"] != n:
            raise BenchError(f"{name}: {seen['n']} decisions for {n} candidates")
        times = record_times(base.kafka_bootstrap, [passed, rejected], base.partitions, n, timeout)
        readies = [r for r in (logged_at(w, "gate ready") for w in procs) if r is not None]
        start, both = min(readies, default=times[0]), max(readies, default=times[0])
        metrics = procs[0].scrape() or {}
        stage_s = {
            labels.get("filter", "?"): round(v, 3) for labels, v in metrics.get("flywheel_gate_stage_seconds_sum", ())
        }
        rss = [round(w.memory_kb()["VmHWM"] / 1024, 1) for w in procs]
        out = {
            "rate": n / (times[-1] - start),
            "first_last": n / max(times[-1] - times[0], 1e-3),
            "both": sum(t >= both for t in times) / max(times[-1] - both, 1e-3),
            "seconds": times[-1] - start,
            "passed": offsets.total(passed, base.partitions),
            "rss": rss,
            "stage_seconds": stage_s,
        }
        log(f"{name}: {n:,} decisions in {out['seconds']:.2f}s = {out['rate']:,.1f}/s; peak RSS {rss} MiB")
        return out
    finally:
        for w in procs:
            w.stop()


# -- the run ----------------------------------------------------------------------------------------
def run(args) -> dict:
    codec = Codec()
    run_id = uuid.uuid4().hex[:8]
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = args.candidates
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-gatebench-"))
    prefix = f"gatebench-{run_id}"
    broker = redis_server = redis_client = offsets = worker = None
    producers: list[jt.Sender] = []
    phase = "candidates"
    try:
        base = Settings.from_env(
            app_id=prefix,
            partitions=args.partitions,
            empty_fetch_backoff_ms=10,
            **{
                f"topic_{t}": f"gatebench{run_id}.{t}"
                for t in ("interactions", "actions", "candidates", "deadletter", "passed", "rejected")
            },
        )

        # 1. candidates ---------------------------------------------------------------------------
        log(f"candidates: simulating {n:,} requests and joining them offline")
        t = time.perf_counter()
        traffic, events, tick_ms, candidates = make_candidates(codec, base, n, args.seed)
        avg_bytes = sum(len(c.value) for c in candidates) / n
        log(
            f"candidates: {n:,} from {len(events):,} events ({len(traffic.personal)} with personal data, "
            f"{len(traffic.toxic)} abusive) in {time.perf_counter() - t:.1f}s, {avg_bytes:,.0f} bytes on average"
        )

        # 2. stages -------------------------------------------------------------------------------
        phase = "stages"
        import redis

        redis_url = DEFAULT_REDIS
        if not redis_answers(redis_url):
            redis_url = f"redis://127.0.0.1:{free_port()}/0"
            log(f"stages: no Redis at {DEFAULT_REDIS}; starting an embedded one at {redis_url}")
            redis_server = EmbeddedRedis(redis_url, workdir / "redis")
        base = base.replace(redis_url=redis_url)
        redis_client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        from flywheel.policy import GatePolicy

        patterns_file = workdir / "patterns-only.toml"
        patterns_file.write_text(PATTERNS_ONLY)
        patterns_policy = GatePolicy.load(patterns_file)
        stages = run_stages(codec, candidates, redis_client, f"{prefix}-inproc", base.gate_batch_size)
        log(
            f"stages: {stages['timed']:,} candidates in {stages['seconds']:.2f}s = {stages['rate']:,.1f}/s; "
            f"pass rate {stages['pass_rate']:.1%}; redactor cache hits {stages['cache_hit_share']:.1%}"
        )
        uncached = run_stages(
            codec, candidates, redis_client, f"{prefix}-nocache", base.gate_batch_size, cache=False, label="no cache"
        )
        log(f"stages (no cache): {uncached['rate']:,.1f}/s")
        patterns = run_stages(
            codec,
            candidates,
            redis_client,
            f"{prefix}-patterns",
            base.gate_batch_size,
            policy=patterns_policy,
            label="patterns only",
        )
        log(f"stages (patterns only): {patterns['rate']:,.1f}/s; pass rate {patterns['pass_rate']:.1%}")

        # 3. ceiling ------------------------------------------------------------------------------
        phase = "ceiling"
        log(f"ceiling: starting the embedded broker in {workdir / 'broker'}")
        broker = EmbeddedBroker(workdir / "broker")
        base = base.replace(kafka_bootstrap=broker.bootstrap)
        create_topics(base)
        offsets = jt.Offsets(broker.bootstrap)
        sender = jt.Sender(jt.producer_config(broker.bootstrap, None))
        producers.append(sender)
        for c in candidates:
            sender.send(base.topic_candidates, c.key, c.value, partition=c.partition)
        sender.flush(args.timeout)
        held = offsets.total(base.topic_candidates, args.partitions)
        if held != n:
            raise BenchError(f"{base.topic_candidates} holds {held} records, not {n}")
        ceiling_topic = f"{base.topic_candidates}.ceiling"
        jt.create_topic(broker.bootstrap, ceiling_topic, args.partitions)
        got, ceiling_s = jt.run_ceiling(broker.bootstrap, [base.topic_candidates], ceiling_topic, n, args.timeout)
        ceiling_rate = got / ceiling_s
        log(f"ceiling: {got:,} records in {ceiling_s:.2f}s = {ceiling_rate:,.0f}/s")

        # 4. join alone ---------------------------------------------------------------------------
        phase = "join alone"
        topics = {"interaction": base.topic_interactions, "action": base.topic_actions}
        for kind, p, key, value in events:
            sender.send(topics[kind], key, value, partition=p)
        sender.ticks(list(topics.values()), args.partitions, tick_ms)
        sender.flush(args.timeout)
        join_out = f"{base.topic_candidates}.join-candidates"
        worker = start_worker(
            base,
            workdir,
            "join",
            roles="join",
            app_id=f"{prefix}-join",
            worker_id=f"{prefix}-join",
            topic_candidates=join_out,
        )

        seen = {"n": 0}

        def joined() -> bool:
            seen["n"] = offsets.total(join_out, args.partitions)
            return seen["n"] >= n

        jt.wait_for(
            lambda: f"join candidates: {n - seen['n']:,} of {n:,} missing on {join_out}",
            joined,
            args.timeout,
            0.05,
            worker,
            progress=lambda: log(f"join alone: {seen['n']:,} of {n:,} candidates"),
        )
        join_times = record_times(broker.bootstrap, [join_out], args.partitions, n, args.timeout)
        join_rss = round(worker.memory_kb()["VmHWM"] / 1024, 1)
        join_t0 = logged_at(worker, "join partitions assigned") or join_times[0]
        worker.stop()
        worker = None
        if seen["n"] != n:
            raise BenchError(f"the join gave {seen['n']} candidates for {n} requests")
        join_rate = n / max(join_times[-1] - join_t0, 1e-3)
        join_first_last = n / max(join_times[-1] - join_times[0], 1e-3)
        log(
            f"join alone: {n:,} candidates ({len(events):,} events) in {join_times[-1] - join_t0:.3f}s "
            f"= {join_rate:,.0f}/s; peak RSS {join_rss} MiB"
        )

        # 5, 6. gate workers ----------------------------------------------------------------------
        phase = "gate, 1 worker"
        one = run_gate("gate1", base, workdir, 1, n, offsets, args.timeout)
        phase = "gate, 1 worker, patterns only"
        one_p = run_gate("gate1p", base, workdir, 1, n, offsets, args.timeout, policy_file=str(patterns_file))
        phase = "gate, 2 workers"
        two = run_gate("gate2", base, workdir, 2, n, offsets, args.timeout)

        rate1, rate2 = one["rate"], two["rate"]
        return {
            "candidates": n,
            "partitions": args.partitions,
            "batch": base.gate_batch_size,
            "pass_rate": round(stages["pass_rate"], 4),
            "funnel": stages["funnel"],
            "inprocess_candidates_per_s": round(stages["rate"], 1),
            "inprocess_seconds": round(stages["seconds"], 2),
            "stages": stages["stages"],
            "ceiling_records_per_s": round(ceiling_rate),
            "inprocess_cache_hit_share": round(stages["cache_hit_share"], 4),
            "inprocess_texts_per_candidate": round(stages["texts_per_candidate"], 2),
            "pii_reasons": stages["reasons"],
            "inprocess_no_cache_candidates_per_s": round(uncached["rate"], 1),
            "no_cache_stages": uncached["stages"],
            "inprocess_patterns_only_candidates_per_s": round(patterns["rate"], 1),
            "patterns_only_stages": patterns["stages"],
            "patterns_only_pass_rate": round(patterns["pass_rate"], 4),
            "gate1_patterns_only_decisions_per_s": round(one_p["rate"], 1),
            "gate1_patterns_only_seconds": round(one_p["seconds"], 2),
            "gate1_patterns_only_peak_rss_mib": one_p["rss"][0],
            "join_candidates_per_s": round(join_rate),
            "join_candidates_per_s_first_last": round(join_first_last),
            "gate1_decisions_per_s": round(rate1, 1),
            "gate1_decisions_per_s_first_last": round(one["first_last"], 1),
            "gate1_seconds": round(one["seconds"], 2),
            "gate1_pass_rate": round(one["passed"] / n, 4),
            "gate2_decisions_per_s": round(rate2, 1),
            "gate2_decisions_per_s_first_last": round(two["first_last"], 1),
            "gate2_decisions_per_s_both_running": round(two["both"], 1),
            "gate2_seconds": round(two["seconds"], 2),
            "gate2_pass_rate": round(two["passed"] / n, 4),
            "scaling": round(rate2 / rate1, 3),
            "gate_join_ratio": round(rate1 / join_rate, 4),
            "gate_ceiling_ratio": round(rate1 / ceiling_rate, 4),
            "gate1_stage_seconds": one["stage_seconds"],
            "join_peak_rss_mib": join_rss,
            "gate1_peak_rss_mib": one["rss"][0],
            "gate2_peak_rss_mib": two["rss"],
            "target_per_worker": TARGET_PER_WORKER,
            "meets_target": rate1 >= TARGET_PER_WORKER,
            "target_scaling": TARGET_SCALING,
            "meets_scaling": rate2 / rate1 >= TARGET_SCALING,
            "avg_candidate_bytes": round(avg_bytes),
            "nproc": nproc,
            "machine": f"{platform.machine()} {platform.system()}, {nproc} CPUs, Python {platform.python_version()}",
            "redis": "embedded" if redis_server else "default URL",
        }
    except BenchError as exc:
        raise BenchError(f"{phase}: {exc}") from None
    except Exception as exc:  # a broker, Redis or model failure: one line, the phase named
        raise BenchError(f"{phase}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        if worker is not None:
            worker.stop()
        if offsets is not None:
            offsets.close()
        producers.clear()
        sender = None  # noqa: F841  (librdkafka gone before the broker, so it logs no reconnects)
        if redis_client is not None:
            try:
                keys = list(redis_client.scan_iter(f"{prefix}*", count=1000))
                for i in range(0, len(keys), 1000):
                    redis_client.delete(*keys[i : i + 1000])
                log(f"deleted {len(keys):,} Redis keys under {prefix}")
            except Exception as exc:
                log(f"could not delete the run's Redis keys ({prefix}*): {exc}")
        if redis_server is not None:
            redis_server.stop()
        jt.release(broker, workdir, args.keep)


def table(r: dict) -> str:
    ok = "ok" if r["meets_target"] else "MISSED"
    ok2 = "ok" if r["meets_scaling"] else "MISSED"
    pii = lambda stages: stages.get("pii", {}).get("ms_per_candidate", 0.0)  # noqa: E731
    rows = [
        f"gate throughput: {r['candidates']:,} candidates (~{r['avg_candidate_bytes']:,} bytes each), {r['partitions']} "
        f"partitions, {r['machine']}; pass rate {r['pass_rate']:.1%}",
        "privacy-complete = the default policy: names (spaCy NER + cues), secrets, ids, patterns; "
        'patterns only = [pii] ner_model = ""',
        f"  {'in process (Gate.decide, batches of %d)' % r['batch']:<46}"
        f"{r['inprocess_candidates_per_s']:>10,.1f} candidates/s"
        f"  ({r['inprocess_seconds']:.2f} s; {r['inprocess_texts_per_candidate']:.1f} texts a candidate, "
        f"{r['inprocess_cache_hit_share']:.0%} redactor cache hits)",
    ]
    for name, s in sorted(r["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
        rows.append(
            f"    {name:<44}{s['ms_per_candidate']:>10.3f} ms/candidate  {s['share']:>6.1%}"
            f"  ({s['seconds']:.2f} s, {s['checked']:,} checked)"
        )
    rows += [
        f"  {'in process, redactor cache off':<46}{r['inprocess_no_cache_candidates_per_s']:>10,.1f} candidates/s"
        f"  (pii {pii(r['no_cache_stages']):.3f} ms/candidate)",
        f"  {'in process, patterns only':<46}{r['inprocess_patterns_only_candidates_per_s']:>10,.1f} candidates/s"
        f"  (pii {pii(r['patterns_only_stages']):.3f} ms/candidate; pass rate {r['patterns_only_pass_rate']:.1%})",
        f"  {'pii rejections (in process)':<46}"
        + (", ".join(f"{k} {v:,}" for k, v in r["pii_reasons"].items()) or "none"),
    ]
    rows.append(
        f"  {'funnel (first stage that rejected)':<46}"
        + (", ".join(f"{k} {v:,}" for k, v in r["funnel"].items()) or "none")
    )
    rows += [
        f"  {'ceiling (bare aiokafka consume + produce)':<46}{r['ceiling_records_per_s']:>10,} records/s",
        f"  {'join alone (1 worker, roles=join)':<46}{r['join_candidates_per_s']:>10,} candidates/s",
        f"  {'gate, 1 worker, privacy-complete':<46}{r['gate1_decisions_per_s']:>10,.1f} decisions/s"
        f"   ({r['gate1_seconds']:.2f} s)   target >= {r['target_per_worker']}: {ok}",
        f"  {'gate, 1 worker, patterns only':<46}{r['gate1_patterns_only_decisions_per_s']:>10,.1f} decisions/s"
        f"   ({r['gate1_patterns_only_seconds']:.2f} s)",
        f"  {'gate, 2 workers, privacy-complete':<46}{r['gate2_decisions_per_s']:>10,.1f} decisions/s"
        f"   ({r['gate2_seconds']:.2f} s)   once both were ready: {r['gate2_decisions_per_s_both_running']:,.1f}/s",
        f"  {'scaling (2 workers / 1)':<46}{r['scaling']:>10.2f} x"
        f"{'':<14}target >= {r['target_scaling']}: {ok2}; linear = 2.0; {r['nproc']} CPUs shared with the broker and Redis",
        f"  {'gate / join alone':<46}{r['gate_join_ratio']:>11.2%}",
        f"  {'gate / ceiling':<46}{r['gate_ceiling_ratio']:>11.2%}",
        f"  {'worker pass rate (1 worker, 2 workers)':<46}{r['gate1_pass_rate']:>11.1%}, {r['gate2_pass_rate']:.1%}",
        f"  {'gate stage seconds (1 worker, /metrics)':<46}"
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["gate1_stage_seconds"].items(), key=lambda kv: -kv[1])),
        f"  {'peak RSS (MiB)':<46}join {r['join_peak_rss_mib']:,.0f}, gate {r['gate1_peak_rss_mib']:,.0f} "
        f"(patterns only {r['gate1_patterns_only_peak_rss_mib']:,.0f}), "
        f"2 gates {' + '.join(f'{v:,.0f}' for v in r['gate2_peak_rss_mib'])}",
    ]
    return "\n".join(rows)


def _interrupt(signum, frame):
    """A SIGTERM unwinds like Ctrl-C, so the finally blocks stop the workers and the broker."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(
        prog="gate_throughput",
        description="Simulated candidates through the quality gate: per-stage cost in process, then decisions/s of one "
        "and two gate workers on the embedded broker against a bare consume-and-produce ceiling and the "
        "join alone. Prints a table and a final JSON line.",
    )
    p.add_argument(
        "--candidates",
        type=jt.positive_int,
        default=3_000,
        help="simulated requests, one candidate each (default: 3000; at least 256)",
    )
    p.add_argument("--partitions", type=jt.positive_int, default=4, help="partitions of every topic (default: 4)")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each wait may take before the run fails (default: 600)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the traffic (default: 0)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (broker data, worker logs)")
    args = p.parse_args(argv)
    if args.candidates < 256:
        p.error("--candidates must be at least 256 (a warm-up batch of 128 and something to time)")
    if args.timeout <= 0:
        p.error("--timeout must be greater than 0")
    signal.signal(signal.SIGTERM, _interrupt)
    return jt.report("gate_throughput", run, table, args)


if __name__ == "__main__":
    sys.exit(main())
