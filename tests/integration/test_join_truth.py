"""The join against the simulator's ground truth, request by request, whatever the pace of event time.

Event time that runs far ahead of the wall clock (weeks produced in seconds: a replay, a backfill, a
worker catching up) must label exactly as live traffic does. Each case produces simulated traffic at
one event rate, either live beside a running worker (which has sat idle first, longer than
`idle_input_ms`, as after `flywheel up`) or as a backlog before the worker starts, and compares every
candidate's user_action and actions with `Traffic.truth()`, and the dead letters with the ones the
traffic makes on purpose (`Traffic.intended_deadletters()`: its late actions, no orphan).

Before the fix, five weeks of event time produced beside an idle worker (0.0066 requests/s, 5,000
requests) gave 1,166 to 2,227 orphan actions of 5,072 in five runs and labelled 50 to 66 % of the
requests `abandoned` where the traffic holds 33 %; the README walkthrough's second run, dated behind
the first one's closing ticks, gave 19,029 to 19,345 orphans of 20,515 actions."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from flywheel.sdk import FlywheelProducer
from flywheel.simulate import TrafficSpec, generate, send
from flywheel.topics import create_topics
from tests.integration.helpers import WorkerProcess, end_offsets, read_all, wait_for

pytestmark = pytest.mark.integration

REQUESTS = 2_000
# five weeks in 5,000 requests: over 1 MB of interactions per partition, more than one fetch takes,
# the size at which the old idle rule lost the race every time it was measured (4 runs of 4)
FAST_REQUESTS = 5_000


def _worker(settings, tmp_path, name="worker") -> WorkerProcess:
    w = WorkerProcess(settings, tmp_path, name)
    wait_for(lambda: '"join partitions assigned"' in w.log_tail(200_000), 90, what="the worker to take its partitions")
    return w


def _differences(settings, traffics) -> tuple[list, dict[str, set[str]]]:
    """(requests whose candidate differs from the truth, request ids of the dead letters by reason)."""
    truth = {}
    for t in traffics:
        truth.update(t.truth())
    got = {}
    for _, _, c in read_all(settings, settings.topic_candidates, "candidate"):
        assert c["request_id"] not in got, f"{c['request_id']}: two candidates"
        got[c["request_id"]] = (c["user_action"], list(c["actions"]))
    assert set(got) == set(truth), f"missing {len(set(truth) - set(got))}, unexpected {len(set(got) - set(truth))}"
    wrong = [(rid, truth[rid], got[rid]) for rid in truth if got[rid] != truth[rid]]
    letters = defaultdict(set)
    for _, _, d in read_all(settings, settings.topic_deadletter, "deadletter"):
        letters[d["reason"]].add(d["key"].decode())
    return wrong, letters


def _settled(settings, n: int) -> None:
    wait_for(lambda: end_offsets(settings, settings.topic_candidates) >= n, 240, interval=0.5, what=f"{n} candidates")
    time.sleep(1.5)  # anything extra would show up now


@pytest.mark.parametrize("mode", ["live", "backlog"])
@pytest.mark.parametrize(
    "event_rate, requests",
    [(0.0066, FAST_REQUESTS), (0.05, REQUESTS), (5.0, REQUESTS)],
    ids=["five-weeks-in-seconds", "days", "default"],
)
def test_every_request_is_labelled_as_the_traffic_meant_whatever_the_pace(
    settings, tmp_path, event_rate, requests, mode
):
    settings = settings.replace(idle_input_ms=1_000)  # an idle input early: the race the old rule lost
    create_topics(settings)
    traffic = generate(TrafficSpec(requests=requests, seed=11, event_rate=event_rate), settings.settle_window_ms)
    assert traffic.intended_deadletters()["late_action"] and sum(r.out_of_order for r in traffic.requests) > 0
    worker = None
    try:
        if mode == "live":
            worker = _worker(settings, tmp_path)
            time.sleep(2.5)  # idle for longer than idle_input_ms, as a stack that waits for traffic
        with FlywheelProducer(settings) as producer:
            counts = send(traffic, producer, settle_window_ms=settings.settle_window_ms)
        assert counts["moved_ms"] == 0  # fresh topics: the traffic lands where it was generated
        if mode == "backlog":
            worker = _worker(settings, tmp_path)
        _settled(settings, requests)
        wrong, letters = _differences(settings, [traffic])
        assert not wrong, f"{len(wrong)} of {requests} differ from the traffic's truth, e.g. {wrong[:3]}"
        assert letters == traffic.intended_deadletters(), {k: len(v) for k, v in letters.items()}  # late actions only
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.log_tail()


def test_a_second_run_continues_event_time_after_the_first_and_labels_as_meant(settings, tmp_path):
    """The README walkthrough's shape: traffic, a pause, then weeks of traffic on the same topics. The
    second run goes after the first's closing ticks (traffic dated before them would be late for the
    join's watermark, every action an orphan); with the future bound off, as for synthetic traffic."""
    settings = settings.replace(idle_input_ms=1_000, max_event_ahead_ms=-1)
    create_topics(settings)
    first = generate(TrafficSpec(requests=600, seed=12), settings.settle_window_ms)
    second = generate(TrafficSpec(requests=REQUESTS, seed=13, event_rate=0.0066), settings.settle_window_ms)
    assert second.first_event_time < first.last_event_time  # generated ending at the wall clock, as both are
    worker = _worker(settings, tmp_path)
    try:
        with FlywheelProducer(settings) as producer:
            assert send(first, producer, rate=4_000, settle_window_ms=settings.settle_window_ms)["moved_ms"] == 0
            _settled(settings, 600)
            time.sleep(2)
            moved = send(second, producer, settle_window_ms=settings.settle_window_ms)["moved_ms"]
        assert moved > second.last_event_time - second.first_event_time
        _settled(settings, 600 + REQUESTS)
        wrong, letters = _differences(settings, [first, second])
        assert not wrong, f"{len(wrong)} differ from the traffic's truth, e.g. {wrong[:3]}"
        late = first.intended_deadletters()["late_action"] | second.intended_deadletters()["late_action"]
        assert letters == {"late_action": late}, {k: len(v) for k, v in letters.items()}
    finally:
        assert worker.stop() == 0, worker.log_tail()
