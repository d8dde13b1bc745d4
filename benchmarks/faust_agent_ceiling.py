"""How fast can a Faust agent go on this machine when it does nothing? The evidence behind running
the join as a batch service rather than a per-event agent (see streams/join/service.py).

Produces N records to a 4-partition topic on the embedded broker, then runs a Faust worker whose
agent only counts (`stream.events()`, or `stream.take_events()` with --take), and prints records/s.

    .venv/bin/python benchmarks/faust_agent_ceiling.py [--records 60000] [--take]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from flywheel.embedded import EmbeddedBroker  # noqa: E402
from streams.app import pause_after_empty_fetches  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=60_000)
    ap.add_argument("--take", action="store_true", help="batch with take_events(1000, 0.05) instead of events()")
    args = ap.parse_args()
    if args.records <= 0:
        ap.error("--records must be positive")
    broker = EmbeddedBroker(tempfile.mkdtemp(prefix="faust-ceiling-"))
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for f in admin.create_topics([NewTopic("src", 4, 1)]).values():
            f.result()
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        for i in range(args.records):
            p.produce("src", key=str(i).encode(), value=b"x" * 350)
            if i % 10_000 == 0:
                p.poll(0)
        p.flush()
        pause_after_empty_fetches(10)  # same treatment of the embedded broker as the worker gets
        app = faust.App(
            "faust-ceiling",
            broker=f"kafka://{broker.bootstrap}",
            store="memory://",
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=4,
            consumer_auto_offset_reset="earliest",
            web_enabled=False,
            datadir=tempfile.mkdtemp(),
        )
        state = {"n": 0, "t0": 0.0, "rate": 0.0}

        def count(n: int) -> None:
            if not state["t0"]:
                state["t0"] = time.perf_counter()
            state["n"] += n
            if state["n"] >= args.records and not state["rate"]:
                state["rate"] = state["n"] / (time.perf_counter() - state["t0"])
                os.kill(os.getpid(), signal.SIGINT)

        @app.agent(app.topic("src"))
        async def noop(stream):
            if args.take:
                async for batch in stream.take_events(1000, within=0.05):
                    count(len(batch))
            else:
                async for _ in stream.events():
                    count(1)

        try:
            faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()
        except SystemExit:
            pass
        mode = "take_events" if args.take else "events"
        print(
            f"faust no-op agent ({mode}): {state['rate']:,.0f} records/s over {state['n']:,} records, "
            f"{os.cpu_count()} CPUs"
        )
        print(json.dumps({"mode": mode, "records": state["n"], "records_per_s": round(state["rate"])}))
        return 0 if state["rate"] else 1
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
