"""`flywheel datasets erase`: the request the command sends is on the erasure topic, keyed by the
user, with its reason; an invalid one is refused in one line and nothing is sent."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.helpers import settings_env


def test_erase_puts_the_request_on_the_erasure_topic_and_refuses_an_empty_id(settings):
    from flywheel.tail import read
    from flywheel.topics import create_topics

    create_topics(settings)

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "flywheel.cli", "datasets", "erase", *argv],
            capture_output=True,
            text=True,
            env=settings_env(settings),
            timeout=120,
        )

    out = cli("alice", "--reason", "asked by mail")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"erasure_requested": True, "topic": settings.topic_erasure}
    refused = cli(" ")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    (record,) = list(read(settings, settings.topic_erasure, to_end=True, idle_timeout=3.0))
    assert record["key"] == "alice"
    assert record["event"]["user_id"] == "alice" and record["event"]["reason"] == "asked by mail"
