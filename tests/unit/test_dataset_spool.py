"""The builder's spool of open windows: what a seal reads instead of the log, used only when it
holds exactly the members the clock counted, and cut back to the saved positions after a crash."""

from __future__ import annotations

import os

from streams.datasets import spool
from streams.datasets.spool import WindowSpool

SRC = "flywheel.candidates.passed/3"
OTHER = "flywheel.candidates.rejected/0"


def filled(tmp_path, offsets=(10, 11, 15), window=7) -> WindowSpool:
    sp = WindowSpool(str(tmp_path / "spool"))
    for o in offsets:
        sp.append(window, SRC, o, f"value-{o}".encode(), {"x-schema": b"candidate.v1"} if o == 15 else None)
    sp.flush()
    return sp


def test_members_come_back_in_order_with_their_headers(tmp_path):
    sp = filled(tmp_path)
    assert list(spool.read(sp.path(7, SRC))) == [
        (10, b"value-10", None),
        (11, b"value-11", None),
        (15, b"value-15", {"x-schema": b"candidate.v1"}),
    ]
    assert sp.path(7, SRC).endswith(os.path.join("7", "flywheel.candidates.passed@3.spool"))


def test_a_spool_is_complete_only_with_exactly_the_counted_members_inside_the_span(tmp_path):
    sp = filled(tmp_path)
    path = sp.path(7, SRC)
    assert spool.complete(path, 10, 16, 3)
    assert not spool.complete(path, 10, 16, 4)  # a member the spool missed (it ran without one for a while)
    assert not spool.complete(path, 10, 15, 3)  # a frame past the span's stop
    assert not spool.complete(path, 11, 16, 3)  # a frame before its first offset
    assert not spool.complete(sp.path(8, SRC), 10, 16, 3) and not spool.complete("", 0, 1, 0)  # no file
    sp.append(7, SRC, 15, b"again", None)  # the same offset twice
    sp.flush()
    assert not spool.complete(path, 10, 16, 4)


def test_resume_cuts_what_a_crash_wrote_past_the_saved_position_torn_frames_included(tmp_path):
    sp = filled(tmp_path, offsets=(10, 11, 12, 13))
    sp.append(7, OTHER, 4, b"rejected-4", None)
    sp.close()
    path = sp.path(7, SRC)
    with open(path, "ab") as f:  # a frame whose payload never reached the disk
        f.write(spool.HEADER.pack(500, 14) + b"partial")
    assert not spool.complete(path, 10, 15, 4)
    fresh = WindowSpool(sp.directory)
    fresh.resume([7], {SRC: 12, OTHER: 9})  # the saved state had read up to offset 11
    assert [o for o, _, _ in spool.read(path)] == [10, 11]
    assert [o for o, _, _ in spool.read(fresh.path(7, OTHER))] == [4]
    fresh.append(7, SRC, 12, b"value-12", None)  # read again from the log after the restart
    fresh.flush()
    assert spool.complete(path, 10, 13, 3)


def test_resume_and_drop_remove_the_files_of_windows_no_longer_open(tmp_path):
    sp = filled(tmp_path, window=5)
    for o in (20, 21):
        sp.append(6, SRC, o, b"v", None)
    sp.flush()
    fresh = WindowSpool(sp.directory)
    fresh.resume([6], {SRC: 100})  # window 5 was sealed before the crash
    assert sorted(os.listdir(sp.directory)) == ["6"]
    fresh.append(6, SRC, 22, b"v", None)
    fresh.drop(6)
    assert os.listdir(sp.directory) == []
    WindowSpool(str(tmp_path / "never-made")).resume([1], {SRC: 0})  # nothing there: nothing to do


def test_pass_two_reads_the_scratch_entries_in_event_time_order_and_only_those_it_wants(tmp_path):
    """The seal's scratch file (pass 1's built records): pass 2 gets them sorted by (event time, tie
    hash) whatever order they were written in, and never reads an entry `wanted` leaves out."""
    import marshal

    from streams.datasets.builder import SCRATCH_HEAD, SCRATCH_PREF, SCRATCH_SFT, _scratch_entries

    entries = [(30, 5, SCRATCH_SFT), (10, 9, SCRATCH_SFT), (10, 2, SCRATCH_PREF), (20, 7, SCRATCH_SFT | SCRATCH_PREF)]
    path = tmp_path / "p00000.records"
    with open(path, "wb") as f:
        for timestamp, tie, flags in entries:
            payload = marshal.dumps((f"req-{tie}", timestamp))
            f.write(SCRATCH_HEAD.pack(len(payload), timestamp, tie, flags) + payload)
    assert list(_scratch_entries(str(path))) == [("req-2", 10), ("req-9", 10), ("req-7", 20), ("req-5", 30)]
    kept = {9}  # an SFT-only entry not kept makes no record: it is not read
    wanted = lambda tie, flags: bool(flags & SCRATCH_PREF or (flags & SCRATCH_SFT and tie in kept))  # noqa: E731
    assert list(_scratch_entries(str(path), wanted)) == [("req-2", 10), ("req-9", 10), ("req-7", 20)]
