"""`flywheel demo` in its short mode, as CI runs it: the whole loop through every real stage (its own
embedded broker, the worker, the dataset builder, the trainer, the review page), and the model the
pipeline trained beats the cold-start model on the held-out golden set, by the trainer's own
evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_short_demo_improves_on_the_cold_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(HF_HUB_OFFLINE="1", FLYWHEEL_LOG_LEVEL="WARNING")
    report = tmp_path / "velocity.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flywheel.cli",
            "demo",
            "--weeks",
            "4",
            "--small",
            "--seed",
            "0",
            "--json",
            "--data-dir",
            str(tmp_path / "demo"),
            "--report",
            str(report),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["weeks"] == 4 and result["requests"] == 4 * 7 * 200
    cold = result["cold_start"]["quality"]
    trained = [c for c in result["cycles"] if c["quality"] is not None]
    assert trained, result["cycles"]
    last = trained[-1]
    assert last["quality"] > cold, (cold, trained)  # the flywheel turned: measured, not assumed
    assert last["records"] > 100 and 0 < last["pass_rate"] < 1 and last["collected"] >= 1000
    assert sum(c["reviewed"] for c in result["cycles"]) > 0  # simulated reviewers' verdicts reached the topic
    assert result["acceptance"]["v0001"]  # what users did with the cold-start model's answers, per window
    assert report.read_text().count("<svg") == 5
    assert {g["curve"] for g in result["growth"]} == {"quality", "requests", "users"} and len(result["windows"]) == 3
    bad = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "demo", "--weeks", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
