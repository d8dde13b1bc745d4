"""The embedded default: broker and Redis started when none is configured, topics created.

`flywheel up` runs the worker on top of it; benchmarks and the demo use it the same way.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, redis_answers
from flywheel.settings import Settings
from flywheel.topics import create_topics

log = logging.getLogger("flywheel.stack")


@contextmanager
def embedded_stack(settings: Settings) -> Iterator[Settings]:
    """Yield settings that point at a running broker and Redis; stop only what was started here."""
    started = []
    data = Path(settings.data_dir)
    try:
        if not settings.kafka_bootstrap:
            broker = EmbeddedBroker(data / "broker", port=settings.broker_port)
            started.append(broker)
            settings = settings.replace(kafka_bootstrap=broker.bootstrap)
            log.info("embedded broker started", extra={"bootstrap": broker.bootstrap, "pid": broker.pid})
        if not redis_answers(settings.redis_url):
            server = EmbeddedRedis(settings.redis_url, data / "redis")
            started.append(server)
            log.info("embedded redis started", extra={"url": settings.redis_url, "pid": server.pid})
        create_topics(settings)
        yield settings
    finally:
        for child in reversed(started):
            child.stop()
            log.info("stopped", extra={"service": child.name})
