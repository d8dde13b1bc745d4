"""The README walkthrough as a person runs it, through the CLI only: `flywheel up`, five weeks of
simulated traffic, and `flywheel datasets list` shows sealed datasets.

Reported before: the walkthrough sealed nothing. Its traffic's late actions (3 % by design) and the
orphans of the join's idle-input race went into the dead-letter monitor (bound 2 %), which held
every dataset. The monitor now judges malformed input only, and the join labels weeks produced in
seconds as it labels live traffic. Scaled down from 20,000 requests to 5,000 over the same five
weeks and more of event time, so that windows seal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flywheel.embedded import free_port
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

WEEK_MS = 7 * 86_400_000
REQUESTS = 5_000
EVENT_RATE = 0.0016  # 5,000 requests over 36 days of event time (the README: 20,000 at 0.0066, 35 days)


def test_the_walkthrough_seals_datasets_and_no_guard_holds_them(redis_url, tmp_path):
    assert REQUESTS / EVENT_RATE * 1000 > 5 * WEEK_MS
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_REDIS_URL=redis_url,
        FLYWHEEL_METRICS_PORT=str(free_port()),
        FLYWHEEL_REVIEW_PORT=str(free_port()),
        FLYWHEEL_DATASETS_METRICS_PORT=str(free_port()),
        FLYWHEEL_TRAINER_METRICS_PORT=str(free_port()),
        FLYWHEEL_APP_ID=f"walk-{time.time_ns()}",
        FLYWHEEL_DATA_DIR=str(tmp_path / "data"),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "up.log", "wb"),
        text=True,
    )

    def flywheel(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flywheel.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    try:
        env["FLYWHEEL_KAFKA_BOOTSTRAP"] = json.loads(up.stdout.readline())[
            "kafka_bootstrap"
        ]  # the second shell's export
        wait_for(lambda: b"join partitions assigned" in (tmp_path / "up.log").read_bytes(), 120, what="the worker")
        sim = flywheel("simulate", "--requests", str(REQUESTS), "--event-rate", str(EVENT_RATE))
        assert sim.returncode == 0, sim.stderr[-2000:]
        assert json.loads(sim.stdout)["interactions"] == REQUESTS

        def status() -> dict:
            return json.loads(flywheel("guards", "status").stdout or "{}")

        def judged() -> dict | None:
            s = status()
            dl = next((m for m in s.get("monitors", []) if m["monitor"] == "deadletter_rate"), None)
            return s if dl is not None and dl["judged"] else None

        # the monitor judges the traffic once its bucket of wall time is complete (60 s by default)
        s = wait_for(judged, 180, interval=3, what="the dead-letter monitor to judge the traffic")
        dl = next(m for m in s["monitors"] if m["monitor"] == "deadletter_rate")
        assert not dl["firing"] and dl["value"] < 0.001, dl  # 3 % of the requests have late actions: users' timing
        assert s["holds"] == {} and s["firing_since"] == {}, s

        def datasets() -> list[dict]:
            out = flywheel("datasets", "list").stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]

        # windows of a week, sealed two weeks after they end: of 36 days of traffic, at least the first two
        got = wait_for(lambda: len(ds := datasets()) >= 2 and ds, 240, interval=3, what="sealed datasets")
        now = time.time() * 1000
        assert len({d["window_start"] for d in got}) == len(got)
        assert all(d["records"] > 0 and d["window_end"] + 2 * WEEK_MS <= now for d in got), got
        assert status()["holds"] == {}
    finally:
        up.send_signal(signal.SIGINT)
        try:
            assert up.wait(60) == 0
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
