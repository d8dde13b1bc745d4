"""The default demo's loop (`flywheel demo`), one step at a time, so each step can be read, timed and
changed alone: start (the embedded broker and Redis, the cold start, the services), then per day of
event time: traffic, reviews, the join, the rollout's decision interval, the seal of the windows the
watermark passed, the trainer's verdict on each sealed dataset, and the cycles to record; at the end
the velocity report. What it prints is flywheel/demo/printer.py's; the policy it runs under and the
entry point are flywheel/demo/run.py's.

The demo paces itself on the pipeline (it waits for each day's requests to be joined, and for the
trainer's verdict on each sealed dataset) but decides nothing: the quality figures are the trainer's
own golden-set evaluation of models trained on datasets the real pipeline built.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from confluent_kafka import Consumer, TopicPartition

from flywheel.demo.printer import DemoPrinter
from flywheel.demo.traffic import DemoSpec, Request, UserTraits, correction, is_right, reaction, requests_for_day
from flywheel.settings import DAY_MS, Settings
from flywheel.report import render
from flywheel.report.sources import from_topics
from flywheel.routing import Assigner
from flywheel.sdk import FlywheelProducer
from flywheel.stack import embedded_stack, service
from schemas.codec import Codec
from schemas.records import ReviewVerdict
from streams.review.queue import ReviewQueue, review_prefix
from streams.rollout.controller import RolloutState
from trainer import synthetic
from trainer.bootstrap import bootstrap
from trainer.evaluate import answer
from trainer.golden import GoldenStore
from trainer.model import load
from trainer.registry import Registry
from trainer.service import ModelsAnnouncer

if TYPE_CHECKING:
    from redis import Redis

    from flywheel.policy import GatePolicy
    from flywheel.report.velocity import Velocity

WEEK_MS = 7 * DAY_MS
EPOCH_MS = (1_767_225_600_000 // WEEK_MS) * WEEK_MS  # event time starts on a window boundary (early 2026)
MAX_LOADED = 3  # model versions kept in memory by the app
# how often a wait checks the pipeline: the demo is paced by its waits, three or four a day for 56 days, so
# each one's overshoot adds up (its checks are cheap: end offsets, a Redis read, a topic read of its own)
POLL_S = 0.05
# a topic read ends after this long with nothing new; not shorter: the consumer is paused between reads, and
# a resumed fetch must be answered inside the read or it is dropped (flywheel/consumers.py, AFTER_REST_POLL_S)
FETCH_IDLE_S = 0.2


def torch_threads() -> int:
    """Threads for torch in the demo and its services, 0 for torch's default (one per core). torch's threads
    wait on each other at every operation, so on cores other jobs already fill one thread is faster than two
    that take turns (flywheel/demo/real.py measured a training step 2.2 times faster at load 5-7 on 2 cores).
    FLYWHEEL_DEMO_THREADS sets it; else 1 when the load average is at least the number of cores."""
    forced = int(os.environ.get("FLYWHEEL_DEMO_THREADS", "0") or 0)
    if forced > 0:
        return forced
    return 1 if os.getloadavg()[0] >= (os.cpu_count() or 1) else 0


@contextmanager
def threads_for_children(threads: int) -> Iterator[None]:
    """Services started inside the block get OMP_NUM_THREADS (torch's thread count at import) = `threads`."""
    before = os.environ.get("OMP_NUM_THREADS")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


class Topics:
    """Follows the dataset-ready and models topics from the beginning, without a consumer group."""

    def __init__(self, settings: Settings):
        self.settings, self.codec = settings, Codec()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.broker_url,
                "group.id": f"{settings.app_id}-demo",
                "enable.auto.commit": False,
            }
        )
        parts = []
        for topic in (settings.topic_datasets_ready, settings.topic_models):
            md = self.consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, -2) for p in md.partitions]
        self.consumer.assign(parts)
        # fetching only inside poll(): an idle fetcher spins the broker (flywheel/consumers.py)
        self.consumer.pause(parts)
        self.parts = parts
        self.ready: list[dict] = []
        self.models: list[dict] = []

    def poll(self) -> None:
        self.consumer.resume(self.parts)
        try:
            while batch := self.consumer.consume(500, FETCH_IDLE_S):
                for m in batch:
                    value = m.value()
                    if m.error() or not value:
                        continue
                    if m.topic() == self.settings.topic_datasets_ready:
                        self.ready.append(self.codec.decode("dataset_ready", value))
                    else:
                        self.models.append(self.codec.decode("model_event", value))
        finally:
            self.consumer.pause(self.parts)

    def outcome(self, dataset_id: str) -> dict | None:
        return next(
            (
                e
                for e in self.models
                if e.get("dataset_id") == dataset_id and e["event_type"] in ("candidate", "rejected", "refused")
            ),
            None,
        )

    def close(self) -> None:
        self.consumer.close()


def end_offsets(consumer: Consumer, topic: str) -> int:
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions)


class App:
    """The production app: answers with the assigned model (greedy, so answers are cached per version)."""

    def __init__(self, registry: Registry, max_new_tokens: int):
        self.registry = registry
        self.max_new_tokens = max_new_tokens
        self.loaded: dict[str, Any] = {}
        self.answers: dict[tuple[str, str], str] = {}

    def answer_all(self, asked: list[tuple[str, str]]) -> None:
        todo: dict[str, list[str]] = {}
        for version, prompt in asked:
            if (version, prompt) not in self.answers:
                todo.setdefault(version, [])
                if prompt not in todo[version]:
                    todo[version].append(prompt)
        for version, prompts in todo.items():
            if version not in self.loaded:
                if len(self.loaded) >= MAX_LOADED:
                    self.loaded.pop(next(iter(self.loaded)))
                self.loaded[version] = load(self.registry.path(version))
            for prompt, text in zip(prompts, answer(self.loaded[version], prompts, self.max_new_tokens)):
                self.answers[(version, prompt)] = text


@dataclass
class DemoLoop:
    """The running demo: the services are up and v1 is production; `day(n)` runs day n's steps."""

    spec: DemoSpec
    policy: GatePolicy
    printer: DemoPrinter
    settings: Settings  # the embedded stack's: its broker, Redis and ports
    redis: Redis
    registry: Registry
    topics: Topics
    producer: FlywheelProducer
    assigner: Assigner
    peek: Consumer  # reads the candidates topic's end offsets (the join's output)
    app: App
    rng: random.Random
    started: float  # time.monotonic() when the demo began
    truth: dict[str, Request] = field(default_factory=dict)  # request id -> what was asked (for reviewers)
    traits: dict[str, UserTraits] = field(default_factory=dict)
    sent: int = 0
    reported: set[str] = field(default_factory=set)  # dataset ids whose cycle row was printed
    ready_at: dict[str, int] = field(default_factory=dict)  # dataset id -> event time its outcome was ready
    timings: dict[str, float] = field(default_factory=dict)  # step -> wall seconds, summed over days
    threads: int = 0  # torch's threads here and in the services (0: torch's default)

    @classmethod
    def start(
        cls, settings: Settings, spec: DemoSpec, policy: GatePolicy, printer: DemoPrinter, stack: ExitStack
    ) -> DemoLoop:
        """The embedded broker and Redis, a clean flywheel, the cold start (v1 from synthetic data), the
        services; everything started is stopped when `stack` closes."""
        import redis

        started = time.monotonic()
        logs = Path(settings.data_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        s = stack.enter_context(embedded_stack(settings))
        r = redis.Redis.from_url(s.redis_url)
        registry = Registry(s.models_dir, r, s.app_id, cache_dir=s.model_cache_dir)
        golden = GoldenStore(s.golden_path)
        if golden.current()[1]:
            raise ValueError(f"{s.data_dir} already holds a flywheel: give the demo a fresh --data-dir")
        for key in r.scan_iter(f"{s.app_id}:*", count=1000):  # a fresh data dir is a new flywheel: no stale state
            r.delete(key)
        golden.add(synthetic.golden(tuple(spec.task_mix)))
        threads = torch_threads()
        if threads:
            import torch

            torch.set_num_threads(threads)
        printer.cold_start_begins(spec)
        boot = bootstrap(registry, golden, policy.trainer, spec.cold_start_examples, tasks=spec.cold_start_tasks)
        announcer = ModelsAnnouncer(s)
        announcer.announce(boot.event)
        announcer.close()
        printer.cold_start_done(
            boot.version, boot.event.metrics["overall"], len(golden.current()[1]), len(spec.task_mix)
        )
        cold_start_s = time.monotonic() - started
        with threads_for_children(threads):
            for name, argv in (
                ("worker", ("worker",)),
                ("datasets", ("datasets", "run")),
                ("trainer", ("trainer",)),
                ("review", ("review",)),
            ):
                stack.enter_context(service(s, name, *argv, log_path=logs / f"{name}.log"))
        printer.services_started(logs, spec)
        topics = Topics(s)
        stack.callback(topics.close)
        producer = stack.enter_context(FlywheelProducer(s))
        peek = Consumer({"bootstrap.servers": s.broker_url, "group.id": f"{s.app_id}-demo-peek"})
        stack.callback(peek.close)
        loop = cls(
            spec=spec,
            policy=policy,
            printer=printer,
            settings=s,
            redis=r,
            registry=registry,
            topics=topics,
            producer=producer,
            assigner=Assigner(r, s.app_id, refresh_s=0),
            peek=peek,
            app=App(registry, policy.trainer.max_new_tokens),
            rng=random.Random(spec.seed),
            started=started,
        )
        loop.threads = threads
        loop.timings["cold start"] = cold_start_s
        loop.timings["services"] = time.monotonic() - started - cold_start_s
        return loop

    # ---- one day of event time

    def day(self, day: int) -> None:
        day_start = EPOCH_MS + day * DAY_MS
        self._timed("traffic", self.traffic, day, day_start)
        self._timed("reviews", self.review)
        self._timed("join", self.wait_joined, day)
        self._timed("rollout interval", self.rollout_interval)
        self._timed("seal", self.wait_sealed, day_start)
        self._timed("train", self.wait_trained, day_start)
        self._timed("report rows", self.record_cycles)
        self.printer.day_done(
            day, self.spec, self.sent, self.assigner.routing(), len(self.reported), time.monotonic() - self.started
        )

    def traffic(self, day: int, day_start: int) -> None:
        """A day of requests: the app answers each with the model its user is assigned, users act on whether
        the answer is right; interactions and actions go out in event-time order, then a heartbeat past the
        day's settle window lets the join close every request of the day."""
        s, spec, rng = self.settings, self.spec, self.rng
        reqs = requests_for_day(spec, day, day_start, rng)
        chosen = [(q, self.assigner.assignment(q.user_id)) for q in reqs]
        self.app.answer_all([(a.model_version, q.prompt) for q, a in chosen])
        events: list[tuple[int, int, str, dict]] = []
        for q, a in chosen:
            self.truth[q.request_id] = q
            response = self.app.answers[(a.model_version, q.prompt)]
            events.append(
                (
                    q.event_time,
                    0,
                    "i",
                    dict(
                        request_id=q.request_id,
                        session_id=q.session_id,
                        user_id=q.user_id,
                        model_version=a.model_version,
                        variant=a.variant,
                        task_type=q.task_type,
                        prompt=q.prompt,
                        response=response,
                        event_time=q.event_time,
                        latency_ms=round(rng.uniform(80, 400), 1),
                        metadata={"source": "demo"},
                    ),
                )
            )
            user = self.traits.get(q.user_id) or self.traits.setdefault(q.user_id, UserTraits.draw(spec, q.user_id))
            for delay, kind in reaction(rng, is_right(q.task_type, response, q.expected), user):
                events.append(
                    (
                        q.event_time + delay,
                        1,
                        "a",
                        dict(
                            request_id=q.request_id,
                            user_id=q.user_id,
                            session_id=q.session_id,
                            action=kind,
                            event_time=q.event_time + delay,
                            correction=correction(rng, q, user) if kind == "corrected" else None,
                        ),
                    )
                )
        for _, _, kind, record in sorted(events, key=lambda e: (e[0], e[1])):
            (self.producer.log_interaction if kind == "i" else self.producer.log_action)(**record)
        self.producer.heartbeat(
            day_start + spec.traffic_hours * 3_600_000 + s.settle_window_ms + s.watermark_delay_ms + 1
        )
        self.producer.flush(60)
        self.sent += len(reqs)

    def review(self) -> None:
        review(self.settings, self.redis, self.truth, self.spec.reviews_per_day)

    def wait_joined(self, day: int) -> None:
        s = self.settings
        wait(
            lambda: end_offsets(self.peek, s.topic_candidates) >= self.sent,
            300 if day == 0 else 120,
            f"day {day}'s requests to be joined",
        )

    def rollout_interval(self) -> None:
        """With a candidate in its A/B test, one decision interval: the rollout counts the day and may move."""
        if self.assigner.routing().candidate:
            time.sleep(self.policy.rollout.decide_interval_s)

    def wait_sealed(self, day_start: int) -> None:
        """Every window whose boundary (end + lag) this day's traffic has passed is sealed."""
        lag_ms = self.policy.datasets.lag_days * DAY_MS
        due = {
            EPOCH_MS + k * WEEK_MS
            for k in range(self.spec.weeks)
            if EPOCH_MS + (k + 1) * WEEK_MS + lag_ms <= day_start
        }
        wait(lambda: self._sealed(due), 300, "the dataset builder to seal the windows the watermark passed")

    def _sealed(self, windows: set[int]) -> bool:
        self.topics.poll()
        return windows <= {d["window_start"] for d in self.topics.ready}

    def _outcome(self, dataset_id: str) -> dict | None:
        self.topics.poll()
        return self.topics.outcome(dataset_id)

    def wait_trained(self, day_start: int) -> None:
        """Every dataset sealed so far has the trainer's verdict, and a candidate is in the rollout's hands,
        before the next day's traffic."""
        for d in self.topics.ready:
            dataset_id = d["dataset_id"]
            if dataset_id in self.ready_at:
                continue
            wait(lambda: self._outcome(dataset_id) is not None, 600, f"the trainer's outcome for {dataset_id}")
            outcome = self.topics.outcome(dataset_id) or {}
            self.ready_at[dataset_id] = day_start + DAY_MS  # ready before the next day's traffic
            if outcome.get("event_type") == "candidate" and self.policy.rollout.enabled:
                version = outcome["version"]
                wait(lambda: rollout_saw(self.redis, self.settings, version), 60, "the rollout to take the candidate")

    def record_cycles(self) -> None:
        """A row for every cycle the trainer has given its verdict on and that was not shown yet."""
        # no read of the topics here: the day's waits read them last, and every dataset they found sealed has
        # its outcome by now (a read here found only datasets sealed since, whose outcomes the next day awaits)
        outcome = self.topics.outcome
        if not any(d["dataset_id"] not in self.reported and outcome(d["dataset_id"]) for d in self.topics.ready):
            return
        v = self.velocity(max_requests=1)
        for c, row in zip(v.cycles, render.rows(v)):
            if c.dataset_id in self.reported or not outcome(c.dataset_id):
                continue
            self.reported.add(c.dataset_id)
            self.printer.cycle(row)

    # ---- the end

    def velocity(self, max_requests: int) -> Velocity:
        """The report's figures, with time to improvement on the demo's clock: event time from the window's
        start to the day the candidate was ready (the trainer's own figure is wall clock, which only in
        production runs at the pace of event time)."""
        v = from_topics(self.settings, self.policy.datasets.window_days, max_requests=max_requests)
        for c in v.cycles:
            if c.outcome == "candidate" and c.dataset_id in self.ready_at:
                c.time_to_improvement_s = (self.ready_at[c.dataset_id] - c.window_start) / 1000
        return v

    def finish(self, report_path: str | None) -> Velocity:
        """The last rows, the report (HTML in the data dir unless told where), the final summary."""
        self.topics.poll()
        self._timed("report rows", self.record_cycles)
        self.printer.days_done()
        velocity = self._timed("report", self.velocity, 1_000_000)
        html = Path(report_path) if report_path else Path(self.settings.data_dir) / "report.html"
        html.write_text(render.page(velocity), encoding="utf-8")
        self.printer.finished(velocity, self.spec, self.sent, time.monotonic() - self.started, html)
        self.write_timings()
        return velocity

    def write_timings(self) -> None:
        """Where the demo's wall time went, per step (logs/demo-steps.json): the pipeline's pace is the
        demo's, so this is where to look when it is slow."""
        path = Path(self.settings.data_dir) / "logs" / "demo-steps.json"
        total = time.monotonic() - self.started
        steps = {k: round(v, 1) for k, v in sorted(self.timings.items(), key=lambda kv: -kv[1])}
        load = [round(x, 1) for x in os.getloadavg()]
        path.write_text(
            json.dumps({"seconds": round(total, 1), "threads": self.threads, "load": load, "steps": steps}, indent=2)
            + "\n"
        )

    def _timed(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        t = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.monotonic() - t


def rollout_saw(r: Redis, s: Settings, version: str) -> bool:
    """The rollout controller has taken the candidate: testing it, queued it, or queued a newer one instead."""
    state = RolloutState.from_json(r.get(f"{s.app_id}:rollout:state"))
    return any(v and v >= version for v in (state.candidate, state.pending))


def review(s: Settings, r: Redis, truth: dict[str, Request], n: int) -> int:
    """Simulated reviewers: they know each request's right answer and judge the item by it."""
    q = ReviewQueue(r, review_prefix(s), lease_ms=s.review_lease_s * 1000)
    done = 0
    for i in range(n):
        reviewer = f"demo-reviewer-{i % 3}"
        lease = q.lease(reviewer)
        if lease is None:
            break
        c = lease.item.candidate
        asked = truth.get(lease.item.item_id)
        target = c.get("target") or c.get("response") or ""
        right = asked is not None and is_right(asked.task_type, target, asked.expected)
        score = 5 if right else 2
        q.submit(
            lease,
            reviewer,
            ReviewVerdict(
                verdict_id=f"{lease.item.item_id}:{reviewer}",
                request_id=lease.item.item_id,
                reviewer=reviewer,
                accuracy=score,
                helpfulness=score,
                safety=5,
                passed=right,
                reviewed_at=int(time.time() * 1000),
                event_time=c.get("timestamp", 0),
                gate_passed=lease.item.gate_passed,
                task_type=c.get("task_type", ""),
                model_version=c.get("model_version", ""),
                quality_score=c.get("quality_score", 0.0),
                sample_probability=lease.item.probability,
                review_round=lease.round,
            ),
        )
        done += 1
    return done


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
