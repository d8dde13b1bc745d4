"""The join state machine with a dict for a store: event time, precedence, orphans, replays."""

from __future__ import annotations

import random

from schemas import Codec
from schemas.records import Interaction, TrainingCandidate, UserAction
from streams.join.core import ACTION, INTERACTION, TICK_HEADER, DictStore, JoinCore, Record

MIN = 60_000
T0 = 1_700_000_000_000
codec = Codec()


def core(store=None, **kw):
    opts = dict(
        settle_window_ms=30 * MIN, watermark_delay_ms=0, marker_horizon_ms=24 * 60 * MIN, max_event_bytes=256 * 1024
    )
    opts.update(kw)
    return JoinCore(codec, DictStore() if store is None else store, **opts)


class Log:
    """A tiny two-input log for one partition, with offsets."""

    def __init__(self, partition=0):
        self.partition = partition
        self.offsets = {INTERACTION: 0, ACTION: 0}

    def rec(self, kind, value, key=None, headers=None):
        off = self.offsets[kind]
        self.offsets[kind] += 1
        return Record(kind, f"t.{kind}", self.partition, off, key, value, headers or {})

    def interaction(self, rid, t, session="s1", prompt="what is 2+2?", response="4", **kw):
        i = Interaction(rid, session, "u1", t, "m1", prompt, response, **kw)
        return self.rec(INTERACTION, codec.encode("interaction", i.to_dict()), rid.encode())

    def action(self, rid, t, action, **kw):
        a = UserAction(rid, "u1", t, action, **kw)
        return self.rec(ACTION, codec.encode("action", a.to_dict()), rid.encode())

    def tick(self, kind, t):
        return self.rec(kind, b"", None, {TICK_HEADER: str(t).encode()})


def cands(out):
    return [TrainingCandidate.from_dict(codec.decode("candidate", e.value)) for e in out.candidates]


def test_action_before_interaction_and_precedence():
    j, log = core(), Log()
    out = j.apply_all(
        [
            log.action("r1", T0 + MIN, "copied"),
            log.action("r1", T0 + 2 * MIN, "accepted"),
            log.interaction("r1", T0),
            log.action("r1", T0 + 3 * MIN, "corrected", correction="four"),
            log.action("r1", T0 + 4 * MIN, "thumbs_up"),
        ]
    )
    assert out.candidates == []  # nothing settles before the window closes
    out = j.apply_all([log.tick(INTERACTION, T0 + 31 * MIN), log.tick(ACTION, T0 + 31 * MIN)])
    [c] = cands(out)
    assert c.user_action == "corrected" and c.label == "sft_correction"
    assert c.target == "four" and (c.pair_chosen, c.pair_rejected) == ("four", "4")
    assert c.thumbs == 1 and c.time_to_action_ms == MIN
    assert c.actions == ["copied", "accepted", "corrected", "thumbs_up"]


def test_no_action_is_abandoned_and_late_action_is_dead_lettered():
    j, log = core(), Log()
    j.apply_all([log.interaction("r1", T0)])
    out = j.apply_all([log.tick(INTERACTION, T0 + 30 * MIN), log.tick(ACTION, T0 + 30 * MIN)])
    [c] = cands(out)
    assert c.user_action == "abandoned" and c.label == "negative"
    out = j.apply_all([log.action("r1", T0 + 40 * MIN, "accepted")])
    assert out.candidates == [] and [d.reason for d in out.deadletters] == ["late_action"]


def test_action_after_window_but_before_settle_is_not_counted():
    j, log = core(watermark_delay_ms=60 * MIN), Log()
    out = j.apply_all(
        [
            log.interaction("r1", T0),
            log.action("r1", T0 + 45 * MIN, "accepted"),
            log.tick(INTERACTION, T0 + 200 * MIN),
            log.tick(ACTION, T0 + 200 * MIN),
        ]
    )
    [c] = cands(out)
    assert c.user_action == "abandoned" and c.actions == []
    assert [d.reason for d in out.deadletters] == ["late_action"]


def test_watermark_waits_for_the_slower_input():
    j, log = core(), Log()
    j.apply_all([log.interaction("r1", T0), log.interaction("r2", T0 + 60 * MIN)])
    # the action input has said nothing yet: nothing may settle
    assert j.watermark(0) is None
    out = j.apply_all([log.action("r1", T0 + 5 * MIN, "accepted")])
    assert out.candidates == []  # actions only reached T0+5min
    # once the action input is known to be caught up, the interaction input alone drives time
    out = j.apply_all([], caught_up=(ACTION,))
    j.advance(0, caught_up=(ACTION,))
    [c] = cands(j.drain())
    assert c.request_id == "r1" and c.user_action == "accepted"


def test_duplicates_and_replay_after_settle_emit_nothing():
    j, log = core(), Log()
    i, a = log.interaction("r1", T0), log.action("r1", T0 + MIN, "accepted")
    j.apply_all([i, a, a, i])
    out = j.apply_all([log.tick(INTERACTION, T0 + 31 * MIN), log.tick(ACTION, T0 + 31 * MIN)])
    assert len(out.candidates) == 1 and j.stats["duplicates"] == 2
    out = j.apply_all([i, a])  # a replay of the same records after settling
    assert out.candidates == [] and out.deadletters == []


def test_other_interaction_with_same_id_is_dead_lettered():
    j, log = core(), Log()
    j.apply_all([log.interaction("r1", T0)])
    out = j.apply_all([log.interaction("r1", T0, response="different")])
    assert [d.reason for d in out.deadletters] == ["duplicate_request"]


def test_orphan_actions_are_dead_lettered_with_their_offsets():
    j, log = core(), Log()
    a = log.action("ghost", T0, "accepted")
    j.apply_all([a, log.interaction("r2", T0 + 40 * MIN)])
    out = j.apply_all([log.tick(ACTION, T0 + 40 * MIN)])
    [d] = out.deadletters
    assert (d.reason, d.source_offset, d.value) == ("orphan_action", a.offset, a.value)
    assert b"ghost" not in j.store


def test_bad_input_goes_to_dead_letter_and_keeps_going():
    j, log = core(max_event_bytes=2048), Log()
    bad = [
        log.rec(INTERACTION, b"\x00garbage"),
        log.rec(INTERACTION, b"\xc3\x01" + b"\x11" * 8 + b"body"),
        log.rec(ACTION, b'{"request_id": "x"}', b"x", {"content-type": b"application/json"}),
        log.rec(ACTION, b"{not json", b"x", {"content-type": b"application/json"}),
        log.rec(INTERACTION, b"\xc3\x01" + b"x" * 5000),
        log.action(
            "r9",
            T0,
            "accepted",
        ),
    ]
    bad[-1].key = b"other-key"
    out = j.apply_all(bad + [log.interaction("ok", T0)])
    assert [d.reason for d in out.deadletters] == [
        "undecodable",
        "unknown_fingerprint",
        "invalid_event",
        "invalid_json",
        "oversized",
        "invalid_event",
    ]
    assert all(d.value == r.value for d, r in zip(out.deadletters, bad))
    assert b"ok" in j.store


def test_json_events_join_like_avro():
    import json

    j, log = core(), Log()
    i = Interaction("rj", "s", "u1", T0, "m1", "p", "r").to_dict()
    a = {"request_id": "rj", "user_id": "u1", "event_time": T0 + MIN, "action": "copied"}
    h = {"content-type": b"application/json"}
    j.apply_all(
        [log.rec(INTERACTION, json.dumps(i).encode(), b"rj", h), log.rec(ACTION, json.dumps(a).encode(), b"rj", h)]
    )
    [c] = cands(j.apply_all([log.tick(INTERACTION, T0 + 31 * MIN), log.tick(ACTION, T0 + 31 * MIN)]))
    assert c.user_action == "copied" and c.label == "sft_positive"


def _events(n, seed):
    rng = random.Random(seed)
    log, events = Log(), []
    for k in range(n):
        t = T0 + k * 10_000
        events.append(("i", f"r{k}", t))
        for _ in range(rng.randint(0, 2)):
            events.append(
                (
                    "a",
                    f"r{k}",
                    t + rng.randint(0, 40 * MIN),
                    rng.choice(["accepted", "copied", "regenerated", "thumbs_up"]),
                )
            )
    end = T0 + n * 10_000 + 100 * MIN
    return log, events, end


def _run(store, recs, batch, crash_at=None):
    out = []
    j = core(store)
    for s in range(0, len(recs), batch):
        if crash_at is not None and s >= crash_at:
            j = core(store)  # a restart: state from the store, index rebuilt, clocks empty
            j.rebuild_index()
            crash_at = None
        out.extend(j.apply_all(recs[s : s + batch]).candidates)
    return out


def test_replay_is_deterministic_and_restart_loses_and_duplicates_nothing():
    log, events, end = _events(300, 7)
    recs = []
    for e in events:
        recs.append(log.interaction(e[1], e[2]) if e[0] == "i" else log.action(e[1], e[2], e[3]))
    # interleave the two inputs in two different ways: the result must not change
    inter = [r for r in recs if r.kind == INTERACTION]
    acts = sorted([r for r in recs if r.kind == ACTION], key=lambda r: codec.decode("action", r.value)["event_time"])
    tail = [log.tick(INTERACTION, end), log.tick(ACTION, end)]
    order_a = inter + acts + tail
    order_b = [x for pair in zip(acts, inter) for x in pair] + inter[len(acts) :] + acts[len(inter) :] + tail
    a = {e.key: e.value for e in _run(DictStore(), order_a, 17)}
    b = {e.key: e.value for e in _run(DictStore(), order_b, 50)}
    assert len(a) == 300 and a == b
    crashed = _run(DictStore(), order_b, 23, crash_at=230)
    assert {e.key: e.value for e in crashed} == a and len(crashed) == 300


def test_state_round_trips_through_its_changelog_format():
    from streams.join.state import JoinState, PendingAction, StateFormatError, decode_state, encode_state
    import pytest

    log = Log()
    i, a = log.interaction("r1", T0), log.action("r1", T0 + MIN, "copied")
    s = JoinState(
        3,
        T0 + 30 * MIN,
        Interaction.from_dict(codec.decode("interaction", i.value)),
        i.value,
        [PendingAction(7, UserAction.from_dict(codec.decode("action", a.value)), a.value)],
        {b"12345678"},
    )
    back = decode_state(codec, encode_state(s))
    assert back == s
    s.settle(T0 + 99)
    assert decode_state(codec, encode_state(s)) == s
    with pytest.raises(StateFormatError):
        decode_state(codec, encode_state(s)[:5])
