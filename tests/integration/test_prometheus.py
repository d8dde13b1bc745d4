"""A real Prometheus server (Debian's) scrapes a running worker while events flow through the real
broker: the metrics move, and the project's alert rules load and evaluate against them."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from flywheel.embedded import free_port
from flywheel.sdk import FlywheelProducer
from flywheel.simulate import TrafficSpec, generate, send
from flywheel.topics import create_topics
from flywheel.policy import GatePolicy
from tests.integration.helpers import WorkerProcess, settings_env, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not installed (scripts/bootstrap.sh installs Debian's package)",
    ),
]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(port: int, promql: str) -> float:
    try:
        result = query(port, promql)
    except OSError:
        return 0.0
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture
def prometheus(tmp_path):
    """Start a server for one scrape target; yields (port, set_target)."""
    port = free_port()
    procs = []

    def start(target_port: int) -> int:
        config = tmp_path / "prometheus.yml"
        shutil.copy(RULES, tmp_path / "alerts.yml")
        config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: flywheel-worker
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
""")
        log = open(tmp_path / "prometheus.log", "wb")
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(lambda: value(port, "up") == 1, 60, what="prometheus to scrape the worker")
        return port

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_prometheus_scrapes_a_worker_whose_metrics_move_and_the_rules_evaluate(settings, tmp_path, prometheus):
    policy = tmp_path / "policy.toml"  # one-second buckets: the guards' recent window fills in seconds
    policy.write_text(
        GatePolicy().with_version("prom-test", guards={"bucket_s": 1, "evaluate_interval_s": 0.5}).to_toml()
    )
    s = settings.replace(roles="join,guards", gate_policy=str(policy))
    create_topics(s)
    worker = WorkerProcess(s, tmp_path)
    try:
        wait_for(lambda: "join partitions assigned" in worker.log_tail(100_000), 120, what="the worker to start")
        port = prometheus(worker.port)
        assert value(port, 'up{job="flywheel-worker"}') == 1
        before = value(port, "sum(flywheel_events_consumed_total)")
        traffic = generate(TrafficSpec(requests=300, seed=3, event_rate=1.0), s.settle_window_ms)
        with FlywheelProducer(s) as producer:
            send(traffic, producer, settle_window_ms=s.settle_window_ms, tail_ticks=True)
        wait_for(
            lambda: value(port, "sum(flywheel_candidates_total)") >= 300, 90, what="candidates seen by prometheus"
        )
        assert value(port, "sum(flywheel_events_consumed_total)") > before + 300
        assert value(port, 'sum(flywheel_events_consumed_total{input="action"})') > 0
        assert value(port, 'sum(flywheel_guard_counted_total{kind="requests"})') >= 300

        # the rules loaded from the project's file, and every one evaluates without error
        rules = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).read())["data"]
        loaded = [r for g in rules["groups"] for r in g["rules"]]
        assert {r["name"] for r in loaded} >= {"FlywheelNoCandidates", "FlywheelDeadLetters", "FlywheelFeedbackSparse"}
        wait_for(
            lambda: all(
                r.get("lastEvaluation", "").startswith("20") and r["health"] == "ok"
                for g in json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).read())[
                    "data"
                ]["groups"]
                for r in g["rules"]
            ),
            30,
            what="every rule evaluated healthy",
        )
        # traffic is flowing and joining: the stalled-pipeline alert stays quiet
        alerts = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5).read())[
            "data"
        ]["alerts"]
        assert not [a for a in alerts if a["labels"]["alertname"] in ("FlywheelNoCandidates", "FlywheelTargetDown")]
        # the actions-per-request ratio the feedback-sparsity alert watches, from real scraped series
        ratio = value(
            port,
            'sum(flywheel_events_consumed_total{input="action"}) / '
            'sum(flywheel_events_consumed_total{input="interaction"})',
        )
        assert 0.5 < ratio < 3

        # `flywheel report --prometheus` reads the same history: acceptance per version as a series
        wait_for(
            lambda: value(port, "count(max_over_time(flywheel_satisfaction_acceptance_ratio[5m]))") >= 1,
            30,
            what="satisfaction scraped",
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "flywheel.cli",
                "report",
                "--prometheus",
                f"http://127.0.0.1:{port}",
                "--since-days",
                "1",
                "--json",
                "--html",
                str(tmp_path / "report.html"),
            ],
            env=settings_env(s),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        series = json.loads(done.stdout)["series"]
        assert series["Acceptance per model version"]["sim-model-v1"], series
        assert (tmp_path / "report.html").read_text().count("<svg") == 4
        bad = subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "report", "--prometheus", "http://127.0.0.1:1"],
            env=settings_env(s),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot query Prometheus" in bad.stderr
    finally:
        worker.stop()
