"""The simulator's ground truth (what each request must become, which dead letters it makes on purpose)
and where it puts a run in event time: after what the topics already hold, never behind it."""

from __future__ import annotations

import collections
import time

import pytest

from flywheel.settings import Settings, SettingsError
from flywheel.simulate import EventTimeConflict, Traffic, TrafficSpec, generate, place
from schemas.codec import Codec
from schemas.records import TrainingCandidate
from streams.join.core import TICK_HEADER, DictStore, JoinCore, Record

T0 = 1_700_000_000_000
WINDOW = 30 * 60_000
DAY = 86_400_000
codec = Codec()


def join(t: Traffic, parts: int = 4, delay: int = 60_000):
    """The real join state machine over the traffic in send order: {request id: (user_action, actions)}
    and the request ids of its dead letters by reason."""
    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=WINDOW,
        watermark_delay_ms=delay,
        marker_horizon_ms=DAY,
        max_event_bytes=256 * 1024,
    )
    offsets = collections.Counter()
    got, letters = {}, collections.defaultdict(set)

    def rec(kind, p, key, value, headers=None):
        offsets[kind, p] += 1
        return Record(kind, kind, p, offsets[kind, p], key, value, headers or {})

    def run(batch):
        out = j.apply_all(batch)
        for e in out.candidates:
            c = TrainingCandidate.from_dict(codec.decode("candidate", e.value))
            got[c.request_id] = (c.user_action, list(c.actions))
        for d in out.deadletters:
            letters[d.reason].add(d.key.decode())

    events = [
        rec(e.kind, sum(e.request_id.encode()) % parts, e.request_id.encode(), codec.encode(e.kind, e.record))
        for e in t.events
    ]
    for k in range(0, len(events), 50):
        run(events[k : k + 50])
    tick = str(t.last_event_time + WINDOW + delay + 1).encode()
    run([rec(k, p, None, b"", {TICK_HEADER: tick}) for p in range(parts) for k in ("interaction", "action")])
    return got, letters


@pytest.mark.parametrize("rate", [0.0066, 5.0])
def test_the_truth_is_what_the_join_makes_of_the_events(rate):
    t = generate(TrafficSpec(1500, seed=21, start_ms=T0, event_rate=rate, duplicate_rate=0.2, late_rate=0.1), WINDOW)
    got, letters = join(t)
    assert got == t.truth()
    assert letters == t.intended_deadletters() and len(letters["late_action"]) == sum(r.late for r in t.requests) > 0


def test_a_shift_moves_event_time_and_nothing_else():
    t = generate(TrafficSpec(300, seed=3, start_ms=T0), WINDOW)
    moved = t.shifted(7 * DAY)
    assert [e.event_time - 7 * DAY for e in moved.events] == [e.event_time for e in t.events]
    assert [(e.kind, e.request_id, e.duplicate) for e in moved.events] == [
        (e.kind, e.request_id, e.duplicate) for e in t.events
    ]
    assert moved.truth() == t.truth() and moved.intended_deadletters() == t.intended_deadletters()
    assert join(moved)[0] == join(t)[0]


def settings(**kw):
    return Settings(kafka_bootstrap="127.0.0.1:1", **kw)


def test_a_run_whose_start_the_simulator_chose_goes_after_what_the_topics_hold():
    now = int(time.time() * 1000)
    t = generate(TrafficSpec(200, seed=5, event_rate=0.01), WINDOW)
    assert t.movable and t.last_event_time < now
    claimed = t.last_event_time + 3 * WINDOW + 123  # an earlier run's closing tick, after this one's start
    moved = place(t, settings(max_event_ahead_ms=-1), claimed=claimed)
    assert moved.first_event_time == (claimed // 1000 + 1) * 1000 and moved.truth() == t.truth()
    assert place(t, settings(max_event_ahead_ms=-1), claimed=t.first_event_time - 1) is t  # nothing held after it
    fixed = generate(TrafficSpec(200, seed=5, start_ms=T0), WINDOW)
    assert not fixed.movable and place(fixed, settings(), claimed=T0 + 100 * DAY) is fixed  # a start given stays


def test_a_run_that_would_end_past_the_future_bound_is_refused_before_anything_is_sent():
    t = generate(TrafficSpec(2000, seed=5, event_rate=0.0066), WINDOW)  # five weeks, ending at the wall clock
    claimed = int(time.time() * 1000) - 20 * 60_000  # an earlier run ended just behind the wall clock
    with pytest.raises(EventTimeConflict, match="FLYWHEEL_MAX_EVENT_AHEAD_MS") as err:
        place(t, settings(), claimed=claimed)
    assert isinstance(err.value, SettingsError)  # the CLI says `flywheel: error: ...` and exits 2
    # a short run fits in the room the bound leaves after the same claim
    short = generate(TrafficSpec(50, seed=5, event_rate=5.0), 60_000)
    room = settings(settle_window_ms=60_000, watermark_delay_ms=1_000, marker_horizon_ms=60_000)
    assert place(short, room, claimed=short.last_event_time).first_event_time > short.last_event_time
