"""`flywheel import openai-jsonl FILE` as a command, against the real broker: a log file written the way
logging proxies and people write them (several shapes, CRLF, blank and broken lines, hostile text,
feedback in many spellings), into interactions and actions, through the join into candidates and
chat records; a second import of the same file changes no candidate."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from schemas.codec import Codec
from streams.datasets import content
from tests.integration.helpers import settings_env
from tests.integration.test_openai_shapes import consume, join

pytestmark = pytest.mark.integration
codec = Codec()

LINES = [
    # 1. fine-tuning format with a system prompt, RAG passages as objects, ISO time, thumbs up as an emoji
    {
        "messages": [
            {"role": "system", "content": "You answer from the handbook."},
            {"role": "user", "content": "How many vacation days do I get?"},
            {"role": "assistant", "content": "25 days a year, plus public holidays."},
        ],
        "context": [
            {"text": "Employees get 25 vacation days a year."},
            {"page_content": "Public holidays are extra."},
        ],
        "user_id": "emp-17",
        "session_id": "hr-1",
        "timestamp": "2026-12-01T09:30:00Z",
        "feedback": "👍",
        "model": "hr-bot-3",
    },
    # 2. a logged Chat Completions call, tool call in the answer, rating as a dict with a correction
    {
        "request": {
            "model": "gpt-x",
            "user": "cust-9",
            "tools": [{"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "refund order 77 <script>alert(1)</script>"}]}
            ],
        },
        "response": {
            "id": "chatcmpl-77",
            "created": 1_764_000_000,
            "model": "gpt-x-1",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Done: order 77 refunded."},
                }
            ],
        },
        "feedback": {"rating": 2, "correction": "I can't refund it myself; I opened ticket #77 for a person."},
    },
    # 3. a Batch API output line with its input body; feedback as a bool
    {
        "custom_id": "batch-req-1",
        "body": {"model": "gpt-x", "messages": [{"role": "user", "content": "Übersetze: good night"}]},
        "response": {
            "status_code": 200,
            "body": {
                "id": "chatcmpl-b1",
                "created": 1_764_000_100,
                "model": "gpt-x-1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Gute Nacht"}}],
            },
        },
        "thumbs": True,
        "user_id": "u-de",
    },
    # 4. Responses API call, a regenerate in words
    {
        "request": {"model": "o-mini", "instructions": "Be brief.", "input": "name a prime"},
        "response": {
            "id": "resp_5",
            "object": "response",
            "created_at": 1_764_000_200,
            "model": "o-mini",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "7"}]}],
        },
        "feedback": "regenerated",
        "user_id": "u-5",
    },
]
BAD = [
    "{not json",
    json.dumps({"messages": [{"role": "user", "content": "no answer here"}]}),  # no assistant turn
    json.dumps(
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}
    ),  # unknown role
    json.dumps(
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "feedback": "meh"}
    ),
    json.dumps(
        {
            "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
            "timestamp": "yesterday",
        }
    ),
    "[" * 5000 + "]" * 5000,
    json.dumps([1, 2, 3]),
    json.dumps(
        {
            "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "response": {"status_code": 500, "body": {"error": {"message": "overloaded"}}},
        }
    ),
]


def write_file(path, gz: bool = False):
    text = "\ufeff" if not gz else ""
    body = (
        "\r\n".join(
            [
                json.dumps(LINES[0], ensure_ascii=False),
                "",
                BAD[0],
                json.dumps(LINES[1]),
                BAD[1],
                BAD[2],
                json.dumps(LINES[2], ensure_ascii=False),
                BAD[3],
                BAD[4],
                BAD[5],
                BAD[6],
                BAD[7],
                json.dumps(LINES[3]),
                "   ",
            ]
        )
        + "\r\n"
    )
    data = (text + body).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def run_import(settings, path):
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "import", "openai-jsonl", str(path), "--user-id", "anon"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_openai_jsonl_into_candidates_and_chat_records(settings, tmp_path):
    from flywheel.topics import create_topics

    create_topics(settings)
    summary = run_import(settings, write_file(tmp_path / "calls.jsonl"))
    assert summary["lines"] == 12 and summary["interactions"] == 4 and summary["skipped"] == 8, summary
    assert summary["actions"] == 5  # thumbs_up; rated + corrected; thumbs_up; regenerated
    assert all("alert" not in e and "Übersetze" not in e for e in summary["first_errors"])  # reasons, never text
    # the same file gzipped, imported again: the same events
    summary2 = run_import(settings, write_file(tmp_path / "calls.jsonl.gz", gz=True))
    assert summary2["interactions"] == 4 and summary2["actions"] == 5

    interactions = consume(settings, settings.topics.interactions, 8)
    actions = consume(settings, settings.topics.actions, 10)
    values = [codec.decode("interaction", m.value()) for m in interactions]
    by_id = {v["request_id"]: v for v in values}
    assert len(by_id) == 4 and sorted(v["request_id"] for v in values) == sorted(list(by_id) * 2)
    assert "chatcmpl-77" in by_id and "batch-req-1" in by_id and "resp_5" in by_id
    hr = next(v for v in values if v["user_id"] == "emp-17")
    assert (
        hr["request_id"].startswith("imp-")
        and hr["event_time"] == 1_796_117_400_000
        and hr["model_version"] == "hr-bot-3"
    )
    assert hr["retrieved_context"] == ["Employees get 25 vacation days a year.", "Public holidays are extra."]
    assert by_id["chatcmpl-77"]["user_id"] == "cust-9" and by_id["chatcmpl-77"]["tools"][0]["name"] == "refund"
    assert by_id["resp_5"]["system"] == "Be brief." and by_id["batch-req-1"]["metadata"]["source"] == "openai-jsonl"

    candidates = {c.request_id: c for c in join(interactions, actions)}  # the duplicate import is a replay: one each
    assert len(candidates) == 4
    assert candidates["chatcmpl-77"].label == "sft_correction" and candidates["resp_5"].user_action == "regenerated"
    assert candidates[hr["request_id"]].label == "feedback_positive"
    c = candidates["chatcmpl-77"]
    chat = content.chat_sft(content.sft_record(c, content.WindowStats(), 0.1))
    assert chat["messages"] == [
        {"role": "user", "content": "refund order 77 <script>alert(1)</script>"},
        {"role": "assistant", "content": "I can't refund it myself; I opened ticket #77 for a person."},
    ]
    pref = content.chat_preference(content.preference_record(c, content.WindowStats(), 0.1))
    assert pref["rejected"] == [{"role": "assistant", "content": "Done: order 77 refunded."}]
