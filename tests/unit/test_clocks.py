"""`flywheel clocks`, the pure parts: resetting a poisoned window clock, the dataset builder's and the
join's views and plans, and the command's parsing and printing."""

from __future__ import annotations

import argparse
import json

import pytest

from flywheel.clocks import parse_time, table
from schemas.codec import Codec
from schemas.records import Interaction
from streams.datasets import clockadmin as ds_admin
from streams.datasets.windows import LATE, MEMBER, WindowClock
from streams.join import clockadmin as join_admin
from streams.join.state import JoinState, encode_state

DAY = 86_400_000
WEEK = 7 * DAY
LAG = 14 * DAY
W0 = 2925  # a window of late 2026
T0 = W0 * WEEK
NOW = T0 + 10 * DAY
FAR = T0 + 5000 * DAY  # a producer's clock a dozen years ahead
A, B = "t.passed/0", "t.passed/1"
RA = "t.rejected/0"


def day(d: float) -> int:
    return T0 + int(d * DAY)


def poisoned() -> WindowClock:
    """Two partitions; partition 0 read a record dated FAR at offset 5, then records of the open
    windows (late, since its clock stood at FAR)."""
    c = WindowClock(WEEK, LAG, [A, B, RA])
    for i, d in enumerate([1, 2, 3, 8, 9]):
        assert c.observe(A, i, day(d)).kind == MEMBER
    assert c.observe(A, 5, FAR).kind == MEMBER  # opens a window far ahead
    assert c.observe(A, 6, day(9.5)).kind == LATE
    assert c.observe(A, 7, day(2.5)).kind == LATE
    for i, d in enumerate([1.5, 8.5]):
        c.observe(B, i, day(d))
    c.observe(RA, 0, day(1))
    return c


def test_a_reset_sets_a_poisoned_source_back_and_reopens_what_the_far_future_record_crossed():
    c = poisoned()
    far_window = c.window_of(FAR)
    assert c.high(A) == FAR and c.pending() == [W0, W0 + 1, far_window]
    assert c.span(W0).spans[A] == (0, 5) and c.span(W0 + 1).spans[A] == (3, 5)  # crossed by the poison at offset 5
    change = c.reset([A, RA], NOW)
    assert change.sources == {A: (FAR, NOW)}  # RA's clock was not ahead: untouched
    assert c.high(A) == NOW and c.high(B) == day(8.5) and c.position(A) == 8  # nothing is re-read
    assert change.spans_dropped == [(far_window, A, 1)] and change.windows_dropped == [far_window]
    assert c.pending() == [W0, W0 + 1]
    assert sorted(change.spans_reopened) == [(W0, A, 5), (W0 + 1, A, 5)]
    span = c.span(W0)
    assert span.spans[A] == (0, 8) and span.log_only == frozenset(
        {A}
    )  # the seal reads [0, 8) from the log: 6 and 7 too
    assert change.late_forgotten == 0 and change.changed
    # from now on the source is on time again: a record of the open window is a member
    assert c.observe(A, 8, day(4)).kind == MEMBER
    # and the state keeps the reopened span's mark across a restart
    again = WindowClock.from_json(c.to_json())
    assert again.to_json() == c.to_json() and again.span(W0).log_only == frozenset({A})
    assert (
        WindowClock.from_json(WindowClock(WEEK, LAG, [A]).to_json()).to_json() == WindowClock(WEEK, LAG, [A]).to_json()
    )


def test_a_reset_to_a_time_the_clock_has_not_reached_changes_nothing():
    c = poisoned()
    before = c.to_json()
    change = c.reset([B], NOW)
    assert not change.changed and change.sources == {} and c.to_json() == before


def test_a_far_future_seal_no_longer_makes_every_window_count_as_sealed_after_a_reset():
    c = WindowClock(WEEK, LAG, [A])
    c.observe(A, 0, day(1))
    assert c.ready() == []
    c.observe(A, 1, day(30))  # legit: window W0 is due
    assert [s.index for s in c.ready()] == [W0]
    c.seal(W0)
    c.observe(A, 2, day(31))
    c.observe(A, 3, FAR)
    c.observe(A, 4, FAR + 30 * DAY)  # two far-future records: the first one's window is due
    far = c.window_of(FAR)
    ready = [s.index for s in c.ready()]
    assert far in ready
    for i in ready:
        c.seal(i)
    assert c.is_sealed(W0 + 4)  # every window of today counts as sealed: all of today's records come late
    assert c.observe(A, 5, day(32)).kind == LATE
    today = day(60)
    change = c.reset(
        [A], today, stored_windows=[W0, W0 + 4, far]
    )  # the store holds the datasets of W0, W0 + 4 and far
    assert far in change.unsealed and change.newest_sealed == (max(ready), W0 + 4)
    assert c.is_sealed(W0) and c.is_sealed(W0 + 4) and not c.is_sealed(W0 + 5) and not c.is_sealed(far)
    assert c.observe(A, 6, day(50)).kind == MEMBER  # window W0 + 7, whose boundary (day 70) is still ahead


def test_builder_rows_mark_the_poisoned_source_and_the_far_window():
    c = poisoned()
    rows = ds_admin.rows(c, {"t.passed": "passed", "t.rejected": "rejected"}, NOW, 15 * 60_000)
    by_source = {r["source"]: r for r in rows if r["partition"] is not None}
    assert by_source[A]["suspect"] and by_source[A]["high_ms"] == FAR and by_source[A]["topic"] == "passed"
    assert not by_source[B]["suspect"] and by_source[RA]["topic"] == "rejected"
    assert by_source[A]["open_windows"] == [W0, W0 + 1, c.window_of(FAR)]
    whole = rows[-1]
    assert (
        whole["partition"] is None
        and whole["suspect"]
        and [w["suspect"] for w in whole["open"]] == [False, False, True]
    )
    assert json.loads(json.dumps(rows)) == rows  # JSON lines as they are
    text = table(rows, NOW, 15 * 60_000)
    assert "t.passed/0" not in text and "! " in text and "+" in text
    # with the bound off nothing is suspect
    assert not any(r["suspect"] for r in ds_admin.rows(c, {}, NOW, -1))


def test_builder_plan_leaves_the_clock_alone_and_says_what_it_would_do():
    c = poisoned()
    before = c.to_json()
    after, change = ds_admin.plan(c, 0, NOW, stored_windows=[])
    assert c.to_json() == before and after.high(A) == NOW
    text = "\n".join(ds_admin.consequences(change, c))
    assert "goes back from" in text and "forgotten" in text and "open again" in text and "dropped" in text
    with pytest.raises(ds_admin.ClockAdminError, match="no partition 7"):
        ds_admin.plan(c, 7, NOW)
    _, nothing = ds_admin.plan(c, 1, NOW)
    assert ds_admin.consequences(nothing, c) == [
        f"nothing to reset: no clock of this partition stands after {ds_admin.iso(NOW)}"
    ]


# -- the join -----------------------------------------------------------------------------------------

SETTLE = 30 * 60_000
HORIZON = DAY


def head(key: str, state: JoinState) -> join_admin.StateHead:
    return join_admin.parse_head(key.encode(), encode_state(state))


def test_join_state_heads_are_read_from_the_changelog_bytes():
    codec = Codec()
    i = Interaction("r1", "s", "u", FAR, "m", "p", "r")
    data = codec.encode("interaction", i.to_dict())
    pending = JoinState(3, FAR + SETTLE, i, data, [], {b"12345678"})
    h = head("r1", pending)
    assert (h.partition, h.due, h.settled, h.has_interaction) == (3, FAR + SETTLE, False, True)
    assert h.event_time(SETTLE, HORIZON) == FAR
    marker = JoinState(3, NOW + SETTLE)
    marker.settle(NOW + SETTLE + HORIZON)
    assert head("r2", marker).event_time(SETTLE, HORIZON) == NOW and head("r2", marker).settled
    assert join_admin.parse_head(b"k", b"\x02garbage") is None and join_admin.parse_head(b"k", b"") is None


def test_join_rows_plan_and_consequences():
    heads = {
        0: {
            b"ok": head("ok", JoinState(0, NOW - 60_000 + SETTLE)),
            b"poison": head("poison", JoinState(0, FAR + SETTLE)),
            b"done": head("done", _settled(0, NOW - DAY)),
        },
        1: {},
    }
    rows = join_admin.rows(heads, {0: 1}, SETTLE, HORIZON, NOW, 15 * 60_000, {0: FAR // 1000 * 1000})
    r0, r1 = rows
    assert (r0["states"], r0["pending"], r0["settled"], r0["ahead_states"], r0["unreadable"]) == (3, 2, 1, 1, 1)
    assert r0["max_event_time_ms"] == FAR and r0["suspect"] and r0["watermark_ms"] == FAR // 1000 * 1000
    assert r1["states"] == 0 and not r1["suspect"] and r1["max_event_time_ms"] is None
    doomed = join_admin.plan(heads[0], NOW, SETTLE, HORIZON)
    assert [h.key for h in doomed] == [b"poison"]
    text = "\n".join(join_admin.consequences(doomed, 0, NOW, SETTLE, HORIZON))
    assert (
        "1 pending request(s)" in text
        and "poison" in text
        and "orphan_action" in text
        and "gone from the join" in text
    )
    assert join_admin.consequences([], 0, NOW, SETTLE, HORIZON)[0].startswith("nothing to reset")
    # a reset to a time before today's requests deletes them too: the plan says so
    assert {h.key for h in join_admin.plan(heads[0], NOW - 2 * DAY, SETTLE, HORIZON)} == {b"ok", b"poison", b"done"}
    text = table(rows, NOW, 15 * 60_000)
    assert "join (state in its changelog" in text and "!" in text


def _settled(partition: int, event_time: int) -> JoinState:
    s = JoinState(partition, event_time + SETTLE)
    s.settle(event_time + SETTLE + HORIZON)
    return s


def test_live_watermarks_are_read_from_the_metrics_text():
    text = (
        '# HELP flywheel_join_watermark_seconds x\nflywheel_join_watermark_seconds{partition="0"} 1.8e+09\n'
        'flywheel_join_watermark_seconds{partition="12"} 1796636922.5\nflywheel_other 1\n'
    )
    assert join_admin.live_watermarks(text) == {0: 1_800_000_000_000, 12: 1_796_636_922_500}


# -- the command ----------------------------------------------------------------------------------------


def test_times_are_iso_ms_or_now():
    assert (
        parse_time("2026-12-07T10:00:00Z")
        == parse_time("2026-12-07T10:00:00")
        == parse_time("2026-12-07T11:00:00+01:00")
    )
    assert parse_time("1796636922000") == 1_796_636_922_000
    assert abs(parse_time("now") - parse_time(str(parse_time("now")))) < 1000
    for bad in ("yesterday", "1796636922", "99999999999999999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_time(bad)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["clocks"], "COMMAND"),
        (["clocks", "reset", "--partition", "0", "--to", "now"], "--role"),
        (["clocks", "reset", "--role", "datasets", "--partition", "-1", "--to", "now"], "--partition"),
        (["clocks", "reset", "--role", "datasets", "--partition", "0", "--to", "soon"], "--to"),
        (["clocks", "show", "--role", "gate"], "--role"),
    ],
)
def test_wrong_arguments_give_one_line_and_exit_2(argv, needle, capsys):
    from flywheel.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and needle in err[0]
