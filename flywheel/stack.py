"""The embedded default: broker and Redis started when none is configured, topics created.

`flywheel up` runs the worker on top of it; benchmarks and the demo use it the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flywheel.embedded import EmbeddedBroker, EmbeddedRedis, redis_answers
from flywheel.settings import Settings
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
            settings = settings.replace(kafka_bootstrap=broker.bootstrap,
                                        worker_id=settings.worker_id or f"{socket.gethostname()}-0",
                                        empty_fetch_backoff_ms=settings.empty_fetch_backoff_ms or EMBEDDED_FETCH_BACKOFF_MS)
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


def _die_with_parent() -> None:
    """A child service must not outlive a `flywheel up` that was killed (SIGKILL runs no cleanup)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def service(settings: Settings, name: str, *argv: str, log_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """A `flywheel` service (the review page, the dataset builder) in a child process beside the
    worker, stopped with it; its output goes to `log_path` when given."""
    out = open(log_path, "ab") if log_path is not None else None
    proc = subprocess.Popen([sys.executable, "-m", "flywheel.cli", *argv], env={**os.environ, **settings.to_env()},
                            preexec_fn=_die_with_parent, stdout=out, stderr=subprocess.STDOUT if out else None)
    log.info(f"{name} started", extra={"pid": proc.pid, "command": " ".join(argv)})
    stopping = threading.Event()

    def watch():
        code = proc.wait()
        if not stopping.is_set():
            log.error(f"{name} exited; the worker goes on without it", extra={"exit_code": code})

    threading.Thread(target=watch, name="review-page-watch", daemon=True).start()
    try:
        yield proc
    finally:
        stopping.set()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if out is not None:
            out.close()
