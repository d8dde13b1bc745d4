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
    # the CLI's reading with a bar gives the figures flywheel.report.sources.from_topics gives
    from flywheel.policy import GatePolicy
    from flywheel.report.sources import from_topics

    expected = from_topics(settings, GatePolicy.load(settings.gate_policy).datasets.window_days, 1_000_000)
    assert json.loads(out) == json.loads(json.dumps(expected.to_dict(), sort_keys=True))
