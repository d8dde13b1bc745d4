"""Child processes that die with their parent, and roles restarted when they exit on their own.

`flywheel up` runs each role (worker, review page, dataset builder, trainer) as a child process under
one `Supervisor`. A role that exits while nobody asked it to is started again after a delay that
doubles from `Backoff.first_s` up to `Backoff.max_s`, and falls back to the first delay once the role
has stayed up `Backoff.stable_s`; the broker and the other roles go on meanwhile. One log line per exit
and one per restart (role, exit code, restart count, delay).

Every child gets a parent-death signal (`die_with_parent`): after `kill -9` of `flywheel up` nothing it
started keeps running. Linux sends that signal when the *thread* that started the child ends, so the
supervisor starts, restarts and stops its children from one thread of its own that outlives them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger("flywheel.supervise")

_PR_SET_PDEATHSIG = 1
if sys.platform.startswith("linux"):
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: a preexec_fn must not import
else:  # pragma: no cover
    _prctl = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the child gets `sig` when its parent ends, `kill -9` included (PR_SET_PDEATHSIG
    survives exec). SIGTERM by default, so that a broker still saves its data."""
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal would ever come
            os._exit(1)

    return preexec


def _stderr_fd() -> int | None:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0  # up this long, a role's next exit is restarted after first_s again


class Role:
    """One supervised child: its command, its current process and its restart state."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None, log_path: Path | None, backoff: Backoff
    ):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.backoff = backoff
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._delay = backoff.first_s
        self._due = 0.0
        self._started_at = 0.0
        self._out = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _spawn(self) -> None:
        if self.log_path is not None and self._out is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.log_path, "ab")
        # without a log file a role writes to our stderr, so that our stdout stays ours (`up` prints its
        # addresses there); a process group of its own: Ctrl-C reaches `flywheel up` alone, which stops
        # the roles in order
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._out if self._out is not None else _stderr_fd(),
            stderr=subprocess.STDOUT if self._out is not None else None,
            process_group=0,
            preexec_fn=die_with_parent(),
        )
        self._started_at = time.monotonic()

    def start(self) -> None:
        self._spawn()
        log.info(
            f"{self.name} started", extra={"role": self.name, "pid": self.proc.pid, "command": " ".join(self.argv[1:])}
        )

    def check(self, now: float) -> None:
        """Notice an exit and schedule the restart; restart when it is due."""
        if self.proc is None:
            if now < self._due:
                return
            self.restarts += 1
            try:
                self._spawn()
            except OSError as exc:
                self._exited(now, None, str(exc))
                return
            log.warning(
                f"{self.name} restarted", extra={"role": self.name, "pid": self.proc.pid, "restarts": self.restarts}
            )
            return
        code = self.proc.poll()
        if code is not None:
            self._exited(now, code)

    def _exited(self, now: float, code: int | None, error: str | None = None) -> None:
        uptime = now - self._started_at if self.proc is not None else 0.0
        if uptime >= self.backoff.stable_s:
            self._delay = self.backoff.first_s
        self.proc = None
        self._due = now + self._delay
        extra = {
            "role": self.name,
            "exit_code": code,
            "uptime_s": round(uptime, 1),
            "restarts": self.restarts,
            "restart_in_s": self._delay,
        }
        if code is not None and code < 0:
            extra["signal"] = signal.Signals(-code).name
        if error:
            extra["error"] = error
        log.error(f"{self.name} exited; restarting it", extra=extra)
        self._delay = min(self._delay * 2, self.backoff.max_s)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def reap(self, deadline: float) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    f"{self.name} did not stop in time; killing it", extra={"role": self.name, "pid": self.proc.pid}
                )
                self.proc.kill()
                self.proc.wait()
            log.info(f"{self.name} stopped", extra={"role": self.name, "exit_code": self.proc.returncode})
        if self._out is not None:
            self._out.close()
            self._out = None


class Supervisor:
    """Runs roles as child processes, restarts those that exit on their own, stops them all on `stop()`.

    Use as a context manager, or `start()` then `stop()`. Roles are added before `start()`.
    """

    def __init__(self, backoff: Backoff = Backoff(), stop_timeout_s: float = 30.0, poll_s: float = 0.2):
        self.backoff = Backoff(backoff.first_s, max(backoff.max_s, backoff.first_s), backoff.stable_s)
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.roles: list[Role] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def add(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, log_path: Path | None = None
    ) -> Role:
        if self._thread is not None:
            raise RuntimeError("add roles before the supervisor starts")
        role = Role(name, argv, env, log_path, self.backoff)
        self.roles.append(role)
        return role

    def start(self) -> "Supervisor":
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop every role (SIGTERM to all, then wait; SIGKILL after stop_timeout_s); idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            try:
                for role in self.roles:
                    role.start()
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            while not self._stopping.wait(self.poll_s):
                now = time.monotonic()
                for role in self.roles:
                    try:
                        role.check(now)
                    except Exception:
                        log.exception("supervising a role failed", extra={"role": role.name})
        finally:
            # from this thread, which started them: they would get their parent-death signal when it ends
            for role in reversed(self.roles):
                role.terminate()
            deadline = time.monotonic() + self.stop_timeout_s
            for role in reversed(self.roles):
                role.reap(deadline)
