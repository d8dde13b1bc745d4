"""The embedded default: broker and Redis started when none is configured, topics created; and the
roles (worker, review page, dataset builder, trainer) as supervised child processes beside it.

`flywheel up` runs the roles on top of it; benchmarks and the demo use it the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, redis_answers
from flywheel.settings import Settings
from flywheel.supervise import Backoff, Role, Supervisor
from flywheel.topics import create_topics

log = logging.getLogger("flywheel.stack")

# noida-db answers an empty fetch at once; without a pause an idle consumer spins on it
EMBEDDED_FETCH_BACKOFF_MS = 10


@contextmanager
def embedded_stack(settings: Settings) -> Iterator[Settings]:
    """Yield settings that point at a running broker and Redis; stop only what was started here."""
    started = []
    data = Path(settings.data_dir)
    try:
        if not settings.kafka_bootstrap:
            broker = EmbeddedBroker(data / "broker", port=settings.broker_port)
            started.append(broker)
            # the embedded broker never evicts a member that died without leaving the group, so the
            # worker uses static membership: a restarted worker takes its partitions back at once
            settings = settings.replace(
                kafka_bootstrap=broker.bootstrap,
                worker_id=settings.worker_id or f"{socket.gethostname()}-0",
                empty_fetch_backoff_ms=settings.empty_fetch_backoff_ms or EMBEDDED_FETCH_BACKOFF_MS,
            )
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


def supervisor(settings: Settings) -> Supervisor:
    """A supervisor with the restart backoff of `settings`; a worker gets its shutdown grace to stop."""
    return Supervisor(
        Backoff(settings.restart_backoff_s, settings.restart_backoff_max_s),
        stop_timeout_s=settings.shutdown_grace_s + 10,
    )


def flywheel_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flywheel.cli", *argv]


@contextmanager
def services(settings: Settings, *roles: tuple[str, Sequence[str]]) -> Iterator[Supervisor]:
    """`flywheel` commands (`("worker", ["worker"])`, `("review", ["review"])`, ...) as supervised child
    processes with `settings` in their environment, restarted when they exit, stopped when this ends;
    their output goes to this process's stderr."""
    sup = supervisor(settings)
    for name, argv in roles:
        sup.add(name, flywheel_command(*argv), {**os.environ, **settings.to_env()})
    with sup:
        yield sup


@contextmanager
def service(settings: Settings, name: str, *argv: str, log_path: Path | None = None) -> Iterator[Role]:
    """One `flywheel` service (the review page, the dataset builder, ...) under a supervisor of its own,
    restarted when it exits, stopped when this ends; its output goes to `log_path` when given."""
    sup = supervisor(settings)
    role = sup.add(name, flywheel_command(*argv), {**os.environ, **settings.to_env()}, log_path=log_path)
    with sup:
        yield role
