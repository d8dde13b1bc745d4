#!/usr/bin/env python
"""The negative-flywheel guards: what counting costs per joined request, and what judging costs.

    .venv/bin/python benchmarks/guard_throughput.py                  # 200,000 candidates
    .venv/bin/python benchmarks/guard_throughput.py --candidates 20000

Phases, each beside a ceiling measured in the same run:

1. count   the guard runner's work per batch of 200 Avro-encoded candidates and their 200 gate
           decisions (counted by topic, not decoded): decode, the fields each adds
           (`candidate_fields`), merged, and one Redis pipeline into the current bucket: candidates/s. Ceiling: the same batches decoded and nothing else (a counter over the
           topic can do no less).
2. judge   `GuardKeeper.judge` over 65 full buckets (the default 5 recent + 60 baseline, each
           with actions, task types and versions): p50 and p99 ms per judgement. Ceiling: the
           same Redis pipeline of 65 HGETALLs alone.

Also: Redis bytes per bucket and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import platform
import random
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from schemas.codec import Codec  # noqa: E402
from schemas.records import TrainingCandidate  # noqa: E402
from flywheel.policy import GatePolicy  # noqa: E402
from streams.guards.counts import Cap, candidate_fields  # noqa: E402
from streams.guards.keeper import keeper_for  # noqa: E402
from streams.guards.monitors import merge  # noqa: E402

BATCH = 200
ACTIONS = (
    ["accepted"] * 50 + ["copied"] * 10 + ["corrected"] * 10 + ["regenerated"] * 10 + ["abandoned"] * 10 + [""] * 10
)
TASKS = (
    ["qa"] * 40
    + ["sql"] * 25
    + ["summarise"] * 20
    + ["code"] * 10
    + ["legal", "medical", "poetry", "chemistry", "tax"]
)


def encoded(n: int, seed: int) -> list[bytes]:
    rng, codec, out = random.Random(seed), Codec(), []
    for i in range(n):
        action = rng.choice(ACTIONS)
        c = TrainingCandidate(
            request_id=f"req-{i:07d}",
            timestamp=1_767_225_600_000 + i,
            user_id=f"u{rng.randrange(5000)}",
            session_id=f"s{i}",
            prompt=f"question {i} " * 8,
            response=f"an answer to question {i} " * 12,
            user_action=action,
            actions=[action] if action else [],
            task_type=rng.choice(TASKS),
            model_version=rng.choice(["v0001", "v0001", "v0002"]),
            latency_ms=120.0,
        )
        out.append(codec.encode("candidate", c.to_dict()))
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=200_000)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--judgements", type=int, default=200)
    args = ap.parse_args()
    if args.candidates < BATCH:
        print(f"guard_throughput: error: --candidates must be >= {BATCH}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis_url)
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    keeper = keeper_for(client, app_id, GatePolicy())
    store, codec = keeper.store, Codec()
    values = encoded(args.candidates, 1)
    batches = [values[i : i + BATCH] for i in range(0, len(values), BATCH)]
    try:
        tasks, versions = Cap(50), Cap(50)
        started = time.perf_counter()
        for batch in batches:
            fields = merge(
                [
                    candidate_fields(TrainingCandidate.from_dict(codec.decode("candidate", v)), tasks, versions)
                    for v in batch
                ]
                + [{"passed" if i % 10 < 7 else "rejected": 1} for i in range(len(batch))]
            )
            store.add(fields)
        count_s = time.perf_counter() - started
        started = time.perf_counter()
        for batch in batches:
            for v in batch:
                TrainingCandidate.from_dict(codec.decode("candidate", v))
        bare_s = time.perf_counter() - started

        # 65 full buckets behind now, each holding everything counted above
        g = store.policy
        now = time.time()
        current = store.bucket(now)
        full = merge(
            [
                {k.decode(): int(v) for k, v in client.hgetall(key).items()}
                for key in client.scan_iter(f"{store.prefix}:b:*", count=1000)
            ]
        )
        for b in range(current - g.recent_buckets - g.baseline_buckets, current):
            client.hset(f"{store.prefix}:b:{b}", mapping=full)
        bucket_bytes = client.memory_usage(f"{store.prefix}:b:{current - 1}") or 0
        judge_s, bare_judge_s = [], []
        for _ in range(args.judgements):
            t = time.perf_counter()
            j = keeper.judge(now)
            judge_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.windows(now)
            bare_judge_s.append(time.perf_counter() - t)
        assert all(s.judged for s in j.signals) and not any(s.firing for s in j.signals)
    finally:
        for key in client.scan_iter(f"{app_id}:*", count=1000):
            client.delete(key)

    n = len(values)
    print(
        f"guard_throughput on {platform.machine()} ({platform.python_version()}), {n:,} candidates in batches of {BATCH}"
    )
    print(
        f"count  {n / count_s:>10,.0f} candidates/s   ceiling (decode only) {n / bare_s:>10,.0f}/s   "
        f"ratio {bare_s / count_s:.2f}"
    )
    print(
        f"judge  p50 {pct(judge_s, 0.5):6.2f} ms  p99 {pct(judge_s, 0.99):6.2f} ms   ceiling (65 HGETALLs) "
        f"p50 {pct(bare_judge_s, 0.5):6.2f} ms   ratio {pct(bare_judge_s, 0.5) / pct(judge_s, 0.5):.2f}"
    )
    print(
        f"redis  {bucket_bytes:,} bytes per bucket ({len(full)} fields)   peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
