"""The dead-letter monitor judges malformed input only. Late and orphan actions are users' timing (the
simulator's traffic holds 3 % late actions by design, over the monitor's 2 % bound): counted apart
as `late_actions`, never judged, so ordinary traffic cannot hold every dataset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from flywheel.settings import Settings
from schemas import Codec
from schemas.records import DeadLetter
from flywheel.policy import GuardPolicy
from streams.guards.agent import GuardRunner
from streams.guards.counts import MALFORMED, USER_TIMING, USER_TIMING_REASONS, deadletter_fields, deadletter_kind
from streams.guards.metrics import GuardMetrics
from streams.guards.monitors import evaluate
from streams.join.service import EXPECTED_REASONS

codec = Codec()

# every reason a stage of the flywheel writes today, and a few it might write tomorrow
MALFORMED_REASONS = (
    "undecodable",
    "invalid_json",
    "invalid_event",
    "oversized",
    "unknown_fingerprint",
    "future_event",
    "too_deep",
    "too_many_keys",
    "too_many_items",
    "too_long",
    "int_out_of_range",
    "not_finite",
    "too_many_actions",
    "duplicate_request",
    "unprocessable",
    "unencodable",
    "unauthenticated_tick",
    "invalid_candidate",
    "something_new",
)


def letter(reason: str) -> bytes:
    return codec.encode(
        "deadletter",
        DeadLetter(
            reason=reason,
            source_topic="flywheel.actions",
            source_partition=0,
            source_offset=7,
            value=b"x",
            failed_at=1,
        ).to_dict(),
    )


@pytest.mark.parametrize("reason", sorted(USER_TIMING_REASONS))
def test_late_and_orphan_actions_are_users_timing(reason):
    assert deadletter_kind(reason) == USER_TIMING
    assert deadletter_fields(codec, letter(reason)) == {USER_TIMING: 1}


@pytest.mark.parametrize("reason", MALFORMED_REASONS)
def test_every_other_reason_is_malformed_input(reason):
    assert deadletter_kind(reason) == MALFORMED
    assert deadletter_fields(codec, letter(reason)) == {MALFORMED: 1}


@pytest.mark.parametrize("reason", [None, "", 7, b"late_action", "Late_Action", "late_action "])
def test_an_odd_or_missing_reason_counts_against_the_guard(reason):
    assert deadletter_kind(reason) == MALFORMED


@pytest.mark.parametrize("value", [b"", b"\x00garbage", None, letter("late_action")[:-3]])
def test_a_record_that_is_no_dead_letter_is_itself_malformed(value):
    assert deadletter_fields(codec, value) == {MALFORMED: 1}


def test_the_join_logs_quietly_exactly_what_the_guard_leaves_alone():
    assert EXPECTED_REASONS == USER_TIMING_REASONS


def test_three_percent_late_actions_do_not_fire_the_monitor_and_three_percent_malformed_do():
    policy = GuardPolicy()
    base = {"requests": 10_000, "deadletters": 10, "late_actions": 300}
    quiet = {s.monitor: s for s in evaluate({"requests": 2_000, "deadletters": 2, "late_actions": 60}, base, policy)}
    assert quiet["deadletter_rate"].judged and not quiet["deadletter_rate"].firing
    assert quiet["deadletter_rate"].value == 0.001
    loud = {s.monitor: s for s in evaluate({"requests": 2_000, "deadletters": 60, "late_actions": 0}, base, policy)}
    assert loud["deadletter_rate"].firing


class _Store:
    def __init__(self):
        self.added = []

    def add(self, fields):
        self.added.append(dict(fields))


def _event(topic: str, value: bytes, offset: int):
    return SimpleNamespace(
        message=SimpleNamespace(
            topic=topic, partition=0, offset=offset, key=None, value=value, headers=None, timestamp=None
        )
    )


def test_the_guards_runner_counts_dead_letters_by_reason():
    s = Settings()
    store = _Store()
    metrics = GuardMetrics()
    runner = GuardRunner(s, SimpleNamespace(store=store), codec, metrics, None, None)
    events = [
        _event(s.topic_deadletter, letter(r), i)
        for i, r in enumerate(["late_action", "orphan_action", "late_action", "undecodable", "future_event"])
    ]
    events += [_event(s.topic_deadletter, b"\x00 not a dead letter", 9), _event(s.topic_passed, b"p", 10)]
    asyncio.run(runner.process(events))
    runner.executor.shutdown()
    assert store.added == [{"late_actions": 3, "deadletters": 3, "passed": 1}]
    counted = {k: metrics.counted.labels(k)._value.get() for k in ("deadletters", "late_actions", "passed")}
    assert counted == {"deadletters": 3, "late_actions": 3, "passed": 1}
