"""The stream worker: a Faust app hosting the flywheel's stream operators."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faust

from flywheel.settings import Settings
from schemas.codec import Codec
from streams.join.service import JoinService
from flywheel.metrics import serve_metrics
from streams.metrics import GateMetrics, JoinMetrics, SamplerMetrics
from streams.runner import FINISH_BATCH_S, BatchRunner
from flywheel.logs import logging_config
from flywheel.policy import GatePolicy
from streams.gate.agent import GateRunner, add_gate_agent
from streams.gate.pipeline import build_gate
from streams.guards.agent import GuardRunner, add_guard_agents
from streams.guards.keeper import keeper_for
from streams.guards.metrics import GuardMetrics
from streams.review.agent import ReviewRunner, add_review_agent
from streams.rollout.agent import RolloutRunner, add_rollout_agents
from streams.rollout.metrics import RolloutMetrics

log = logging.getLogger(__name__)


def broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


def pause_after_empty_fetches(backoff_ms: int) -> None:
    """Make aiokafka wait `backoff_ms` after a fetch that brought nothing.

    Kafka holds an empty fetch for fetch.max.wait.ms; the embedded broker answers at once, and an
    idle consumer then spins a core (and steals the GIL from the join). Process-wide and idempotent.
    """
    import asyncio

    from aiokafka.consumer.fetcher import Fetcher

    original = getattr(Fetcher._proc_fetch_request, "__wrapped__", Fetcher._proc_fetch_request)
    if backoff_ms <= 0:
        Fetcher._proc_fetch_request = original
        return

    async def _proc_fetch_request(self, *args, **kwargs):
        got = await original(self, *args, **kwargs)
        if not got:
            try:
                await asyncio.sleep(backoff_ms / 1000)
            except asyncio.CancelledError:
                pass  # the consumer is closing; aiokafka awaits this task and takes a cancel as an error
        return got

    _proc_fetch_request.__wrapped__ = original
    Fetcher._proc_fetch_request = _proc_fetch_request


class FlywheelApp(faust.App):
    """A Faust app whose stop waits for the batches in hand, not for everything fetched.

    Why: Faust's stop (`stream_wait_empty`) waits until every record its consumer handed to a stream
    is acknowledged, and the candidates topic feeds three agents at very different speeds (the gate
    scores ~1,000 candidates/s, rollout and guards count ~40,000/s). Under load the fast agents run
    ahead; the stop empties the agents' buffers, so a record they took that the gate had not reached
    keeps the gate's reference, which nothing will release, and Faust waits for it until it is
    garbage, which the fast agents' last batch, still in their hands, keeps from happening: the stop
    waited until the grace ran out (measured after 200,000 events: no gate decision in the last 18 s
    of the 20 s grace, then the worker was killed). Instead every batch
    runner finishes the batch in hand (at most `finish_batch_s`) and holds whatever else it was
    handed, and Faust commits only what was acknowledged: the rest is read again by the next run,
    which loses nothing, as offsets are committed only after a batch's outputs are written.
    """

    batch_runners: list[BatchRunner]
    finish_batch_s: float = FINISH_BATCH_S

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_runners = []

    async def on_stop(self) -> None:
        self.conf.stream_wait_empty = False  # at a stop only: rebalances keep Faust's wait
        for runner in self.batch_runners:
            runner.stopping = True  # batches handed over from now on are held, not worked on
        await super().on_stop()  # stops fetching and empties the agents' buffers
        if self.batch_runners:  # before the agents are stopped (cancelled) and the last commit
            await asyncio.gather(*(r.finish(self.finish_batch_s) for r in self.batch_runners))


class StoppingWorker(faust.Worker):
    """A Faust worker whose stop cannot hang.

    Why: a signal that arrives while Faust is still starting begins a stop that waits for ever on a
    fetcher that never finished starting (measured: SIGINT 2 s after start, still running 40 s
    later; robinhood/faust#484), and mode ignores any signal after the first. The join and the
    gate already survive kill -9 without loss or duplicates (tests/integration), so once
    `grace_s` has passed after the first signal, or at a second one, the process leaves at once.

    After a clean stop at a signal (committed, out of the group, producers flushed) it leaves without
    the interpreter's teardown, which is no part of the stop: it joins the runners' worker threads,
    one of which may be in the middle of a model call or still loading the models, and frees a heap
    of models object by object (measured: 5.3 s after the stop itself had taken 1.0 s).
    """

    grace_s: float = 20.0
    _signalled_at: float | None = None

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        if self._signal_stop_time:
            self._leave(signum, "a second signal")
        self._signalled_at = time.monotonic()
        super()._schedule_shutdown(signum)
        timer = threading.Timer(self.grace_s, self._leave, args=(signum, f"no clean stop in {self.grace_s:g} s"))
        timer.daemon = True
        timer.start()

    def stop_and_shutdown(self) -> None:
        crashing = sys.exc_info()[0] is not None  # called from a `finally`: a crash keeps its exit
        super().stop_and_shutdown()
        took = round(time.monotonic() - self._signalled_at, 2) if self._signalled_at else None
        log.info("worker stopped", extra={"seconds": took})
        if self._signalled_at is not None and not crashing:
            self._exit(0)

    @classmethod
    def _leave(cls, signum: signal.Signals, why: str) -> None:
        log.warning("worker leaving without a clean stop", extra={"why": why, "signal": signal.Signals(signum).name})
        cls._exit(128 + int(signum))

    @staticmethod
    def _exit(code: int) -> None:
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@dataclass
class Worker:
    app: faust.App
    join: JoinService | None
    metrics: JoinMetrics
    gate: "GateRunner | None" = None
    gate_metrics: GateMetrics | None = None
    review: "ReviewRunner | None" = None
    rollout: "RolloutRunner | None" = None
    guards: "GuardRunner | None" = None


def create_worker(settings: Settings, codec: Codec | None = None, metrics: JoinMetrics | None = None) -> Worker:
    """The Faust app owns the process (signals, logging, graceful stop). The join runs in it as a
    service with its own batch consumer (see streams/join/service.py for why); the gate is a Faust
    agent. `settings.roles` says which of the two this process runs."""
    pause_after_empty_fetches(settings.empty_fetch_backoff_ms)
    datadir = Path(settings.data_dir) / "worker" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = FlywheelApp(
        settings.app_id,
        broker=broker_urls(settings.broker_url),
        store="memory://",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        producer_linger_ms=5,
        broker_commit_interval=1.0,
        # a worker that dies without leaving the group (kill -9, OOM) holds its partitions until
        # the session times out: keep that short so a restart or a standby takes over quickly
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_max_poll_interval=60.0,
        consumer_group_instance_id=settings.worker_id or None,
    )
    codec = codec or Codec()
    metrics = metrics or JoinMetrics()
    worker = Worker(app, None, metrics)
    if "join" in settings.role_set:
        join = worker.join = JoinService(settings, codec, metrics)

        @app.task
        async def _start_join() -> None:
            await app.add_runtime_dependency(join)

    if "gate" in settings.role_set:
        worker.gate_metrics = GateMetrics(metrics.registry)
        worker.gate = create_gate_runner(app, settings, codec, worker.gate_metrics)
    if "review" in settings.role_set:
        worker.review = create_review_runner(app, settings, codec, SamplerMetrics(metrics.registry))
    if "rollout" in settings.role_set:
        worker.rollout = create_rollout_runner(app, settings, codec, metrics.registry)
    if "guards" in settings.role_set:
        worker.guards = create_guard_runner(app, settings, codec, metrics.registry)
    app.batch_runners = [r for r in (worker.gate, worker.review, worker.rollout, worker.guards) if r is not None]
    app.finish_batch_s = min(FINISH_BATCH_S, settings.shutdown_grace_s / 4)
    return worker


def _redis(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


def _sender(app: faust.App):
    async def send(topic: str, key: bytes | None, value: bytes, partition: int):
        return await app.producer.send(topic, key, value, partition, None, None)

    return send


def create_review_runner(app: faust.App, settings: Settings, codec: Codec, metrics: SamplerMetrics):
    policy = GatePolicy.load(settings.gate_policy)  # the [review] section
    runner = ReviewRunner(
        settings,
        policy.review,
        codec,
        metrics,
        _redis(settings),
        _sender(app),
        window_days=policy.datasets.window_days,
    )
    add_review_agent(app, settings, runner)
    return runner


def create_rollout_runner(app: faust.App, settings: Settings, codec: Codec, registry):
    policy = GatePolicy.load(settings.gate_policy)  # the [rollout] section
    runner = RolloutRunner(settings, policy.rollout, codec, RolloutMetrics(registry), _redis(settings), _sender(app))
    add_rollout_agents(app, settings, runner)
    return runner


def create_guard_runner(app: faust.App, settings: Settings, codec: Codec, registry):
    policy = GatePolicy.load(settings.gate_policy)  # the [guards] section, and [rollout] for the pause
    if not policy.guards.enabled:
        return None
    client = _redis(settings)
    runner = GuardRunner(
        settings, keeper_for(client, settings.app_id, policy), codec, GuardMetrics(registry), client, _sender(app)
    )
    add_guard_agents(app, settings, runner)
    return runner


def create_gate_runner(app: faust.App, settings: Settings, codec: Codec, metrics: GateMetrics):
    policy = GatePolicy.load(settings.gate_policy)  # a bad file fails here, before anything starts
    client = _redis(settings)

    def build():
        return build_gate(
            policy,
            redis_client=client,
            key_prefix=settings.app_id,
            observe_stage=metrics.observe_stage,
            spacy_cache=str(Path(settings.data_dir) / "models"),
            threads=settings.gate_threads,
        )

    runner = GateRunner(settings, build, codec, metrics, client, _sender(app))
    add_gate_agent(app, settings, runner)
    return runner


def tune_gc() -> None:
    """The join allocates many short-lived objects per record; with CPython's default thresholds
    the cyclic collector runs every 700 allocations and costs ~20% of the join's throughput.
    Objects alive after start-up are frozen out of collection; young ones are collected less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; commits what it processed and leaves the group cleanly."""
    worker = create_worker(settings)
    serve_metrics(worker.metrics.registry, settings.metrics_port)
    tune_gc()
    runner = StoppingWorker(
        worker.app,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings.log_level),
        quiet=True,
    )
    runner.grace_s = settings.shutdown_grace_s
    runner.execute_from_commandline()
