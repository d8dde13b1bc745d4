"""The long commands against the embedded broker and Redis, run as from a shell: each draws its
progress bar on a terminal's stderr, stdout carries only the data (JSON that parses), and --json
turns the bar off."""

from __future__ import annotations

import json

from tests.fixtures.terminal import run_with_terminal_stderr
from tests.integration.helpers import settings_env


def test_long_commands_draw_their_bar_on_stderr_and_keep_stdout_clean(settings, tmp_path):
    from flywheel.topics import create_topics

    create_topics(settings)
    env = settings_env(settings)

    code, out, terminal = run_with_terminal_stderr(["simulate", "--requests", "40", "--seed", "3"], env)
    assert code == 0, terminal[-2000:]
    assert json.loads(out)["interactions"] == 40
    assert "simulate" in terminal and "ev" in terminal
    # a second run's traffic comes after the first's event time: ahead of the wall clock, allowed here
    again = {**env, "FLYWHEEL_MAX_EVENT_AHEAD_MS": "-1"}
    code, out, terminal = run_with_terminal_stderr(["simulate", "--requests", "10", "--seed", "4", "--json"], again)
    assert code == 0, terminal[-2000:]
    assert json.loads(out)["interactions"] == 10 and "simulate" not in terminal

    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello"}]}
            )
            + "\n"
            for i in range(5)
        )
    )
    code, out, terminal = run_with_terminal_stderr(["import", "openai-jsonl", str(calls)], env)
    assert code == 0, terminal[-2000:]
    assert json.loads(out)["interactions"] == 5
    assert "import" in terminal and "line" in terminal

    code, out, terminal = run_with_terminal_stderr(["calibrate", "--idle-timeout", "2"], env)
    assert code == 0, terminal[-2000:]
    assert json.loads(out)["skipped_records"] == 0
    assert "verdicts" in terminal

    code, out, terminal = run_with_terminal_stderr(["report"], env)
    assert code == 0, terminal[-2000:]
    assert "report: topics read" in terminal and "\r" not in out  # the text table, no bar in it
    code, out, terminal = run_with_terminal_stderr(["report", "--json"], env)
    assert code == 0 and "report:" not in terminal
    # the CLI's bar counts through from_topics' `progress`: it sees every record of the four topics read,
    # the undecodable ones too, and the figures are the same with or without a counter
    from confluent_kafka import Producer

    from flywheel.policy import GatePolicy
    from flywheel.report.sources import from_topics
    from flywheel.tail import read

    producer = Producer({"bootstrap.servers": settings.broker_url})
    for i in range(3):
        producer.produce(settings.topic_verdicts, key=f"k{i}".encode(), value=b"not a verdict")
    assert producer.flush(30) == 0
    window_days = GatePolicy.load(settings.gate_policy).datasets.window_days
    counted: list[int] = []
    counted_figures = from_topics(settings, window_days, 1_000_000, progress=counted.append)
    plain = from_topics(settings, window_days, 1_000_000)
    assert json.loads(out) == json.loads(json.dumps(counted_figures.to_dict(), sort_keys=True))
    assert counted_figures.to_dict() == plain.to_dict()
    topics = (settings.topic_datasets_ready, settings.topic_models, settings.topic_verdicts, settings.topic_candidates)
    records = sum(sum(1 for _ in read(settings, t, to_end=True, idle_timeout=3.0)) for t in topics)
    assert records >= 3 and sum(counted) == records
