#!/usr/bin/env python
"""Same events in, same datasets out, at size: the simulator's traffic (default 20,000 requests over
five weeks of event time) through real worker processes (join and gate) and the dataset builder,
four ways, each on fresh topics of the embedded broker: a backlog read by one worker, live beside
one worker, live beside two workers, and a backlog read by a worker killed with kill -9 twice.
Prints each way's dataset ids per window and its wall time, and whether all four agree.

    .venv/bin/python benchmarks/same_datasets.py                     # 20,000 requests, 5 weeks
    .venv/bin/python benchmarks/same_datasets.py --requests 3000     # a quick run

The ways are the integration test's (tests/integration/test_same_datasets.py), at a size CI cannot
afford. The ceiling printed beside each way is the backlog way's time: the other ways add waiting
for live traffic, a second worker's rebalance or restarts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from flywheel.embedded import EmbeddedBroker  # noqa: E402
from flywheel.settings import Settings  # noqa: E402
from flywheel.simulate import TrafficSpec, generate  # noqa: E402
from tests.integration.test_same_datasets import WEEK, run_way  # noqa: E402

WAYS = ("backlog", "live", "two-workers", "kill-9")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--weeks", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--redis-url", default=os.environ.get("FLYWHEEL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--ways", default=",".join(WAYS), help="some of " + ", ".join(WAYS))
    ap.add_argument(
        "--keep", default="", help="a directory to run in and keep (logs, stores); default: a temporary one"
    )
    args = ap.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="same-datasets-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(work / "broker")
        try:
            settings = Settings(
                kafka_bootstrap=broker.bootstrap,
                redis_url=args.redis_url,
                metrics_port=0,
                empty_fetch_backoff_ms=10,
                partitions=4,
                app_id=f"same-{uuid.uuid4().hex[:6]}",
            )
            # a fixed start (a week boundary before the traffic's span): the same ids on every run this week
            start = (int(time.time() * 1000) - int((args.weeks + 1) * WEEK)) // WEEK * WEEK
            spec = TrafficSpec(
                requests=args.requests,
                seed=args.seed,
                start_ms=start,
                event_rate=args.requests / (args.weeks * 7 * 86_400),
                duplicate_rate=0.05,
                out_of_order_rate=0.1,
                late_rate=0.03,
            )
            traffic = generate(spec, settings.settle_window_ms)
            times = [e.record["event_time"] for e in traffic.events if e.kind == "interaction"]
            expected = len({t // WEEK for t in times if (t // WEEK + 1) * WEEK <= max(times)})
            results, seconds = {}, {}
            for way in ways:
                began = time.perf_counter()
                (work / way).mkdir()
                results[way] = run_way(way, settings, work / way, traffic, expected)
                seconds[way] = time.perf_counter() - began
                print(
                    f"{way:12s} {seconds[way]:7.1f} s ({seconds[way] / seconds.get('backlog', seconds[way]):.2f}x the backlog way)  "
                    f"{[results[way][w][0] for w in sorted(results[way])]}",
                    flush=True,
                )
        finally:
            broker.stop()
    ids = {way: [res[w][0] for w in sorted(res)] for way, res in results.items()}
    first = ways[0]
    same = all(
        ids[w] == ids[first]
        and {k: v[1] for k, v in results[w].items()} == {k: v[1] for k, v in results[first].items()}
        for w in ways
    )
    records = sum(r[2] for r in results[first].values())
    print(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "requests": args.requests,
                "weeks": args.weeks,
                "windows": expected,
                "records": records,
                "seconds": {w: round(s, 1) for w, s in seconds.items()},
                "dataset_ids": ids,
                "identical_ids_and_shards": same,
            },
            indent=1,
        )
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
