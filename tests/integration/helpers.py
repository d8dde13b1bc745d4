"""Run real worker processes and read real topics, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from flywheel.embedded import free_port
from flywheel.settings import Settings
from schemas.codec import Codec


OPEN: list = []


def close_after_test(thing):
    """Closed by the integration conftest when the test ends, whichever module made it: a consumer left
    open keeps fetching from the embedded broker for the rest of the run and takes the cores from every
    later test."""
    OPEN.append(thing)
    return thing


def settings_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


def _die_with_parent() -> None:
    """A worker must not outlive a test run that was killed (it would spin on a dead broker)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WorkerProcess:
    """`flywheel worker` in a child process, with its own /metrics port and log file."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str = "worker",
        argv: tuple[str, ...] = ("-m", "flywheel.cli", "worker"),
    ):
        self.port = free_port()
        self.log_path = Path(log_dir) / f"{name}-{time.time_ns()}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = settings_env(settings.replace(metrics_port=self.port))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )

    def metrics(self) -> str:
        import urllib.request

        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")


def metric_value(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def end_offsets(settings: Settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.broker_url, "group.id": "peek-offsets"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions)
    finally:
        c.close()


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def settled(metrics, name: str, quiet: float = 3.0, timeout: float = 60.0) -> str:
    """The metrics text once `name` has not moved for `quiet` seconds: the worker has nothing left in hand."""
    deadline = time.monotonic() + timeout
    text = metrics()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = metrics()
        if metric_value(now, name) != metric_value(text, name):
            text, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"{name} still moving after {timeout:.0f}s")


def read_all(settings: Settings, topic: str, name: str, codec: Codec | None = None, idle: float = 2.0):
    """Every record of `topic`, decoded: list of (key, value bytes, decoded dict)."""
    codec = codec or Codec()
    c = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"read-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, -2) for p in md.partitions])
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    out, pos = [], defaultdict(int)
    deadline = time.monotonic() + 60
    while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        m = c.poll(idle)
        if m is None or m.error():
            continue
        pos[m.partition()] = m.offset() + 1
        out.append((m.key(), m.value(), codec.decode(name, m.value())))
    c.close()
    return out


def forget_redis(settings: Settings) -> None:
    """Delete every Redis key of a test's app id (the gate's index, the review queue, ...)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(f"{settings.app_id}:*", count=1000):
        client.delete(key)
    client.close()
