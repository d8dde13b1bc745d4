#!/usr/bin/env python
"""What a conversation costs the pure cores, beside a single-turn event, in one process and one run.

    .venv/bin/python benchmarks/conversation_cost.py               # 20,000 requests per shape
    .venv/bin/python benchmarks/conversation_cost.py --requests 5000

Two shapes of the same traffic: single-turn (prompt, response, no context) and conversation-sized
(system prompt, 4 turns with one tool call and its result before the turn answered, 3 retrieved
passages: the issue's "4 turns and 3 context passages"). For each, timed one after the other:

  codec      decode of the interaction's Avro bytes (the join's first step), per event
  join       JoinCore over interactions and actions (dict store), then settled by ticks: events/s
  gate pii   the gate's PiiStage with the gate's default redactor (patterns, secrets, ids, names by
             the NER model) over the first 1,000 candidates, 64 at a time: candidates/s
  records    sft_record + chat_sft (the dataset builder's per-record work): records/s

No broker: these are the cores the services run (streams/join/core.py, streams/gate/filters.py,
streams/datasets/content.py); the services' figures are in benchmarks/join_throughput.py and
gate_throughput.py. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from schemas.codec import TICK_HEADER, Codec  # noqa: E402
from schemas.records import Interaction, TrainingCandidate, UserAction  # noqa: E402
from streams.datasets import content  # noqa: E402
from streams.join.core import ACTION, INTERACTION, DictStore, JoinCore, Record  # noqa: E402

MIN = 60_000
T0 = 1_780_000_000_000


def interaction(i: int, conversation: bool) -> Interaction:
    q = f"My order {i} from Berlin has not arrived; can I get a refund? Write to me at anna{i}@example.com."
    a = "Orders not delivered within 10 business days are refunded in full; yours qualifies, so I started the refund."
    if not conversation:
        return Interaction(f"r{i}", f"s{i % 300}", f"u{i % 1000}", T0 + i, "m-3", q, a, task_type="support")
    turns = [
        {"role": "user", "content": f"Hi, I ordered a lamp (order {i}) two weeks ago."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": f"c{i}", "name": "lookup_order", "arguments": json.dumps({"order": i})}],
        },
        {
            "role": "tool",
            "content": json.dumps({"status": "in transit", "shipped": "2026-11-20"}),
            "tool_call_id": f"c{i}",
        },
        {"role": "assistant", "content": "It shipped on 20 November and is still in transit."},
        {"role": "user", "content": q},
    ]
    d = i % 50  # RAG retrieves from a document set: the same passages recur (and the redactor's cache sees them)
    passages = [
        f"Policy {d}.1: orders not delivered within 10 business days of dispatch are refunded in full or sent again.",
        f"Policy {d}.2: refunds are paid to the original payment method within 5 business days of approval.",
        f"Policy {d}.3: customers in the EU may also withdraw from a purchase within 14 days of delivery.",
    ]
    return Interaction(
        f"r{i}",
        f"s{i % 300}",
        f"u{i % 1000}",
        T0 + i,
        "m-3",
        q,
        a,
        task_type="support",
        system="You are Acme's support assistant. Answer from the documents.",
        messages=turns,
        retrieved_context=passages,
        tools=[
            {"name": "lookup_order", "description": "Find an order by its number", "parameters": '{"type": "object"}'}
        ],
    )


def measure(codec: Codec, n: int, conversation: bool, redactor) -> dict:
    from streams.gate.filters import Item, PiiStage

    inter = [codec.encode("interaction", interaction(i, conversation).to_dict()) for i in range(n)]
    acts = [
        codec.encode("action", UserAction(f"r{i}", f"u{i % 1000}", T0 + i + 1000, "accepted").to_dict())
        for i in range(n)
    ]
    out: dict = {"interaction_bytes": sum(map(len, inter)) / n}

    t = time.perf_counter()
    for v in inter:
        codec.decode("interaction", v)
    out["decode_us"] = (time.perf_counter() - t) / n * 1e6

    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=30 * MIN,
        watermark_delay_ms=0,
        marker_horizon_ms=24 * 60 * MIN,
        max_event_bytes=256 * 1024,
    )
    recs = []
    for i in range(n):
        recs.append(Record(INTERACTION, "i", 0, i, f"r{i}".encode(), inter[i]))
        recs.append(Record(ACTION, "a", 0, i, f"r{i}".encode(), acts[i]))
    end = str(T0 + n + 31 * MIN).encode()
    t = time.perf_counter()
    first = j.apply_all(recs)
    last = j.apply_all(
        [
            Record(INTERACTION, "i", 0, n, None, b"", {TICK_HEADER: end}),
            Record(ACTION, "a", 0, n, None, b"", {TICK_HEADER: end}),
        ]
    )
    out["join_events_per_s"] = 2 * n / (time.perf_counter() - t)
    emitted = first.candidates + last.candidates
    assert len(emitted) == n, len(emitted)
    out["candidate_bytes"] = sum(len(e.value) for e in emitted) / n
    cands = [TrainingCandidate.from_dict(codec.decode("candidate", e.value)) for e in emitted]

    m = min(n, 1000)
    items = [Item(c) for c in cands[:m]]
    stage = PiiStage(redactor)
    t = time.perf_counter()
    for k in range(0, m, 64):
        stage.run(items[k : k + 64])
    out["pii_candidates_per_s"] = m / (time.perf_counter() - t)
    assert all("anna" not in json.dumps(it.candidate.messages) for it in items)

    stats = content.WindowStats()
    t = time.perf_counter()
    for c in cands:
        r = content.sft_record(c, stats, 0.1)
        json.dumps(content.chat_sft(r), ensure_ascii=False)
    out["records_per_s"] = n / (time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args(argv)
    from streams.gate.pii import DEFAULT_ENTITIES, Redactor
    from flywheel.policy import GatePolicy

    codec = Codec()
    pii = GatePolicy().pii  # the gate's default redactor: patterns, secrets, ids and names (NER)

    def fresh():  # a redactor of its own per shape: its cache must not carry texts from one shape to the other
        r = Redactor(
            entities=pii.entities or DEFAULT_ENTITIES,
            score_threshold=pii.score_threshold,
            ner_model=pii.ner_model,
            locations=pii.locations,
        )
        r.redact(["warm up: write to bo@example.org, Bo Lee in Oslo"])
        return r

    load = os.getloadavg()[0]
    single = measure(codec, args.requests, False, fresh())
    conv = measure(codec, args.requests, True, fresh())
    rows = [
        ("interaction bytes (Avro)", "interaction_bytes", "{:,.0f}"),
        ("candidate bytes (Avro)", "candidate_bytes", "{:,.0f}"),
        ("decode, us/event", "decode_us", "{:.1f}"),
        ("join, events/s", "join_events_per_s", "{:,.0f}"),
        ("gate PII, candidates/s", "pii_candidates_per_s", "{:,.0f}"),
        ("SFT + chat record, /s", "records_per_s", "{:,.0f}"),
    ]
    print(f"{'':28} {'single-turn':>12} {'4 turns + 3 passages':>22} {'ratio':>7}")
    for label, key, fmt in rows:
        print(f"{label:28} {fmt.format(single[key]):>12} {fmt.format(conv[key]):>22} {conv[key] / single[key]:>7.2f}")
    print(
        f"{args.requests:,} requests per shape; load average {load:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(json.dumps({"requests": args.requests, "single_turn": single, "conversation": conv}, default=round))
    return 0


if __name__ == "__main__":
    sys.exit(main())
