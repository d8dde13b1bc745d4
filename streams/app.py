"""The Faust app of the stream workers and the agents attached to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faust

from flywheel.settings import Settings
from schemas.codec import Codec
from streams.join.agent import Joiner, attach_join
from streams.metrics import JoinMetrics


def broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip())


@dataclass
class Worker:
    app: faust.App
    joiner: Joiner
    metrics: JoinMetrics


def create_worker(settings: Settings, codec: Codec | None = None, metrics: JoinMetrics | None = None) -> Worker:
    """State lives in changelog topics (memory store): a restarted or moved worker recovers it from Kafka."""
    datadir = Path(settings.data_dir) / "worker" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.broker_url),
        store="memory://",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(datadir),
        producer_linger_ms=5,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=8192,
    )
    metrics = metrics or JoinMetrics()
    joiner = attach_join(app, settings, codec or Codec(), metrics)
    return Worker(app, joiner, metrics)


def run_worker(settings: Settings) -> None:
    """Blocks until SIGINT/SIGTERM; commits what it processed and leaves the group cleanly."""
    from flywheel.logs import logging_config

    worker = create_worker(settings)
    worker.metrics.serve(settings.metrics_port)
    faust.Worker(
        worker.app,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings.log_level),
        quiet=True,
    ).execute_from_commandline()
