#!/usr/bin/env python
"""Human review throughput: the sampler, the Redis queue, the review page and the verdict relay.

    .venv/bin/python benchmarks/review_throughput.py                 # 20,000 items
    .venv/bin/python benchmarks/review_throughput.py --items 2000    # a quick run

Phases, one after the other, each beside a ceiling measured in the same run:

1. sampler   `ReviewSampler.decide_batch` over 200,000 simulated gate decisions (10 % corrections,
             5 % uncertain, a long tail of task types): decisions/s in one process. Ceiling: the
             same loop that only hashes each request id (the draw), i.e. the least any sampler does.
2. enqueue   the sampled items into the Redis queue in batches of 128 (one Lua script per batch):
             items/s. Ceiling: the same number of batches of a Lua script that only returns.
3. review    4 reviewer threads lease and submit until the queue is empty: verdicts/s, and
             lease and submit latency (p50, p99). Ceiling: 4 threads doing two bare Lua round
             trips per verdict.
4. page      one reviewer through the real review page over HTTP (GET / leases and renders, POST
             /verdict records): verdicts/s and p50/p99 of the pair. Ceiling: an aiohttp app on the
             same loop that answers GET and POST with a page of the same size and does nothing.
5. relay     the outbox (every verdict of phases 3-4) to the verdicts topic on the embedded
             broker: verdicts/s. Ceiling: confluent-kafka producing the same bytes, bare.

Also: Redis memory per queued item, and the peak RSS of this process.
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import re
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import join_throughput as jt  # noqa: E402
import redis  # noqa: E402

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, free_port, redis_answers  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.topics import create_topics  # noqa: E402
from schemas.codec import Codec  # noqa: E402
from schemas.records import ReviewVerdict, TrainingCandidate  # noqa: E402
from flywheel.policy import ReviewPolicy  # noqa: E402
from streams.review.accounts import Reviewers  # noqa: E402
from streams.review.items import ReviewItem  # noqa: E402
from streams.review.queue import ReviewQueue  # noqa: E402
from streams.review.sampler import ReviewSampler, unit_draw  # noqa: E402

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
T0 = 1_767_225_600_000
TASKS = (
    ["qa"] * 40
    + ["sql"] * 25
    + ["summarise"] * 20
    + ["code"] * 10
    + ["legal", "medical", "poetry", "chemistry", "tax"]
)
BATCH = 128
REVIEWERS = 4
BARE_LUA = "return 1"


def log(msg: str) -> None:
    print(f"[review_throughput] {msg}", file=sys.stderr, flush=True)


def decisions(n: int, seed: int) -> list[tuple[TrainingCandidate, bool, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        action = "corrected" if rng.random() < 0.10 else rng.choice(["accepted", "copied"])
        c = TrainingCandidate(
            request_id=f"req-{i:07d}",
            timestamp=T0 + i * 3_000,
            user_id=f"u{rng.randrange(5000)}",
            session_id=f"s{i}",
            prompt=f"question {i} " * 8,
            response=f"an answer to question {i} " * 12,
            user_action=action,
            task_type=rng.choice(TASKS),
            model_version=rng.choice(["m1", "m1", "m1", "m2"]),
            correction="a better answer " * 10 if action == "corrected" else "",
            label="sft_correction" if action == "corrected" else "sft_positive",
            uncertainty=rng.random() if rng.random() < 0.05 else None,
            quality_score=0.7,
            scores={"quality": 0.7, "toxicity": 0.01, "words": 60.0},
            policy_version="default-1@bench",
        )
        out.append((c, True, f"passed/{i % 4}/{i // 4}"))
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def verdict_for(lease, reviewer: str) -> ReviewVerdict:
    c = lease.item.candidate
    return ReviewVerdict(
        f"{lease.item.item_id}:{reviewer}",
        lease.item.item_id,
        reviewer,
        4,
        4,
        5,
        True,
        int(time.time() * 1000),
        c["timestamp"],
        lease.item.gate_passed,
        task_type=c.get("task_type", ""),
        quality_score=c.get("quality_score", 0.0),
        sample_probability=lease.item.probability,
        review_round=lease.round,
    )


def phase_sampler(batch: list, seed_name: str) -> dict:
    sampler = ReviewSampler(ReviewPolicy(budget_per_window=0), seed=seed_name)
    started = time.perf_counter()
    out = []
    for i in range(0, len(batch), BATCH):
        out += sampler.decide_batch(batch[i : i + BATCH])
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    kept = sum(1 for c, _, _ in batch if unit_draw(seed_name, c.request_id) < 0.07)
    ceiling_s = time.perf_counter() - started
    items = [d.item for d in out if d.sampled]
    by_class: dict[str, int] = {}
    for it in items:
        by_class[it.sampled_for[0]] = by_class.get(it.sampled_for[0], 0) + 1
    return {
        "decisions": len(batch),
        "seconds": seconds,
        "rate": len(batch) / seconds,
        "ceiling_rate": len(batch) / ceiling_s,
        "sampled": len(items),
        "share": len(items) / len(batch),
        "by_class": by_class,
        "_items": items,
        "_bare_kept": kept,
    }


def phase_enqueue(client, prefix: str, items: list[ReviewItem]) -> dict:
    q = ReviewQueue(client, prefix)
    used_before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    statuses = []
    for i in range(0, len(items), BATCH):
        statuses += q.enqueue(items[i : i + BATCH])
    seconds = time.perf_counter() - started
    per_item = (client.info("memory")["used_memory"] - used_before) / max(1, len(items))
    bare = client.register_script(BARE_LUA)
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        bare(args=[json.dumps([it.to_json() for it in items[i : i + BATCH]])])  # ship the same bytes
    ceiling_s = time.perf_counter() - started
    if statuses.count("queued") != len(items):
        raise jt.BenchError(f"enqueue queued {statuses.count('queued')} of {len(items)}")
    return {
        "items": len(items),
        "seconds": seconds,
        "rate": len(items) / seconds,
        "ceiling_rate": len(items) / ceiling_s,
        "redis_bytes_per_item": per_item,
    }


def timed_threads(target, arg_tuples) -> float:
    """Run one thread per argument tuple; seconds until the last one finished."""
    threads = [threading.Thread(target=target, args=a) for a in arg_tuples]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def phase_review(redis_url: str, prefix: str, limit: int) -> dict:
    lease_s: list[float] = []
    submit_s: list[float] = []
    done = [0]
    lock = threading.Lock()

    def work(name: str):
        c = redis.Redis.from_url(redis_url)
        q = ReviewQueue(c, prefix)
        while True:
            with lock:
                if done[0] >= limit:
                    return
            t0 = time.perf_counter()
            lease = q.lease(name)
            t1 = time.perf_counter()
            if lease is None:
                return
            q.submit(lease, name, verdict_for(lease, name))
            t2 = time.perf_counter()
            with lock:
                lease_s.append(t1 - t0)
                submit_s.append(t2 - t1)
                done[0] += 1

    seconds = timed_threads(work, [(f"bench-{i}",) for i in range(REVIEWERS)])
    n = len(submit_s)

    def bare_work(count: int):
        c = redis.Redis.from_url(redis_url)
        s = c.register_script(BARE_LUA)
        for _ in range(count):
            s(args=[prefix])
            s(args=[prefix])

    ceiling_s = timed_threads(bare_work, [(n // REVIEWERS,)] * REVIEWERS)
    return {
        "verdicts": n,
        "seconds": seconds,
        "rate": n / seconds,
        "ceiling_rate": (n // REVIEWERS * REVIEWERS) / ceiling_s,
        "lease_p50_ms": pct(lease_s, 0.5),
        "lease_p99_ms": pct(lease_s, 0.99),
        "submit_p50_ms": pct(submit_s, 0.5),
        "submit_p99_ms": pct(submit_s, 0.99),
    }


async def _page_phase(settings: Settings, client, prefix: str, count: int) -> dict:
    import aiohttp
    from aiohttp import web

    from streams.review.web import create_review_app

    q = ReviewQueue(client, prefix, lease_ms=settings.review_lease_s * 1000)
    accounts = Reviewers(client, prefix)
    token = accounts.add(f"page-{uuid.uuid4().hex[:6]}")
    app = create_review_app(settings, q, accounts, relay=None)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    pairs: list[float] = []
    size = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            async with http.get(base + "/", headers=headers) as r:
                html = await r.text()
            m_item = re.search(r'name="item_id" value="([^"]+)"', html)
            m_lease = re.search(r'name="lease_id" value="([^"]+)"', html)
            if not (m_item and m_lease):
                break
            size = max(size, len(html))
            form = {
                "item_id": m_item.group(1),
                "lease_id": m_lease.group(1),
                "accuracy": "4",
                "helpfulness": "4",
                "safety": "5",
                "passed": "1",
            }
            async with http.post(base + "/verdict", data=form, headers=headers, allow_redirects=False) as r:
                if r.status != 303:
                    raise jt.BenchError(f"POST /verdict answered {r.status}: {(await r.text())[:200]}")
            pairs.append(time.perf_counter() - t0)
        seconds = time.perf_counter() - started
    await runner.cleanup()

    page_body = "x" * size

    async def bare_get(_request):
        return web.Response(text=page_body, content_type="text/html")

    async def bare_post(request):
        await request.post()
        return web.Response(status=303, headers={"Location": "/"})

    bare = web.Application()
    bare.router.add_get("/", bare_get)
    bare.router.add_post("/verdict", bare_post)
    runner = web.AppRunner(bare)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for _ in range(len(pairs)):
            async with http.get(f"http://127.0.0.1:{port}/") as r:
                await r.text()
            async with http.post(f"http://127.0.0.1:{port}/verdict", data={"a": "1"}, allow_redirects=False) as r:
                await r.read()
        ceiling_s = time.perf_counter() - started
    await runner.cleanup()
    n = len(pairs)
    return {
        "verdicts": n,
        "seconds": seconds,
        "rate": n / seconds,
        "ceiling_rate": n / ceiling_s,
        "p50_ms": pct(pairs, 0.5),
        "p99_ms": pct(pairs, 0.99),
        "page_bytes": size,
    }


def phase_relay(settings: Settings, client, prefix: str, timeout: float) -> dict:
    from confluent_kafka import Producer

    from flywheel.sdk import DEFAULT_CONFIG
    from streams.review.relay import VerdictRelay

    q = ReviewQueue(client, prefix)
    pending = q.stats().outbox
    codec = Codec()
    payloads = [(v.request_id.encode(), codec.encode("verdict", v.to_dict())) for _, v in q.outbox(pending)]
    relay = VerdictRelay(settings, q, codec)
    started = time.perf_counter()
    sent = relay.flush(timeout)
    seconds = time.perf_counter() - started
    relay.close()
    if sent != pending or q.stats().outbox:
        raise jt.BenchError(f"relay sent {sent} of {pending}")
    conf = {k: v for k, v in DEFAULT_CONFIG.items() if k != "client.id"}
    p = Producer({**conf, "bootstrap.servers": settings.broker_url})
    started = time.perf_counter()
    for key, value in payloads:
        p.produce(settings.topic_verdicts + ".ceiling", key=key, value=value)
        p.poll(0)
    if p.flush(timeout):
        raise jt.BenchError("the ceiling producer did not finish")
    ceiling_s = time.perf_counter() - started
    return {"verdicts": sent, "seconds": seconds, "rate": sent / seconds, "ceiling_rate": len(payloads) / ceiling_s}


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="review-bench-"))
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}:review"
    redis_server = broker = None
    client = None
    try:
        redis_url = DEFAULT_REDIS
        if not redis_answers(redis_url):
            redis_url = f"redis://127.0.0.1:{free_port()}/0"
            log(f"no Redis at {DEFAULT_REDIS}; starting an embedded one at {redis_url}")
            redis_server = EmbeddedRedis(redis_url, workdir / "redis")
        client = redis.Redis.from_url(redis_url)

        batch = decisions(args.decisions, args.seed)
        sampler = phase_sampler(batch, run_id)
        log(
            f"sampler: {sampler['decisions']:,} in {sampler['seconds']:.2f}s = {sampler['rate']:,.0f}/s; "
            f"sampled {sampler['share']:.2%} {sampler['by_class']}"
        )
        items = sampler["_items"][: args.items]
        if len(items) < args.items:  # more than the sample: pad with random-class copies under new ids
            extra = [
                ReviewItem(f"{it.item_id}-x{k}", it.candidate, True, ["random"], it.probability, it.window)
                for k in range(1, 1 + args.items // max(1, len(items)))
                for it in sampler["_items"]
            ]
            items += extra[: args.items - len(items)]
        enqueue = phase_enqueue(client, prefix, items)
        log(
            f"enqueue: {enqueue['items']:,} in {enqueue['seconds']:.2f}s = {enqueue['rate']:,.0f}/s; "
            f"{enqueue['redis_bytes_per_item']:,.0f} Redis bytes per item"
        )

        page_n = min(args.page_verdicts, len(items) // 4)
        review = phase_review(redis_url, prefix, len(items) - page_n)
        log(f"review: {review['verdicts']:,} verdicts in {review['seconds']:.2f}s = {review['rate']:,.0f}/s")

        broker = EmbeddedBroker(workdir / "broker")
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            redis_url=redis_url,
            app_id=f"bench-{run_id}",
            topic_verdicts=f"bench-{run_id}.verdicts",
            metrics_port=0,
        ).validate()
        create_topics(settings)
        jt.create_topic(broker.bootstrap, settings.topic_verdicts + ".ceiling", settings.partitions)
        page = asyncio.run(_page_phase(settings, client, prefix, page_n))
        log(f"page: {page['verdicts']:,} verdicts in {page['seconds']:.2f}s = {page['rate']:,.0f}/s")
        relay = phase_relay(settings, client, prefix, args.timeout)
        log(f"relay: {relay['verdicts']:,} in {relay['seconds']:.2f}s = {relay['rate']:,.0f}/s")
        return {
            "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
            "sampler": {k: v for k, v in sampler.items() if not k.startswith("_")},
            "enqueue": enqueue,
            "review": review,
            "page": page,
            "relay": relay,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        if client is not None:
            for key in client.scan_iter(f"{prefix}:*", count=1000):
                client.delete(key)
        if broker is not None:
            broker.stop()
        if redis_server is not None:
            redis_server.stop()


def table(r: dict) -> str:
    def row(name, d, unit, extra=""):
        ratio = d["rate"] / d["ceiling_rate"]
        return f"| {name} | {d['rate']:,.0f} {unit}/s | {d['ceiling_rate']:,.0f} {unit}/s | {ratio:.1%} | {extra} |"

    s = r["sampler"]
    return "\n".join(
        [
            f"review throughput on {r['machine']}",
            "| phase | rate | ceiling (same run) | ratio | notes |",
            "|---|---|---|---|---|",
            row("sampler (in process)", s, "decisions", f"sampled {s['share']:.2%}: {s['by_class']}"),
            row(
                "enqueue (Lua, batches of 128)",
                r["enqueue"],
                "items",
                f"{r['enqueue']['redis_bytes_per_item']:,.0f} Redis bytes/item",
            ),
            row(
                f"lease + submit, {REVIEWERS} reviewers",
                r["review"],
                "verdicts",
                f"lease p50 {r['review']['lease_p50_ms']:.2f} / p99 {r['review']['lease_p99_ms']:.2f} ms, "
                f"submit p50 {r['review']['submit_p50_ms']:.2f} / p99 {r['review']['submit_p99_ms']:.2f} ms",
            ),
            row(
                "review page GET + POST",
                r["page"],
                "verdicts",
                f"p50 {r['page']['p50_ms']:.1f} / p99 {r['page']['p99_ms']:.1f} ms, page {r['page']['page_bytes']:,} bytes",
            ),
            row("relay to Kafka", r["relay"], "verdicts"),
            f"peak RSS {r['peak_rss_mib']:.0f} MiB",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = jt.Parser(prog="review_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--items", type=jt.positive_int, default=20_000, help="items through the queue (default: 20000)")
    p.add_argument(
        "--decisions",
        type=jt.positive_int,
        default=200_000,
        help="gate decisions through the sampler (default: 200000)",
    )
    p.add_argument(
        "--page-verdicts", type=jt.positive_int, default=1_000, help="verdicts given through the page (default: 1000)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds the relay may take (default: 120)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    return jt.report("review_throughput", run, table, args)


if __name__ == "__main__":
    sys.exit(main())
