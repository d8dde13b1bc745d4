"""`flywheel gate explain` over a JSONL file, with a policy that loads the tiny detoxify checkpoint:
the policy's model wiring, the whole pipeline in process (memory duplicate index), the funnel,
privacy of the output, and one-line errors."""

from __future__ import annotations

import json

import pytest

from flywheel.cli import main
from tests.fixtures.models import build_tiny_detoxify

LONG = (
    "The capital of Australia is Canberra. It was chosen as a compromise between Sydney and Melbourne "
    "and became the seat of government in 1927. Let me know if you would like more detail on its history."
)


def line(rid, **kw):
    base = {
        "request_id": rid,
        "prompt": "What is the capital of Australia?",
        "response": LONG,
        "user_action": "accepted",
        "task_type": "qa",
    }
    base.update(kw)
    return json.dumps(base)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("tox")
    ckpt = build_tiny_detoxify(d)
    p = d / "policy.toml"
    p.write_text(f'version = "explain-test"\n[toxicity]\ncheckpoint = "{ckpt}"\n[keep_rate]\nenabled = false\n')
    return p


def test_explain_prints_every_decision_and_the_funnel(policy_file, tmp_path, capsys):
    f = tmp_path / "candidates.jsonl"
    f.write_text(
        "\n".join(
            [
                line("ok-1"),
                line("dup-1", response=LONG.replace("more detail", "more details")),  # near duplicate of ok-1
                line("toxic-1", response=LONG + " You are a stupid idiot."),
                line("regen-1", user_action="regenerated", response="Sydney, I think."),
                line(
                    "pii-1",
                    prompt="Mail me at jane.doe@example.com: what is the capital of Australia?",
                    response=LONG.replace("Canberra. It", "Canberra (call 415-555-0123). It"),
                ),
                "{not json",
                json.dumps({"request_id": "x"}),
            ]
        )
        + "\n"
    )
    code = main(["gate", "explain", "--file", str(f), "--policy", str(policy_file), "--show-text"])
    out = capsys.readouterr()
    assert code == 1  # two lines were not candidates: said on stderr, one line each, the rest decided
    assert f"{f}:6: skipped: not JSON" in out.err and f"{f}:7: skipped: missing or non-string fields" in out.err
    rows = [json.loads(x) for x in out.out.splitlines()]
    summary = rows.pop()["summary"]
    by_id = {r["request_id"]: r for r in rows}
    assert by_id["ok-1"]["verdict"] == "passed" and by_id["ok-1"]["reasons"] == []
    assert by_id["dup-1"]["verdict"] == "passed"  # duplicates are decided at the seal, over the whole window
    assert by_id["toxic-1"]["reasons"] == ["toxic"] and by_id["toxic-1"]["scores"]["toxicity"] > 0.5
    assert by_id["ok-1"]["scores"]["toxicity"] < 0.1  # the detoxify checkpoint, not the default model
    assert by_id["regen-1"]["reasons"] == ["action_excluded", "too_short", "low_quality"]
    pii = by_id["pii-1"]
    assert "pii_redacted" in pii["notes"] and pii["redactions"] == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert "<EMAIL_ADDRESS>" in pii["text"]["prompt"] and "<PHONE_NUMBER>" in pii["text"]["response"]
    assert "jane.doe" not in out.out and "555-0123" not in out.out
    assert all(r["policy"].startswith("explain-test@") for r in rows)
    assert summary["candidates"] == 5 and summary["passed"] == 3
    funnel = {s["filter"]: s["removed"] for s in summary["funnel"]}
    assert funnel["action"] == 1 and funnel["toxicity"] == 1 and not funnel.get("duplicates")
    assert summary["reasons"]["toxic"] == 1


def test_explain_without_show_text_prints_no_text(policy_file, tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    f.write_text(line("a") + "\n")
    assert main(["gate", "explain", "--file", str(f), "--policy", str(policy_file), "--summary-only"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["summary"]["passed"] == 1
    assert main(["gate", "explain", "--file", str(f), "--policy", str(policy_file)]) == 0
    assert "Canberra" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--file", "/nonexistent.jsonl"], "/nonexistent.jsonl: No such file or directory"),
        (["--policy", "/nonexistent.toml", "--file", "-"], "no such policy file"),
        (["--max", "0"], "must be greater than 0"),
    ],
)
def test_explain_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) if "--max" in args else _noop():
        code = main(["gate", "explain", *args])
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_checkpoint_that_does_not_load_is_one_line(tmp_path, capsys):
    p = tmp_path / "policy.toml"
    p.write_text(f'[toxicity]\ncheckpoint = "{tmp_path / "missing.ckpt"}"\n')
    f = tmp_path / "c.jsonl"
    f.write_text(line("a") + "\n")
    assert main(["gate", "explain", "--file", str(f), "--policy", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.ckpt" in err and "\n" not in err


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
