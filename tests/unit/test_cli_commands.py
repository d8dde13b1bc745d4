"""The CLI's shape (one module per command on one base), its one error path, `--json` on every
command that prints data, and progress bars that stay on a terminal's stderr, off stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flywheel import reference
from flywheel.cli import COMMANDS, build_parser, main
from flywheel.cli.base import DOCUMENT, LINES, Command
from tests.fixtures.terminal import run_with_terminal_stderr as on_a_terminal

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("FLYWHEEL_REDIS_URL", "redis://127.0.0.1:6379/0")


def leaves():
    """(path, parser, command) of every command that runs (not the groups)."""
    for path, sub, _ in reference._commands(build_parser()):
        command = sub.get_default("_command")
        if command is not None:
            yield path, sub, command


def options(sub) -> set[str]:
    return {opt for action in sub._actions for opt in action.option_strings}


def test_each_top_level_command_is_its_own_module_on_the_base():
    modules = {c.__module__ for c in COMMANDS}
    assert len(COMMANDS) == len({c.name for c in COMMANDS}) >= 23
    assert all(issubclass(c, Command) and c.help and c.__module__.startswith("flywheel.cli.") for c in COMMANDS)
    assert len(modules) >= 22  # review and reviewers share one; the rest have one each
    # no module of the package is long: the CLI parses, delegates and prints
    for path in (ROOT / "flywheel" / "cli").glob("*.py"):
        assert len(path.read_text().splitlines()) < 300, path.name


@pytest.mark.parametrize(
    "path",
    [
        "datasets list",
        "datasets show",
        "datasets affected",
        "datasets verify",
        "models list",
        "models show",
        "reviewers list",
        "golden list",
        "guards status",
        "rollout status",
        "erasure status",
        "policy show",
        "gate explain",
        "calibrate",
        "report",
        "clocks show",
        "review",
        "tail",
        "demo",
    ],
)
def test_commands_that_print_data_take_json(path):
    found = {" ".join(p): (sub, cmd) for p, sub, cmd in leaves()}
    sub, command = found[path]
    assert "--json" in options(sub) and command.output in (DOCUMENT, LINES)


def test_json_and_progress_options_come_from_the_base_alike():
    for path, sub, command in leaves():
        assert ("--json" in options(sub)) == bool(command.output), path
        assert ("--no-progress" in options(sub)) == command.progress, path
        if command.output:
            help_ = next(a.help for a in sub._actions if "--json" in a.option_strings)
            assert help_.startswith("print"), path
    long = {" ".join(p) for p, _, c in leaves() if c.progress}
    assert {
        "bootstrap",
        "simulate",
        "gate explain",
        "calibrate",
        "datasets export",
        "report",
        "import openai-jsonl",
    } <= long


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A data dir and an app id of this test's own in the real Redis, its keys removed after."""
    import redis

    app_id = f"cli-test-{uuid.uuid4().hex[:8]}"
    for k in [k for k in os.environ if k.startswith("FLYWHEEL_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_APP_ID", app_id)
    monkeypatch.setenv("FLYWHEEL_REDIS_URL", REDIS_URL)
    yield tmp_path
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{app_id}*"):
        client.delete(key)


def run_json(argv, capsys) -> tuple[int, object]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    command = next(c for p, _, c in leaves() if tuple(argv[: len(p)]) == p)
    if command.output == LINES:
        return code, [json.loads(line) for line in out.splitlines()]
    return code, json.loads(out)


def test_json_output_parses(env, capsys):
    items = env / "golden.jsonl"
    items.write_text(json.dumps({"prompt": "2+2?", "expected": "4"}) + "\n")
    policy = env / "policy.toml"
    policy.write_text('version = "cli-json"\n')

    assert run_json(["policy", "show"], capsys)[1]["version"] == "default-1"
    assert run_json(["policy", "check", str(policy)], capsys)[1]["ok"] is True
    assert run_json(["golden", "add", str(items)], capsys)[1]["added"] == 1
    code, versions = run_json(["golden", "list"], capsys)
    assert code == 0 and len(versions) == 1
    assert run_json(["datasets", "list"], capsys) == (0, [])
    assert run_json(["models", "list"], capsys) == (0, [])
    assert run_json(["reviewers", "list"], capsys) == (0, [])
    assert run_json(["review", "--status"], capsys)[1]["depth"] == 0
    code, status = run_json(["rollout", "status"], capsys)
    assert code == 0 and status["production"] is None and "state" in status
    assert "monitors" in run_json(["guards", "status"], capsys)[1]
    code, erasure = run_json(["erasure", "status", "bob"], capsys)
    assert code == 0 and erasure["erasure_requested"] is False


def test_errors_are_one_line_and_the_traceback_only_when_asked(env, capsys, monkeypatch):
    assert main(["datasets", "show", "ds-none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flywheel: error: ") and "ds-none" in err and err.count("\n") == 1

    monkeypatch.setenv("FLYWHEEL_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert main(["rollout", "status"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("flywheel: error: ConnectionError") and captured.err.count("\n") == 1
    assert main(["--debug", "rollout", "status"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("FLYWHEEL_DEBUG", "1")
    assert main(["rollout", "status"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def explain_inputs(tmp_path_factory):
    from tests.fixtures.models import build_tiny_detoxify

    d = tmp_path_factory.mktemp("explain")
    ckpt = build_tiny_detoxify(d)
    policy = d / "policy.toml"
    policy.write_text(f'version = "bar-test"\n[toxicity]\ncheckpoint = "{ckpt}"\n[keep_rate]\nenabled = false\n')
    answer = "The capital of Australia is Canberra, chosen as a compromise between Sydney and Melbourne in 1908."
    candidates = d / "candidates.jsonl"
    candidates.write_text(
        "".join(
            json.dumps(
                {
                    "request_id": f"r{i}",
                    "prompt": f"Question {i}: what is the capital of Australia?",
                    "response": f"{answer} ({i})",
                    "user_action": "accepted",
                    "task_type": "qa",
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    return policy, candidates


def run_with_terminal_stderr(argv, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    return on_a_terminal(argv, {**env, "FLYWHEEL_DATA_DIR": str(tmp_path)})


def test_a_progress_bar_is_drawn_on_a_terminal_stderr_and_never_on_stdout(explain_inputs, tmp_path):
    policy, candidates = explain_inputs
    argv = ["gate", "explain", "--file", str(candidates), "--policy", str(policy)]

    code, out, terminal = run_with_terminal_stderr(argv, tmp_path)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]  # every line of stdout is JSON: no bar in it
    assert len(lines) == 6 and "passed" in json.dumps(lines[-1])
    assert "explain" in terminal and "cand" in terminal  # the bar, on the terminal

    code, out_json, terminal = run_with_terminal_stderr([*argv, "--json"], tmp_path)
    assert code == 0 and out_json == out
    assert "cand" not in terminal  # --json: no bar, even on a terminal
    code, _, terminal = run_with_terminal_stderr([*argv, "--no-progress"], tmp_path)
    assert code == 0 and "cand" not in terminal


def test_no_progress_bar_when_stderr_is_not_a_terminal(explain_inputs, tmp_path):
    policy, candidates = explain_inputs
    r = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "gate", "explain", "--file", str(candidates), "--policy", str(policy)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
            "FLYWHEEL_DATA_DIR": str(tmp_path),
        },
        cwd=ROOT,
    )
    assert r.returncode == 0 and "cand" not in r.stderr
    assert all(json.loads(line) for line in r.stdout.splitlines())
