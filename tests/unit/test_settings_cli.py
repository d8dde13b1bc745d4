"""Settings from the environment, the configuration reference page, and the CLI's error contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_settings_read_the_environment_with_types():
    s = Settings.from_env({"FLYWHEEL_PARTITIONS": "8", "FLYWHEEL_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"})
    assert s.partitions == 8 and s.broker_url == "k1:9092,k2:9092"
    with pytest.raises(SettingsError, match="FLYWHEEL_PARTITIONS"):
        Settings.from_env({"FLYWHEEL_PARTITIONS": "eight"})
    with pytest.raises(SettingsError, match="retention"):
        Settings.from_env({"FLYWHEEL_RETENTION_MS": "1000"})
    with pytest.raises(SettingsError, match="FLYWHEEL_KAFKA_BOOTSTRAP"):
        Settings.from_env({}).broker_url


def test_the_configuration_page_documents_every_setting():
    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    for env, default, doc in Settings.describe():
        assert f"| `{env}` | `{default}` |" in page, f"docs/reference/configuration.md lacks {env} = {default}"
        assert doc, f"{env} has no doc: the page would say nothing about it"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["simulate", "--requests", "0"], "--requests"),
        (["simulate", "--mix", "accepted"], "--mix"),
        (["tail"], "topic"),
        (["nonsense"], "invalid choice"),
        (["datasets", "export", "ds-1", "--format", "parquet"], "--format"),
        (["reviewers"], "COMMAND"),
        (["calibrate", "--min-observations", "0"], "--min-observations"),
    ],
)
def test_wrong_arguments_give_one_line_and_exit_2(argv, needle):
    r = subprocess.run([sys.executable, "-m", "flywheel.cli", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("flywheel")


def test_every_command_has_help():
    for argv in (
        ["--help"],
        ["up", "--help"],
        ["worker", "--help"],
        ["topics", "create", "--help"],
        ["simulate", "--help"],
        ["tail", "--help"],
        ["review", "--help"],
        ["reviewers", "add", "--help"],
        ["calibrate", "--help"],
        ["datasets", "run", "--help"],
        ["datasets", "export", "--help"],
        ["datasets", "affected", "--help"],
    ):
        r = subprocess.run([sys.executable, "-m", "flywheel.cli", *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage:" in r.stdout


def test_worker_without_a_broker_says_so():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("FLYWHEEL_")}
    r = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "worker"], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 2 and "FLYWHEEL_KAFKA_BOOTSTRAP" in r.stderr
