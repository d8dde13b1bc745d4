"""The embedded stack: a Kafka-compatible broker and, when none answers, a Redis, as child processes.

The broker is noida-db (a single binary shipped in a PyPI wheel) because Faust's table recovery
is exact on it (docs: Getting started). Production never uses this module: it sets FLYWHEEL_KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from flywheel.supervise import die_with_parent

log = logging.getLogger("flywheel.embedded")


class EmbeddedError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedError(f"nothing answered on {host}:{port} within {timeout:.0f}s")


def noida_binary() -> Path:
    spec = importlib.util.find_spec("noida_db")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError("the embedded broker needs the noida-db package: pip install 'llm-flywheel[embedded]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "noida-db"
    if not path.exists():
        raise EmbeddedError(f"noida-db binary not found at {path}")
    return path


class _Child:
    """A child process we started and must stop (SIGTERM first, so data is saved); it dies with us."""

    def __init__(self, name: str, argv: list[str], log_path: Path):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        # a session of its own keeps a terminal's Ctrl-C away (its owner stops it after everything that
        # uses it); the parent-death signal (SIGTERM: it still saves) ends it with a killed owner
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", self.name, timeout)
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class EmbeddedBroker(_Child):
    def __init__(self, data_dir: str | os.PathLike, port: int = 0, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(noida_binary()),
            "start",
            "--only",
            "kafka",
            "--host",
            host,
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        super().__init__("broker", argv, self.data_dir / "broker.log")
        try:
            wait_for_port(host, self.port)
        except EmbeddedError:
            self.stop()
            raise EmbeddedError(f"the embedded broker did not start; see {self.log_path}") from None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except Exception:
        return False


class EmbeddedRedis(_Child):
    """redis-server when installed, else noida-db's Redis; on the host and port of the wanted URL."""

    def __init__(self, url: str, data_dir: str | os.PathLike):
        u = urlparse(url)
        host, port = u.hostname or "127.0.0.1", u.port or 6379
        data_dir = Path(data_dir)
        server = shutil.which("redis-server")
        if server:
            argv = [
                server,
                "--bind",
                host,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
            ]
        else:
            argv = [
                str(noida_binary()),
                "start",
                "--only",
                "redis",
                "--host",
                host,
                "--redis-port",
                str(port),
                "--data-dir",
                str(data_dir / "redis"),
            ]
        super().__init__("redis", argv, data_dir / "redis.log")
        wait_for_port(host, port)
        self.url = url
