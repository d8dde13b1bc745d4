"""The join's one use of the wall clock, liveness, at the wall clock's pace: an input read to its end
and silent moves its clock on by the silence (less `idle_input_ms`), never to the other input's
clock. Live, a partition whose actions stopped still settles; in a backlog or a replay, where event
time runs days per second, a silence of seconds cannot settle a request before its actions are read.
(Before, an idle input stopped holding the watermark at all: measured on real traffic, five weeks
produced in a second beside an idle worker gave 1,166 to 2,227 orphan actions of 5,072 in five runs.)"""

from __future__ import annotations

from aiokafka import TopicPartition

from flywheel.settings import Settings
from schemas import Codec
from streams.join.core import ACTION, INTERACTION
from streams.join.service import JoinService
from streams.metrics import JoinMetrics
from tests.unit.test_join_core import MIN, T0, Log, cands, core

DAY = 24 * 60 * MIN


def idle(j, caught_up):
    """No records, as the worker's idle step: the watermark moves with what `caught_up` says."""
    j.advance(0, caught_up)
    return j.drain()


def test_an_idle_input_counts_only_as_far_as_its_silence_not_to_the_other_inputs_clock():
    j, log = core(), Log()
    # a fast backlog: the interactions of three days are read, the actions only up to the first hour
    j.apply_all([log.interaction(f"r{i}", T0 + i * 10 * MIN) for i in range(3 * 24 * 6)])
    j.apply_all([log.action("r0", T0 + 5 * MIN, "accepted")])
    assert j.watermark(0, {ACTION: 2_000}) == T0 + 5 * MIN + 2_000  # its own clock, two seconds on
    out = idle(j, {ACTION: 2_000})
    assert out.candidates == []  # r0's window is still open: its actions may still come
    # the actions follow: r1's arrives, and r0 settles with its own action, never as abandoned
    out = j.apply_all([log.action("r1", T0 + 12 * MIN, "copied"), log.tick(ACTION, T0 + 45 * MIN)])
    assert [(c.request_id, c.user_action) for c in cands(out)] == [("r0", "accepted"), ("r1", "copied")]
    assert out.deadletters == []


def test_live_a_partition_whose_actions_stopped_still_settles_once_the_silence_covers_the_window():
    j, log = core(), Log()
    j.apply_all(
        [log.interaction("r1", T0), log.action("r1", T0 + MIN, "accepted"), log.interaction("r2", T0 + 2 * MIN)]
    )
    # live, event time is wall time: interactions go on to T0+40min, actions have been silent since T0+1min
    j.apply_all([log.interaction("r3", T0 + 40 * MIN)])
    assert cands(idle(j, {ACTION: 20 * MIN})) == []  # actions known up to T0+21min: r1 is due at T0+30
    out = idle(j, {ACTION: 39 * MIN})
    assert [(c.request_id, c.user_action) for c in cands(out)] == [("r1", "accepted"), ("r2", "abandoned")]


def test_an_input_not_heard_from_holds_and_the_old_collection_form_still_lets_it_go():
    j, log = core(), Log()
    j.apply_all([log.interaction("r1", T0), log.interaction("r2", T0 + 2 * DAY)])
    assert j.watermark(0, {ACTION: 10 * DAY}) is None  # no action clock to move on: nothing may settle
    assert cands(idle(j, {ACTION: 10 * DAY})) == []
    # a caller that knows an input is finished (a bounded replay) may still say so: it then holds nothing back
    out = idle(j, (ACTION,))
    assert [c.request_id for c in cands(out)] == ["r1"]


def test_both_inputs_silent_move_together_from_the_slower_clock():
    j, log = core(), Log()
    j.apply_all([log.interaction("r1", T0), log.action("r1", T0 + 20 * MIN, "copied")])
    assert j.watermark(0, {INTERACTION: 5 * MIN, ACTION: 5 * MIN}) == T0 + 5 * MIN
    out = idle(j, {INTERACTION: 31 * MIN, ACTION: 31 * MIN})
    assert [(c.request_id, c.user_action) for c in cands(out)] == [("r1", "copied")]


def test_a_replay_labels_the_same_whatever_the_silences_in_between():
    """The same log in batches with silences of a few seconds between them, against the same log at
    once with ticks: identical candidates, byte for byte."""

    def run(silence_ms):
        j, log = core(watermark_delay_ms=MIN), Log()
        recs = []
        for i in range(200):
            t = T0 + i * 15 * MIN  # a request every quarter hour of event time
            recs.append(log.interaction(f"r{i}", t))
            if i % 3:
                recs.append(log.action(f"r{i}", t + 20 * MIN, "accepted"))
        # the interactions read far ahead of the actions, as a fast backlog's fetches do
        inter = [r for r in recs if r.kind == INTERACTION]
        acts = [r for r in recs if r.kind == ACTION]
        out = []
        for k in range(0, 200, 50):
            out += j.apply_all(inter[k : k + 50], caught_up={ACTION: silence_ms}).candidates
            out += j.apply_all(acts[k // 50 * 33 : (k // 50 + 1) * 33], caught_up={INTERACTION: silence_ms}).candidates
        out += j.apply_all(
            acts[132:] + [log.tick(INTERACTION, T0 + 60 * DAY), log.tick(ACTION, T0 + 60 * DAY)]
        ).candidates
        return sorted((e.key, e.value) for e in out)

    assert run(3_000) == run(0)
    assert len(run(3_000)) == 200


class FakeConsumer:
    def __init__(self):
        self.hw, self.polled = {}, {}

    def highwater(self, tp):
        return self.hw.get(tp)

    def last_poll_timestamp(self, tp):
        return self.polled.get(tp)


def service(idle_input_ms=5_000):
    svc = JoinService(Settings(kafka_bootstrap="127.0.0.1:1", idle_input_ms=idle_input_ms), Codec(), JoinMetrics())
    svc.consumer = FakeConsumer()
    return svc


def test_caught_up_measures_the_silence_up_to_the_brokers_latest_word_on_the_log_end():
    svc = service()
    s = svc.settings
    inter, act = TopicPartition(s.topic_interactions, 0), TopicPartition(s.topic_actions, 0)
    now = 1_800_000_000_000
    svc._next_offset = {inter: 900, act: 40}
    svc._last_record_ms = {inter: now - 1_000, act: now - 12_000}
    svc.consumer.hw = {inter: 950, act: 40}
    svc.consumer.polled = {inter: now, act: now}
    # interactions are behind their log end: not idle, whatever the silence
    assert svc.caught_up(0) == {ACTION: 7_000}  # actions: silent 12 s, less the 5 s that make an input idle
    svc._next_offset[inter] = 950
    assert svc.caught_up(0) == {ACTION: 7_000}  # interactions at their end but silent 1 s only
    svc._last_record_ms[inter] = now - 65_000
    assert svc.caught_up(0) == {INTERACTION: 60_000, ACTION: 7_000}


def test_a_stale_log_end_is_no_evidence_of_silence():
    """After a stall (the worker busy, the fetch answer old), the time since the last record says nothing:
    only the time up to when the broker last answered counts."""
    svc = service()
    s = svc.settings
    act = TopicPartition(s.topic_actions, 1)
    now = 1_800_000_000_000
    svc._next_offset = {act: 40}
    svc._last_record_ms = {act: now - 60_000}
    svc.consumer.hw = {act: 40}
    svc.consumer.polled = {act: now - 58_000}  # the last answer came 2 s after the last record
    assert svc.caught_up(1) == {}
    svc.consumer.polled = {act: None}
    assert svc.caught_up(1) == {}
