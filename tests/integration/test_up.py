"""`flywheel up`, the main job on the embedded default: broker started, topics created, worker,
review page, dataset builder and trainer running as supervised child processes; a role that dies is
restarted while the rest goes on; Ctrl-C or SIGTERM stops everything it started, and after `kill -9`
of `up` nothing it started survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from pathlib import Path

from flywheel.embedded import free_port
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


def answers(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children, grandchildren, ...), pid -> command line; zombies left out."""
    parent_of, cmdline = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                parent_of[int(entry.name)] = int(ppid)
                cmdline[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
        except (OSError, ValueError):
            continue
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, pp in parent_of.items():
            if pp == parent and child not in found:
                found[child] = cmdline[child]
                todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def log_lines(path: Path) -> list[dict]:
    out = []
    for raw in path.read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            out.append(line)
    return out


def start_up(tmp_path: Path, redis_url: str, *flags: str, **env_vars: str) -> tuple[subprocess.Popen, dict, dict]:
    """`flywheel up FLAGS` with ports, app id and data dir of its own; the process, its first stdout line
    (the addresses) and the ports it was given. Its stderr goes to tmp_path/up.log."""
    ports = {"metrics": free_port(), "review": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_REDIS_URL=redis_url,
        FLYWHEEL_METRICS_PORT=str(ports["metrics"]),
        FLYWHEEL_REVIEW_PORT=str(ports["review"]),
        FLYWHEEL_DATASETS_METRICS_PORT=str(free_port()),
        FLYWHEEL_TRAINER_METRICS_PORT=str(free_port()),
        FLYWHEEL_APP_ID=f"up-{time.time_ns()}",
        FLYWHEEL_DATA_DIR=str(tmp_path / "data"),
        FLYWHEEL_ROLES="join",
        **env_vars,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "up", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "up.log", "wb"),
        text=True,
    )
    line = json.loads(proc.stdout.readline())
    ports["broker"] = int(line["kafka_bootstrap"].rsplit(":", 1)[1])
    return proc, line, ports


def worker_pid(up_pid: int) -> int | None:
    return next((pid for pid, cmd in descendants(up_pid).items() if "flywheel.cli worker" in cmd), None)


def test_up_runs_worker_review_page_dataset_builder_and_trainer_and_stops_cleanly(redis_url, tmp_path):
    metrics_port, review_port, datasets_port, trainer_port = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_REDIS_URL=redis_url,
        FLYWHEEL_METRICS_PORT=str(metrics_port),
        FLYWHEEL_REVIEW_PORT=str(review_port),
        FLYWHEEL_DATASETS_METRICS_PORT=str(datasets_port),
        FLYWHEEL_TRAINER_METRICS_PORT=str(trainer_port),
        FLYWHEEL_APP_ID=f"up-{time.time_ns()}",
        FLYWHEEL_DATA_DIR=str(tmp_path / "data"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "up.log", "wb"),
        text=True,
    )
    try:
        line = json.loads(proc.stdout.readline())
        assert line["kafka_bootstrap"].startswith("127.0.0.1:")
        assert line["review"] == f"http://127.0.0.1:{review_port}/"
        wait_for(lambda: answers(f"http://127.0.0.1:{review_port}/healthz") == 200, 60, what="the review page")
        assert answers(f"http://127.0.0.1:{review_port}/") == 401  # no sign-in, no page
        assert line["datasets"] == str(tmp_path / "data" / "datasets")
        wait_for(lambda: answers(f"http://127.0.0.1:{datasets_port}/metrics") == 200, 60, what="the dataset builder")
        assert line["trainer_metrics"] == f"http://127.0.0.1:{trainer_port}/metrics"
        wait_for(lambda: answers(line["trainer_metrics"]) == 200, 120, what="the trainer")
        wait_for(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics") == 200, 120, what="the worker's metrics")
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "flywheel_review_considered_total" in body and "flywheel_gate_decisions_total" in body
        # Faust loses a SIGINT that lands while its worker is still starting (seen under a loaded CI run):
        # stop once the worker's operators are running, as a person at a terminal would
        wait_for(
            lambda: b"join partitions assigned" in (tmp_path / "up.log").read_bytes(), 120, what="the worker to start"
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert answers(f"http://127.0.0.1:{review_port}/healthz") is None  # the review page went with it
        assert answers(f"http://127.0.0.1:{datasets_port}/metrics") is None  # and the dataset builder
        assert answers(line["trainer_metrics"]) is None  # and the trainer
        bootstrap_port = int(line["kafka_bootstrap"].rsplit(":", 1)[1])
        assert answers(f"http://127.0.0.1:{bootstrap_port}/") is None  # and the broker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_worker_is_restarted_with_backoff_while_the_broker_and_review_page_go_on(redis_url, tmp_path):
    proc, _, ports = start_up(tmp_path, redis_url, "--no-datasets", "--no-trainer")
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{ports['metrics']}/metrics") == 200, 120, what="the worker")
        wait_for(lambda: answers(f"http://127.0.0.1:{ports['review']}/healthz") == 200, 60, what="the review page")
        first = worker_pid(proc.pid)
        assert first is not None, descendants(proc.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not running(first), 10, what="the worker to die")
        assert port_open(ports["broker"]) and answers(f"http://127.0.0.1:{ports['review']}/healthz") == 200
        second = wait_for(lambda: (pid := worker_pid(proc.pid)) not in (None, first) and pid, 30, what="a new worker")
        lines = log_lines(tmp_path / "up.log")
        exited = [line for line in lines if line.get("msg") == "worker exited; restarting it"]
        restarted = [line for line in lines if line.get("msg") == "worker restarted"]
        assert [(e["role"], e["exit_code"], e["signal"], e["restarts"], e["restart_in_s"]) for e in exited] == [
            ("worker", -9, "SIGKILL", 0, 1.0)
        ]
        assert [(r["role"], r["pid"], r["restarts"]) for r in restarted] == [("worker", second, 1)]
        # the new worker serves, and nothing else was touched
        wait_for(
            lambda: answers(f"http://127.0.0.1:{ports['metrics']}/metrics") == 200, 120, what="the restarted worker"
        )
        assert port_open(ports["broker"]) and answers(f"http://127.0.0.1:{ports['review']}/healthz") == 200
        assert proc.poll() is None
        assert not any(line.get("msg") == "review exited; restarting it" for line in log_lines(tmp_path / "up.log"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not running(second) and not port_open(ports["broker"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_without_worker_stops_everything_on_sigterm(redis_url, tmp_path):
    proc, line, ports = start_up(tmp_path, redis_url, "--no-worker", "--no-datasets", "--no-trainer")
    try:
        assert line["metrics"] is None
        wait_for(lambda: answers(f"http://127.0.0.1:{ports['review']}/healthz") == 200, 60, what="the review page")
        children = descendants(proc.pid)
        assert any("noida-db" in cmd for cmd in children.values()) and any(
            "flywheel.cli review" in cmd for cmd in children.values()
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert time.monotonic() - started < 10
        assert not port_open(ports["broker"]) and answers(f"http://127.0.0.1:{ports['review']}/healthz") is None
        assert [pid for pid in children if running(pid)] == []
        msgs = [line.get("msg") for line in log_lines(tmp_path / "up.log")]
        assert msgs.index("review stopped") < msgs.index("stopped")  # the roles, then the broker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nothing_survives_kill_9_of_up(redis_url, tmp_path):
    # the worker's clean stop would wait for the broker it lost; 3 s, then it leaves (as after kill -9)
    proc, _, ports = start_up(tmp_path, redis_url, "--no-datasets", "--no-trainer", FLYWHEEL_SHUTDOWN_GRACE_S="3")
    children: dict[int, str] = {}
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{ports['metrics']}/metrics") == 200, 120, what="the worker")
        wait_for(lambda: answers(f"http://127.0.0.1:{ports['review']}/healthz") == 200, 60, what="the review page")
        children = descendants(proc.pid)
        assert {"noida-db", "flywheel.cli worker", "flywheel.cli review"} <= {
            what
            for cmd in children.values()
            for what in ("noida-db", "flywheel.cli worker", "flywheel.cli review")
            if what in cmd
        }
        proc.kill()
        proc.wait()
        wait_for(lambda: not port_open(ports["broker"]), 10, what="the broker to stop")
        wait_for(
            lambda: not any(running(pid) for pid in children),
            15,
            what=f"every child to stop: {[cmd for pid, cmd in children.items() if running(pid)]}",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # a failed test leaves no orphan behind
            if running(pid):
                os.kill(pid, signal.SIGKILL)
