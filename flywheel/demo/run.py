"""`flywheel demo`: the whole loop on one machine, weeks of event time in minutes.

The embedded broker and Redis, then every service of the loop as its own process (the worker with
join, gate, review sampler, rollout and guards; the dataset builder; the trainer; the review page
and its verdict relay), then a cold start (model v1 from synthetic data), then day after day of
simulated production traffic: the app answers with the model the A/B assignment gives each user,
users act on whether the answer is right, a few reviewers give verdicts. The demo paces itself on
the pipeline (it waits for each day's requests to be joined, and for the trainer's verdict on each
sealed dataset) but decides nothing: the quality figures are the trainer's own golden-set
evaluation of models trained on datasets the real pipeline built.
"""

from __future__ import annotations

import json
import random
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Consumer, TopicPartition

from flywheel.demo.traffic import DemoSpec, Request, UserTraits, correction, is_right, reaction, requests_for_day
from flywheel.settings import DAY_MS, Settings

WEEK_MS = 7 * DAY_MS
EPOCH_MS = (1_767_225_600_000 // WEEK_MS) * WEEK_MS  # event time starts on a window boundary (early 2026)
MAX_LOADED = 3  # model versions kept in memory by the app


def demo_policy(spec: DemoSpec):
    """The policy the demo runs under; every change from the defaults says why."""
    from flywheel.policy import GatePolicy

    return GatePolicy().with_version(
        f"demo-{spec.seed}",
        length={"min_words": 1},  # answers are a few words (a capital, a SQL line), not chat paragraphs
        quality={"rewrite_weight": 0.0},  # a correction replaces a short wrong answer whole: no sign of a bad one
        grounding={"enabled": False},  # the app retrieves no context to check answers against
        duplicates={
            "enabled": False
        },  # a small question space over weeks in minutes: each week's dataset stands alone
        keep_rate={"enabled": False},  # every good answer counts; the band is for large, varied traffic
        rollout={
            "ramp": (0.25, 0.5),
            "stage_min_requests": 100,
            "min_requests": 100,
            "max_requests": 4000,
            "decide_interval_s": 1.0,
            "watch_requests": 300,
            "guard_min_requests": 100,
        },
        # improving models move the action mix and the pass rate on purpose: those monitors alert, not act
        guards={"actions": {"action_mix_shift": (), "pass_rate_shift": ()}},
        # one golden item of 16 per task type is noise, not a regression; a week of demo traffic is a few
        # hundred answers, most of them what production already knew: each cycle learns from every earlier week too
        trainer={
            "max_task_regression": 0.07,
            "replay_datasets": 8,
            # a week of demo traffic is a few hundred answers: small batches give the small model steps
            # enough to learn from them (measured on a week of the short demo: batch 32, 39 steps, +0.0;
            # batch 8, 153 steps, +10.3 points)
            "batch_size": 8,
        },
    )


class Topics:
    """Follows the dataset-ready and models topics from the beginning, without a consumer group."""

    def __init__(self, settings: Settings):
        from schemas.codec import Codec

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
        self.consumer.pause(
            parts
        )  # fetching only inside poll(): an idle fetcher spins the broker (flywheel/consumers.py)
        self.parts = parts
        self.ready: list[dict] = []
        self.models: list[dict] = []

    def poll(self) -> None:
        self.consumer.resume(self.parts)
        try:
            while batch := self.consumer.consume(500, 0.2):
                for m in batch:
                    if m.error() or not m.value():
                        continue
                    if m.topic() == self.settings.topic_datasets_ready:
                        self.ready.append(self.codec.decode("dataset_ready", m.value()))
                    else:
                        self.models.append(self.codec.decode("model_event", m.value()))
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

    def __init__(self, registry, max_new_tokens: int):
        self.registry = registry
        self.max_new_tokens = max_new_tokens
        self.loaded: dict[str, Any] = {}
        self.answers: dict[tuple[str, str], str] = {}

    def answer_all(self, asked: list[tuple[str, str]]) -> None:
        from trainer.evaluate import answer
        from trainer.model import load

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


def run(
    settings: Settings,
    spec: DemoSpec,
    out: TextIO = sys.stdout,
    as_json: bool = False,
    report_path: str | None = None,
    quiet_progress: bool = False,
):
    """Run the demo; returns the velocity report (the same figures it printed)."""
    import redis

    from flywheel.report import render
    from flywheel.report.sources import from_topics
    from flywheel.routing import Assigner
    from flywheel.sdk import FlywheelProducer
    from flywheel.stack import embedded_stack, service
    from trainer import synthetic
    from trainer.bootstrap import bootstrap
    from trainer.golden import GoldenStore
    from trainer.registry import Registry
    from trainer.service import ModelsAnnouncer

    spec.check()
    started = time.monotonic()
    data = Path(settings.data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    policy = demo_policy(spec)
    policy_path = data / "demo-policy.toml"
    policy_path.write_text(policy.to_toml())
    settings = settings.replace(gate_policy=str(policy_path))
    say = (lambda msg: None) if as_json else (lambda msg: print(msg, file=out, flush=True))
    tty = out.isatty() and not quiet_progress and not as_json

    with ExitStack() as stack:
        s = stack.enter_context(embedded_stack(settings))
        r = redis.Redis.from_url(s.redis_url)
        registry = Registry(s.models_dir, r, s.app_id)
        golden = GoldenStore(s.golden_path)
        if golden.current()[1]:
            raise ValueError(f"{s.data_dir} already holds a flywheel: give the demo a fresh --data-dir")
        for key in r.scan_iter(f"{s.app_id}:*", count=1000):  # a fresh data dir is a new flywheel: no stale state
            r.delete(key)
        golden.add(synthetic.golden(tuple(spec.task_mix)))
        say(
            f"cold start: training v1 on {spec.cold_start_examples} synthetic examples of {', '.join(spec.cold_start_tasks)} ..."
        )
        boot = bootstrap(registry, golden, policy.trainer, spec.cold_start_examples, tasks=spec.cold_start_tasks)
        announcer = ModelsAnnouncer(s)
        announcer.announce(boot.event)
        announcer.close()
        say(
            f"cold start: {boot.version} scores {boot.event.metrics['overall']:.1%} on the golden set "
            f"({len(golden.current()[1])} held-out items, {len(spec.task_mix)} task types)"
        )
        for name, argv in (
            ("worker", ("worker",)),
            ("datasets", ("datasets", "run")),
            ("trainer", ("trainer",)),
            ("review", ("review",)),
        ):
            stack.enter_context(service(s, name, *argv, log_path=data / "logs" / f"{name}.log"))
        say(
            f"services: worker, dataset builder, trainer, review page (logs in {data / 'logs'}); "
            f"{spec.weeks} weeks of traffic, {spec.requests_per_day} requests a day"
        )

        topics = Topics(s)
        stack.callback(topics.close)
        producer = stack.enter_context(FlywheelProducer(s))
        assigner = Assigner(r, s.app_id, refresh_s=0)
        app = App(registry, policy.trainer.max_new_tokens)
        rng = random.Random(spec.seed)
        truth: dict[str, Request] = {}
        reported: set[str] = set()
        sent = 0
        peek = Consumer({"bootstrap.servers": s.broker_url, "group.id": f"{s.app_id}-demo-peek"})
        stack.callback(peek.close)
        header_done = False
        ready_at: dict[str, int] = {}  # dataset id -> event time when the trainer's candidate was ready

        def velocity_now(max_requests: int):
            """The report's figures, with time to improvement on the demo's clock: event time from the window's
            start to the day the candidate was ready (the trainer's own figure is wall clock, which only in
            production runs at the pace of event time)."""
            v = from_topics(s, policy.datasets.window_days, max_requests=max_requests)
            for c in v.cycles:
                if c.outcome == "candidate" and c.dataset_id in ready_at:
                    c.time_to_improvement_s = (ready_at[c.dataset_id] - c.window_start) / 1000
            return v

        def show_cycles() -> None:
            nonlocal header_done
            topics.poll()
            new = [d for d in topics.ready if d["dataset_id"] not in reported and topics.outcome(d["dataset_id"])]
            if not new:
                return
            v = velocity_now(max_requests=1)
            rows = render.rows(v)
            for c, row in zip(v.cycles, rows):
                if c.dataset_id in reported or not topics.outcome(c.dataset_id):
                    continue
                reported.add(c.dataset_id)
                if not as_json:
                    if tty:
                        out.write("\r\033[K")
                    if not header_done:
                        say(render.table(render.COLUMNS, []))
                        header_done = True
                    say(render.table(render.COLUMNS, [row]).splitlines()[-1])

        traits: dict[str, UserTraits] = {}
        for day in range(spec.weeks * 7):
            day_start = EPOCH_MS + day * DAY_MS
            reqs = requests_for_day(spec, day, day_start, rng)
            chosen = [(q, assigner.assignment(q.user_id)) for q in reqs]
            app.answer_all([(a.model_version, q.prompt) for q, a in chosen])
            events = []
            for q, a in chosen:
                truth[q.request_id] = q
                response = app.answers[(a.model_version, q.prompt)]
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
                user = traits.get(q.user_id) or traits.setdefault(q.user_id, UserTraits.draw(spec, q.user_id))
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
                (producer.log_interaction if kind == "i" else producer.log_action)(**record)
            producer.heartbeat(
                day_start + spec.traffic_hours * 3_600_000 + s.settle_window_ms + s.watermark_delay_ms + 1
            )
            producer.flush(60)
            sent += len(reqs)
            review(s, r, truth, spec.reviews_per_day)
            wait(
                lambda: end_offsets(peek, s.topic_candidates) >= sent,
                300 if day == 0 else 120,
                f"day {day}'s requests to be joined",
            )
            routing = assigner.routing()
            if routing.candidate:
                time.sleep(1.0)  # a decision interval: the rollout counts the day and may move
            # a window whose boundary (end + lag) this day's traffic has passed is sealed, and every dataset
            # sealed so far gets the trainer's verdict, before the next day's traffic
            lag_ms = policy.datasets.lag_days * DAY_MS
            due = {
                EPOCH_MS + k * WEEK_MS for k in range(spec.weeks) if EPOCH_MS + (k + 1) * WEEK_MS + lag_ms <= day_start
            }
            wait(
                lambda: (topics.poll(), due <= {d["window_start"] for d in topics.ready})[1],
                300,
                "the dataset builder to seal the windows the watermark passed",
            )
            for d in topics.ready:
                if d["dataset_id"] in ready_at:
                    continue
                wait(
                    lambda: (topics.poll(), topics.outcome(d["dataset_id"]))[1] is not None,
                    600,
                    f"the trainer's outcome for {d['dataset_id']}",
                )
                out_event = topics.outcome(d["dataset_id"])
                ready_at[d["dataset_id"]] = day_start + DAY_MS  # ready before the next day's traffic
                if out_event["event_type"] == "candidate" and policy.rollout.enabled:
                    wait(lambda: _rollout_saw(r, s, out_event["version"]), 60, "the rollout to take the candidate")
            show_cycles()
            routing = assigner.routing()
            if tty:
                out.write(
                    f"\r\033[Kweek {day // 7 + 1}/{spec.weeks} day {day % 7 + 1} | {sent:,} requests | "
                    f"production {routing.production or '-'}"
                    + (f" | A/B {routing.candidate} at {routing.weight:.0%}" if routing.candidate else "")
                    + f" | {len(reported)} cycles | {time.monotonic() - started:,.0f}s"
                )
                out.flush()
            elif not as_json and day % 7 == 6:
                say(
                    f"-- week {day // 7 + 1}: {sent:,} requests, production {routing.production or '-'}"
                    + (f", A/B {routing.candidate} at {routing.weight:.0%}" if routing.candidate else "")
                    + f", {time.monotonic() - started:,.0f}s"
                )
        show_cycles()
        if tty:
            out.write("\r\033[K")
        velocity = velocity_now(max_requests=1_000_000)
        html = Path(report_path) if report_path else data / "report.html"
        html.write_text(render.page(velocity), encoding="utf-8")
        elapsed = time.monotonic() - started
        if as_json:
            print(
                json.dumps(
                    {
                        **velocity.to_dict(),
                        "seconds": round(elapsed, 1),
                        "requests": sent,
                        "report": str(html),
                        "weeks": spec.weeks,
                        "seed": spec.seed,
                    },
                    indent=2,
                    sort_keys=True,
                ),
                file=out,
            )
        else:
            say("")
            say(render.text(velocity).rstrip())
            say(
                f"\n{spec.weeks} weeks of event time, {sent:,} requests in {elapsed:,.0f} s; report with plots: {html}"
            )
        return velocity


def _rollout_saw(r, s, version: str) -> bool:
    """The rollout controller has taken the candidate: testing it, queued it, or queued a newer one instead."""
    from streams.rollout.controller import RolloutState

    state = RolloutState.from_json(r.get(f"{s.app_id}:rollout:state"))
    return any(v and v >= version for v in (state.candidate, state.pending))


def review(s: Settings, r, truth: dict[str, Request], n: int) -> int:
    """Simulated reviewers: they know each request's right answer and judge the item by it."""
    from schemas.records import ReviewVerdict
    from streams.review.queue import ReviewQueue, review_prefix

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


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
