"""Simulated traffic: deterministic, honours its spec, and its expectations agree with the join."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from flywheel.simulate import BEHAVIOURS, DEFAULT_MIX, TrafficSpec, generate, send
from schemas.codec import Codec
from schemas.records import Interaction, UserAction
from streams.join.labels import build_candidate

T0 = 1_700_000_000_000
WINDOW = 30 * 60_000
codec = Codec()


@pytest.fixture(scope="module")
def traffic():
    spec = TrafficSpec(4000, seed=7, start_ms=T0, duplicate_rate=0.1, out_of_order_rate=0.1, late_rate=0.05)
    return generate(spec, WINDOW)


def by_request(traffic):
    out = collections.defaultdict(list)
    for i, e in enumerate(traffic.events):
        out[e.request_id].append((i, e))
    return out


def test_deterministic_by_seed():
    spec = TrafficSpec(300, seed=3, start_ms=T0)
    a, b = generate(spec, WINDOW), generate(dataclasses.replace(spec), WINDOW)
    assert [(e.kind, e.record) for e in a.events] == [(e.kind, e.record) for e in b.events]
    assert a.expected == b.expected
    assert [codec.encode(e.kind, e.record) for e in a.events] == [codec.encode(e.kind, e.record) for e in b.events]
    c = generate(dataclasses.replace(spec, seed=4), WINDOW)
    assert [e.record for e in c.events] != [e.record for e in a.events]


def test_every_record_is_valid(traffic):
    for e in traffic.events:
        codec.check(e.kind, e.record)
        (Interaction if e.kind == "interaction" else UserAction).from_dict(e.record).check()
    words = [
        len(e.record["response"].split())
        for e in traffic.events
        if e.kind == "interaction" and e.request_id not in traffic.personal and e.request_id not in traffic.toxic
    ]
    assert min(words) >= 20 and max(words) <= 80
    assert sum(e.kind == "interaction" for e in traffic.events) == len(traffic.expected) == 4000


def test_mix_roughly_honoured(traffic):
    on_time = [r for r in traffic.requests if not r.late]
    counts = collections.Counter(r.behaviour for r in on_time)
    total = sum(DEFAULT_MIX.values())
    for b in BEHAVIOURS:
        share = counts[b] / len(on_time)
        assert abs(share - DEFAULT_MIX[b] / total) < 0.03, (b, share)
    late = sum(r.late for r in traffic.requests) / len(traffic.requests)
    assert 0.03 < late < 0.07
    feedback = sum(any(a in ("thumbs_up", "thumbs_down", "rated") for a in r.actions) for r in on_time) / len(on_time)
    assert 0.11 < feedback < 0.19


def test_custom_mix_is_honoured():
    spec = TrafficSpec(1000, seed=1, start_ms=T0, action_mix={"corrected": 1.0}, late_rate=0, feedback_rate=0)
    t = generate(spec, WINDOW)
    assert set(t.expected.values()) == {"corrected"}
    assert all(e.record["correction"] for e in t.events if e.kind == "action" and e.record["action"] == "corrected")


def check_expectations(traffic, window) -> collections.Counter:
    """Each expectation follows from the request's real actions, by the rules of labels.py."""
    groups = by_request(traffic)
    outcomes = collections.Counter()
    for rid, expected in traffic.expected.items():
        events = [e for _, e in groups[rid]]
        inter = Interaction.from_dict(next(e.record for e in events if e.kind == "interaction"))
        actions = [UserAction.from_dict(e.record) for e in events if e.kind == "action" and not e.duplicate]
        cand = build_candidate(inter, actions, settle_window_ms=window, settled_at=inter.event_time + window)
        assert cand.user_action == expected, rid
        if not [a for a in actions if a.event_time <= inter.event_time + window]:
            assert expected == "abandoned"
        outcomes[expected] += 1
    return outcomes


def test_expectations_follow_the_rules(traffic):
    seen_kinds = check_expectations(traffic, WINDOW)
    # every outcome occurs, the feedback-only ones too
    assert set(seen_kinds) == {
        "accepted",
        "copied",
        "corrected",
        "regenerated",
        "abandoned",
        "thumbs_up",
        "thumbs_down",
        "rated",
    }
    # precedence is exercised: some requests have two primary actions
    assert (
        sum(
            len({a for a in r.actions if a in ("corrected", "copied", "accepted", "regenerated")}) > 1
            for r in traffic.requests
        )
        > 20
    )


def test_out_of_order_duplicates_and_late_are_present(traffic):
    groups = by_request(traffic)
    ooo = [r for r in traffic.requests if r.out_of_order]
    assert len(ooo) > 50
    for r in ooo:
        first_action = min(i for i, e in groups[r.request_id] if e.kind == "action")
        interaction = next(i for i, e in groups[r.request_id] if e.kind == "interaction")
        assert first_action < interaction
    dups = [e for e in traffic.events if e.duplicate]
    assert len(dups) > 50
    originals = {codec.encode("action", e.record) for e in traffic.events if e.kind == "action" and not e.duplicate}
    assert all(codec.encode("action", d.record) in originals for d in dups)  # identical bytes
    late = [r for r in traffic.requests if r.late]
    assert len(late) > 50
    for r in late:
        actions = [e for _, e in groups[r.request_id] if e.kind == "action" and not e.duplicate]
        assert len(actions) == 1 and actions[0].event_time > r.event_time + WINDOW
        assert r.expected == "abandoned"


def test_send_order_is_event_time_order_but_for_out_of_order(traffic):
    """Only the deliberate disorder: the join's watermark must never pass a request before its events."""
    latest = 0
    for e in traffic.events:
        if e.kind == "interaction":
            assert e.event_time + WINDOW > latest  # sent before its window could have closed
        latest = max(latest, e.event_time)


def test_sessions_tasks_and_regenerations(traffic):
    per_session = collections.Counter(r.session_id for r in traffic.requests)
    assert max(per_session.values()) >= 5 and sum(n > 1 for n in per_session.values()) > 100
    tasks = collections.Counter(r.task_type for r in traffic.requests)
    shares = sorted((n / len(traffic.requests) for n in tasks.values()), reverse=True)
    assert shares[0] > 0.3 and sum(s < 0.03 for s in shares) >= 5  # a few common, several rare
    reqs = {r.request_id: r for r in traffic.requests}
    prompts = {e.request_id: e.record["prompt"] for e in traffic.events if e.kind == "interaction"}
    regenerated = [r for r in traffic.requests if "regenerated" in r.actions and not r.late]
    successors = {r.successor_of: r for r in traffic.requests if r.successor_of}
    assert regenerated and all(r.request_id in successors for r in regenerated)
    for r in regenerated:
        s = successors[r.request_id]
        assert s.session_id == r.session_id and prompts[s.request_id] == prompts[r.request_id]
        assert s.event_time > r.event_time and reqs[s.request_id] is s


def test_small_window_keeps_actions_inside():
    t = generate(TrafficSpec(500, seed=2, start_ms=T0, late_rate=0.1), 5000)
    check_expectations(t, 5000)
    assert sum(r.late for r in t.requests) > 20


def test_the_join_agrees():
    """Run the real join state machine over the traffic, in send order, across partitions."""
    core_mod = pytest.importorskip("streams.join.core")
    window, delay, parts = 10 * 60_000, 60_000, 4
    t = generate(
        TrafficSpec(1500, seed=11, start_ms=T0, duplicate_rate=0.2, out_of_order_rate=0.2, late_rate=0.1), window
    )
    j = core_mod.JoinCore(
        codec,
        core_mod.DictStore(),
        settle_window_ms=window,
        watermark_delay_ms=delay,
        marker_horizon_ms=24 * 3_600_000,
        max_event_bytes=256 * 1024,
    )
    offsets = collections.Counter()
    got: dict[str, str] = {}

    def rec(kind, p, key, value, headers=None):
        offsets[kind, p] += 1
        return core_mod.Record(kind, kind, p, offsets[kind, p], key, value, headers or {})

    def run(batch):
        for c in j.apply_all(batch).candidates:
            got[c.key.decode()] = c.user_action

    batch = []
    for e in t.events:
        batch.append(
            rec(e.kind, sum(e.request_id.encode()) % parts, e.request_id.encode(), codec.encode(e.kind, e.record))
        )
        if len(batch) == 40:
            run(batch)
            batch = []
    run(batch)
    tick = str(t.last_event_time + window + delay + 1).encode()
    run([rec(k, p, None, b"", {core_mod.TICK_HEADER: tick}) for p in range(parts) for k in ("interaction", "action")])
    assert got == t.expected


class FakeProducer:
    def __init__(self):
        from flywheel.settings import Settings

        self.settings = Settings(watermark_delay_ms=1234)
        self.calls = []

    def log_interaction(self, **record):
        self.calls.append(("interaction", record))

    def log_action(self, **record):
        self.calls.append(("action", record))

    def heartbeat(self, ms):
        self.calls.append(("heartbeat", ms))
        return 8

    def flush(self, timeout=30):
        self.calls.append(("flush", timeout))
        return 0


def test_send_produces_in_order_then_ticks_then_flushes():
    t = generate(TrafficSpec(40, seed=5, start_ms=T0, duplicate_rate=0.3), WINDOW)
    p = FakeProducer()
    counts = send(t, p, settle_window_ms=WINDOW)
    assert [c[1] for c in p.calls[:-2]] == [e.record for e in t.events]
    assert p.calls[-2] == ("heartbeat", t.last_event_time + WINDOW + 1234 + 1)
    assert p.calls[-1][0] == "flush"
    assert counts["interactions"] == 40 and counts["actions"] + 40 == len(t.events)
    assert counts["duplicates"] == sum(e.duplicate for e in t.events) > 0 and counts["ticks"] == 8


def test_send_throttles_and_can_skip_ticks():
    import time

    t = generate(TrafficSpec(10, seed=5, start_ms=T0, feedback_rate=0, action_mix={"none": 1.0}), WINDOW)
    p = FakeProducer()
    began = time.monotonic()
    send(t, p, rate=50, tail_ticks=False, settle_window_ms=WINDOW)
    assert time.monotonic() - began >= 9 / 50 * 0.9
    assert not any(c[0] == "heartbeat" for c in p.calls)


def test_spec_is_validated():
    with pytest.raises(ValueError, match="action_mix"):
        generate(TrafficSpec(10, action_mix={"liked": 1.0}), WINDOW)
    with pytest.raises(ValueError, match="late_rate"):
        generate(TrafficSpec(10, late_rate=2), WINDOW)


def test_personal_data_and_abuse_are_in_the_texts_the_gate_sees(traffic):
    interactions = {e.request_id: e.record for e in traffic.events if e.kind == "interaction"}
    assert 0.02 < len(traffic.personal) / len(interactions) < 0.045
    assert 0.004 < len(traffic.toxic) / len(interactions) < 0.02
    for rid, values in traffic.personal.items():
        text = interactions[rid]["prompt"] + " " + interactions[rid]["response"]
        assert all(v in text for v in values)
    assert all(
        "stupid" in interactions[rid]["response"] or "moron" in interactions[rid]["response"] for rid in traffic.toxic
    )
    spec = TrafficSpec(
        4000,
        seed=7,
        start_ms=T0,
        duplicate_rate=0.1,
        out_of_order_rate=0.1,
        late_rate=0.05,
        pii_rate=0.0,
        toxic_rate=0.0,
    )
    clean = generate(spec, WINDOW)
    assert not clean.personal and not clean.toxic
    # the join's traffic does not move when the rates do: same ids, same actions
    assert clean.expected == traffic.expected


def test_context_holds_the_supporting_passage(traffic):
    with_context = [e.record for e in traffic.events if e.kind == "interaction" and e.record["retrieved_context"]]
    assert with_context and {r["task_type"] for r in with_context} <= {"qa", "legal", "medical"}
    from streams.gate.grounding import grounding

    # right answers are grounded in their context (wrong ones are what corrections fix)
    scores = [grounding(r["response"], r["retrieved_context"]).score for r in with_context]
    assert sum(s == 1.0 for s in scores if s is not None) / len(scores) > 0.7
