"""The dataset window clock: per-source membership, late records, readiness, spans, replays, state."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from streams.datasets.windows import LATE, MEMBER, REPLAY, SEALED_KEEP, Outcome, WindowClock, WindowSpan

DAY_MS = 86_400_000
WEEK = 7 * DAY_MS
LAG = 14 * DAY_MS
W0 = 2900  # window index of T0
T0 = W0 * WEEK  # aligned on a 7-day window start

A, B, C = "flywheel.candidates.passed/0", "flywheel.candidates.passed/1", "flywheel.candidates.passed/2"


def day(d: float) -> int:
    return T0 + int(d * DAY_MS)


def clock(sources=(A, B, C), window_ms=WEEK, lag_ms=LAG) -> WindowClock:
    return WindowClock(window_ms, lag_ms, sources)


def feed(c: WindowClock, source: str, days, start: int = 0) -> list[Outcome]:
    return [c.observe(source, start + i, day(d)) for i, d in enumerate(days)]


# window W0: days [0, 7), boundary day 21; W0+1: [7, 14), boundary 28; W0+2: [14, 21), boundary 35


def test_constructor_validates():
    with pytest.raises(ValueError):
        WindowClock(0, LAG)
    with pytest.raises(ValueError):
        WindowClock(-WEEK, LAG)
    with pytest.raises(ValueError):
        WindowClock(WEEK, -1)
    with pytest.raises(TypeError):
        WindowClock(7.5, LAG)  # type: ignore[arg-type]
    c = WindowClock(WEEK, 0, [A])
    assert c.sources == [A] and c.watermark is None and c.ready() == [] and c.pending() == []
    with pytest.raises(KeyError):
        c.observe(B, 0, day(0))
    c.add_source(B)
    c.add_source(B)  # idempotent
    assert c.sources == [A, B]


def test_geometry():
    c = clock()
    assert c.window_of(day(0)) == W0 and c.window_of(day(6.99)) == W0 and c.window_of(day(7)) == W0 + 1
    assert c.bounds(W0) == (day(0), day(7), day(21))
    assert c.window_of(-1) == -1  # floor division, not truncation


def test_out_of_order_within_lag_are_members_and_late_after_crossing():
    c = clock(sources=(A,))
    out = feed(c, A, [1, 3, 2, 8, 0.5, 10, 20.9, 6, 21, 5, 15, 28, 9, 14])
    assert out == [
        Outcome(MEMBER, W0),  # 0: day 1
        Outcome(MEMBER, W0),  # 1: day 3
        Outcome(MEMBER, W0),  # 2: day 2, out of order
        Outcome(MEMBER, W0 + 1),  # 3: day 8
        Outcome(MEMBER, W0),  # 4: day 0.5, a week late but inside the lag
        Outcome(MEMBER, W0 + 1),  # 5: day 10
        Outcome(MEMBER, W0 + 2),  # 6: day 20.9
        Outcome(MEMBER, W0),  # 7: day 6, high 20.9 < 21
        Outcome(MEMBER, W0 + 3),  # 8: day 21 crosses W0's boundary
        Outcome(LATE, W0),  # 9: day 5 after crossing
        Outcome(MEMBER, W0 + 2),  # 10: day 15
        Outcome(MEMBER, W0 + 4),  # 11: day 28 crosses W0+1
        Outcome(LATE, W0 + 1),  # 12: day 9
        Outcome(MEMBER, W0 + 2),  # 13: day 14, W0+2's boundary is day 35
    ]
    assert c.late_counts == {W0: 1, W0 + 1: 1}
    assert c.high(A) == day(28) and c.position(A) == 14
    [s0, s1] = c.ready()  # the only source is past 21 and 28
    assert (s0.index, s0.spans, s0.members, s0.first_event_time, s0.late) == (W0, {A: (0, 8)}, 5, day(0.5), 1)
    assert (s0.start_ms, s0.end_ms, s0.boundary_ms) == (day(0), day(7), day(21))
    assert (s1.index, s1.spans, s1.members, s1.first_event_time, s1.late) == (W0 + 1, {A: (3, 11)}, 2, day(8), 1)
    assert c.pending() == [W0, W0 + 1, W0 + 2, W0 + 3, W0 + 4]


def test_records_for_a_sealed_window_are_late():
    c = clock(sources=(A, B))
    feed(c, A, [1, 22])
    c.observe(B, 0, day(2))
    c.mark_idle(B)  # B stops holding W0 back
    [span] = c.ready()
    assert span.spans == {A: (0, 1), B: (0, 1)}  # B never crossed: read up to its position
    assert c.seal(W0) == span
    assert c.is_sealed(W0) and W0 not in c.pending()
    # B comes back with W0 data: its own high (day 2) is below the boundary, but W0 is sealed
    assert c.observe(B, 1, day(3)) == Outcome(LATE, W0)
    assert not c.is_idle(B)
    assert c.observe(A, 2, day(4)) == Outcome(LATE, W0)
    assert c.late_counts == {W0: 2}
    assert W0 not in c.pending() and c.ready() == []
    assert c.seal(W0) is None  # sealing twice changes nothing


def test_ready_waits_for_the_slowest_source():
    c = clock()
    feed(c, A, [1, 25])
    feed(c, B, [2, 30])
    assert c.ready() == []  # C has not been seen: the watermark is unknown
    assert c.watermark is None
    c.observe(C, 0, day(3))
    assert c.watermark == day(3) and c.ready() == []
    c.observe(C, 1, day(20.99))
    assert c.ready() == []
    c.observe(C, 2, day(21))  # exactly the boundary
    assert c.watermark == day(21)
    [span] = c.ready()
    assert span.index == W0 and span.spans == {A: (0, 1), B: (0, 1), C: (0, 2)}
    # C's day 20.99 falls in W0+2: C has one W0 member, and its stop is the day-21 record
    assert span.members == 3 and span.source_members == {A: 1, B: 1, C: 1}


def test_idle_sources_stop_holding_back_and_come_back():
    c = clock()
    feed(c, A, [1, 22])
    feed(c, B, [2, 23])
    c.observe(C, 0, day(3))
    assert c.ready() == []
    c.mark_idle(C)
    assert c.is_idle(C) and c.watermark == day(22)
    assert [s.index for s in c.ready()] == [W0]
    assert c.ready()[0].spans[C] == (0, 1)
    # C wakes up before the builder sealed: its records for W0 are still members, and it holds W0 back again
    assert c.observe(C, 1, day(4)) == Outcome(MEMBER, W0)
    assert c.ready() == [] and c.watermark == day(4)
    c.mark_idle(C)
    [span] = c.ready()
    assert span.spans[C] == (0, 2) and span.members == 4


def test_all_idle_is_the_end_of_a_finite_log():
    c = clock()
    feed(c, A, [1, 8, 15])
    feed(c, B, [2, 9, 19])
    feed(c, C, [3, 29])
    assert [s.index for s in c.ready()] == []  # watermark day 15
    c.mark_idle(A)
    c.mark_idle(B)
    assert c.watermark == day(29)
    assert [s.index for s in c.ready()] == [W0, W0 + 1]
    c.mark_idle(C)
    assert c.watermark is None
    # every source idle: the largest event time seen (day 29) stands in for the watermark
    ready = c.ready()
    assert [s.index for s in ready] == [W0, W0 + 1]  # W0+2 (boundary 35) and W0+4 wait for more data
    assert ready[0].spans == {A: (0, 3), B: (0, 3), C: (0, 1)}
    assert ready[1].spans == {A: (1, 3), B: (1, 3)}  # C has no member in W0+1
    assert c.pending() == [W0, W0 + 1, W0 + 2, W0 + 4]


def test_no_sources_or_all_idle_without_data():
    c = clock()
    for s in (A, B, C):
        c.mark_idle(s)
    assert c.ready() == [] and c.watermark is None
    assert WindowClock(WEEK, LAG).ready() == []


def test_spans_hold_first_and_stop_offsets_with_gaps():
    c = clock(sources=(A, B))
    # offsets with gaps (compaction, transaction markers); A's first W0 member is not at its first offset
    for off, d in [(10, 8), (12, 2), (15, 5), (16, 12), (20, 21), (21, 3), (30, 28)]:
        c.observe(A, off, day(d))
    for off, d in [(100, 1), (101, 27.5), (102, 6.9), (103, 40)]:
        c.observe(B, off, day(d))
    assert c.position(A) == 31 and c.position(B) == 104
    spans = {s.index: s for s in c.ready()}
    assert set(spans) == {W0, W0 + 1}
    assert spans[W0].spans == {A: (12, 20), B: (100, 101)}
    assert spans[W0].source_members == {A: 2, B: 1}
    assert spans[W0 + 1].spans == {A: (10, 30)}
    assert c.late_counts == {W0: 2}  # A's day 3 at 21, B's day 6.9 at 102


def _reread(log: list[tuple[int, int]], first: int, stop: int, window: int, c: WindowClock) -> list[int]:
    return [off for off, t in log if first <= off < stop and c.window_of(t) == window]


def _interleave(logs: dict[str, list[tuple[int, int]]], rng: random.Random) -> list[tuple[str, int, int]]:
    cursors = {s: 0 for s in logs}
    out = []
    while any(cursors[s] < len(logs[s]) for s in logs):
        s = rng.choice([s for s in logs if cursors[s] < len(logs[s])])
        off, t = logs[s][cursors[s]]
        cursors[s] += 1
        out.append((s, off, t))
    return out


def _streams(rng: random.Random, n: int = 120) -> dict[str, list[tuple[int, int]]]:
    """Per source: event time drifts forward, with out-of-order jitter up to 20 days (so some
    records fall inside the lag and some behind it)."""
    logs = {}
    for s in (A, B, C):
        now = day(rng.uniform(0, 3))
        log, off = [], rng.randrange(0, 50)
        for _ in range(n):
            now += int(rng.uniform(0, 0.8) * DAY_MS)
            t = now - int(rng.uniform(0, 20) * DAY_MS) if rng.random() < 0.3 else now
            log.append((off, t))
            off += rng.choice((1, 1, 1, 2, 5))
        logs[s] = log
    return logs


def _run(order, c: WindowClock):
    """Feeds records in `order`, sealing whatever is ready after each; returns outcomes per
    (source, offset) and the sealed spans with what re-reading them gives back."""
    outcomes, sealed = {}, []
    for s, off, t in order:
        outcomes[(s, off)] = c.observe(s, off, t)
        for span in c.ready():
            assert c.seal(span.index) == span
            sealed.append(span)
    return outcomes, sealed


def test_membership_does_not_depend_on_interleaving():
    rng = random.Random(7)
    logs = _streams(rng)
    clocks = [clock() for _ in range(3)]
    runs = [_run(_interleave(logs, random.Random(seed)), c) for seed, c in zip((1, 2, 3), clocks)]
    (out1, sealed1), (out2, sealed2), (out3, sealed3) = runs
    assert out1 == out2 == out3
    # `late` is a count at seal time (other sources' late records may come before or after it);
    # everything that decides the dataset is the same
    same = [[dataclasses.replace(s, late=0) for s in sealed] for sealed in (sealed1, sealed2, sealed3)]
    assert same[0] == same[1] == same[2]
    assert clocks[0].late_counts == clocks[1].late_counts == clocks[2].late_counts
    assert [s.late for s in sealed1] != [s.late for s in sealed2]  # the interleavings do differ
    kinds = {o.kind for o in out1.values()}
    assert kinds == {MEMBER, LATE}  # the stream exercises both
    assert len(sealed1) >= 5
    assert [s.index for s in sealed1] == sorted(s.index for s in sealed1)


def test_rereading_the_spans_gives_exactly_the_members():
    for seed in range(5):
        rng = random.Random(seed)
        logs = _streams(rng)
        c = clock()
        outcomes, sealed = _run(_interleave(logs, rng), c)
        for s in (A, B, C):
            c.mark_idle(s)
        for span in c.ready():  # end of the log: seal what the last event time allows
            assert c.seal(span.index) == span
            sealed.append(span)
        assert sealed
        for span in sealed:
            for s, log in logs.items():
                members = sorted(
                    off for (src, off), o in outcomes.items() if src == s and o == Outcome(MEMBER, span.index)
                )
                if s not in span.spans:
                    assert members == []
                    continue
                first, stop = span.spans[s]
                assert _reread(log, first, stop, span.index, c) == members
                assert span.source_members[s] == len(members)
            assert span.members == sum(span.source_members.values())
            late = sum(1 for o in outcomes.values() if o == Outcome(LATE, span.index))
            assert span.late <= late == c.late_counts.get(span.index, 0)


def test_replays_below_the_position_are_ignored():
    c = clock(sources=(A, B))
    feed(c, A, [1, 2, 22])
    feed(c, B, [3, 23])
    before = c.to_json()
    # a restart from older committed offsets re-delivers A 0..2 and B 1
    assert feed(c, A, [1, 2, 22]) == [Outcome(REPLAY, W0), Outcome(REPLAY, W0), Outcome(REPLAY, W0 + 3)]
    assert c.observe(B, 1, day(23)) == Outcome(REPLAY, W0 + 3)
    assert c.to_json() == before
    # a replayed record would otherwise be late (day 1 after crossing day 21): not counted either
    assert c.late_counts == {}
    assert c.observe(A, 3, day(4)) == Outcome(LATE, W0)
    [span] = c.ready()
    assert span.spans == {A: (0, 2), B: (0, 1)} and span.members == 3


def test_state_round_trip_mid_stream_decides_the_same():
    rng = random.Random(11)
    logs = _streams(rng)
    order = _interleave(logs, rng)
    straight = clock()
    out_straight, sealed_straight = _run(order, straight)

    cut = len(order) // 2
    first = clock()
    out1, sealed1 = _run(order[:cut], first)
    first.mark_idle(C)  # idle flags travel with the state too
    raw = first.to_json()
    json.loads(raw)  # plain JSON
    restored = WindowClock.from_json(raw)
    assert restored.to_json() == raw
    assert WindowClock.from_json(raw.encode()).to_json() == raw
    assert WindowClock.from_json(json.loads(raw)).to_json() == raw
    assert restored.is_idle(C)
    restored.mark_active(C)
    # a restart replays a few records before the checkpoint: they are ignored
    replayed = [r for r in order[max(0, cut - 20) : cut]]
    for s, off, t in replayed:
        assert restored.observe(s, off, t).kind == REPLAY
    out2, sealed2 = _run(order[cut:], restored)
    assert {**out1, **out2} == out_straight
    assert sealed1 + sealed2 == sealed_straight
    assert restored.to_json() == straight.to_json()


def test_from_json_rejects_garbage():
    with pytest.raises(ValueError):
        WindowClock.from_json("{}")
    with pytest.raises(ValueError):
        WindowClock.from_json(json.dumps({"v": 1, "window_ms": WEEK}))
    raw = json.loads(clock().to_json())
    raw["window_ms"] = 0
    with pytest.raises(ValueError):
        WindowClock.from_json(raw)


def test_multiple_windows_sealed_in_order():
    c = clock(sources=(A, B))
    feed(c, A, [1, 8, 15, 22, 29, 36, 43])
    feed(c, B, [2, 9, 16, 23, 30, 37, 44])
    assert c.watermark == day(43)
    ready = c.ready()
    assert [s.index for s in ready] == [W0, W0 + 1, W0 + 2, W0 + 3]  # boundaries 21, 28, 35, 42
    for i, span in enumerate(ready):
        assert span.spans == {A: (i, i + 3), B: (i, i + 3)}
        assert span.members == 2 and span.first_event_time == day(1 + 7 * i)
        assert c.seal(span.index) == span
    assert c.sealed == [W0, W0 + 1, W0 + 2, W0 + 3]
    assert c.pending() == [W0 + 4, W0 + 5, W0 + 6]
    assert c.ready() == []
    feed(c, A, [50], start=7)
    feed(c, B, [49], start=7)
    assert [s.index for s in c.ready()] == [W0 + 4]


def test_28_day_window_with_no_lag():
    win = 28 * DAY_MS
    c = WindowClock(win, 0, [A, B])
    base = 1000 * win
    assert c.observe(A, 0, base + 27 * DAY_MS) == Outcome(MEMBER, 1000)
    assert c.observe(A, 1, base + 3 * DAY_MS) == Outcome(MEMBER, 1000)  # out of order, high below the end
    assert c.observe(B, 0, base + win - 1) == Outcome(MEMBER, 1000)
    assert c.ready() == []
    assert c.observe(A, 2, base + win) == Outcome(MEMBER, 1001)  # the first instant of the next window crosses
    assert c.observe(A, 3, base + 5 * DAY_MS) == Outcome(LATE, 1000)  # no lag: straight away late
    assert c.ready() == []  # B has not crossed
    assert c.observe(B, 1, base + win) == Outcome(MEMBER, 1001)
    [span] = c.ready()
    assert (span.start_ms, span.end_ms, span.boundary_ms) == (base, base + win, base + win)
    assert span.spans == {A: (0, 2), B: (0, 1)} and span.members == 3 and span.late == 1


def test_sealed_set_is_bounded():
    c = WindowClock(WEEK, 0, [A])
    for i in range(200):
        c.observe(A, i, (W0 + i) * WEEK)
        for span in c.ready():
            c.seal(span.index)
    newest = W0 + 198  # the last window has not been crossed
    assert c.pending() == [W0 + 199]
    assert max(c.sealed) == newest
    assert len(c.sealed) == SEALED_KEEP + 1
    assert min(c.sealed) == newest - SEALED_KEEP
    # windows dropped from the set still count as sealed: even a brand-new source's records for them are late
    for w in (W0, W0 + 5, newest - SEALED_KEEP - 1, newest - SEALED_KEEP, newest):
        assert c.is_sealed(w)
    assert not c.is_sealed(newest + 1)
    c.add_source(B)
    assert c.observe(B, 0, W0 * WEEK) == Outcome(LATE, W0)
    assert c.observe(B, 1, (newest - 1) * WEEK) == Outcome(LATE, newest - 1)
    assert c.observe(B, 2, (W0 + 199) * WEEK) == Outcome(MEMBER, W0 + 199)
    assert len(json.loads(c.to_json())["sealed"]) == SEALED_KEEP + 1
    assert WindowClock.from_json(c.to_json()).is_sealed(W0)


def test_window_span_is_frozen():
    span = WindowSpan(0, 0, 1, 1, {}, 0, 0, 0)
    with pytest.raises(AttributeError):
        span.members = 3  # type: ignore[misc]
