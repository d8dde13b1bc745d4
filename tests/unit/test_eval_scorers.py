"""Scorers for real answers (token F1, numeric, JSON schema, SQL by parsing, regex, judge), per-item
generation settings, and contamination that drops records instead of refusing datasets."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from trainer import contamination
from trainer.evaluate import Judge, score, score_f1, score_item, score_json, score_numeric, score_regex, score_sql
from trainer.examples import Example, GoldenItem
from trainer.golden import GoldenStore, load_items


def test_token_f1():
    assert score_f1("Paris, France.", "paris france") == 1.0
    assert score_f1("the capital is Paris", "Paris") == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))
    assert score_f1("Berlin", "Paris") == 0.0


def test_numeric_with_tolerance():
    assert score_numeric("It is 1,000 metres.", "1000") == 1.0
    assert score_numeric("about 3.15", "3.14159", {"tolerance": 0.01}) == 1.0
    assert score_numeric("about 3.2", "3.14159", {"tolerance": 0.01}) == 0.0
    assert score_numeric("101", "100", {"rel_tolerance": 0.02}) == 1.0
    assert score_numeric("no number", "4") == 0.0


def test_json_against_a_schema():
    schema = json.dumps(
        {
            "type": "object",
            "required": ["city", "temp"],
            "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        }
    )
    assert score_json('Here: ```json\n{"city": "Oslo", "temp": -3.5}\n```', schema) == 1.0
    assert score_json('{"city": "Oslo"}', schema) == 0.0
    assert score_json('{"city": "Oslo", "temp": "cold"}', schema) == 0.0
    assert score_json("not json", schema) == 0.0


def test_sql_compared_by_parsing():
    assert score_sql("select count( * ) from users;", "SELECT COUNT(*) FROM users") == 1.0
    assert score_sql("SELECT name FROM users WHERE id=3", "select name from users where id = 3") == 1.0
    assert score_sql("SELECT name FROM users WHERE name = 'bob'", "SELECT name FROM users WHERE name = 'Bob'") == 0.0
    assert score_sql("CREATE TABLE users (id INT)", "SELECT COUNT(*) FROM users") == 0.0
    assert score_sql("SELECT FROM WHERE ((", "SELECT 1") == 0.0


def test_regex():
    assert score_regex("Order #A-1234 shipped", r"#A-\d{4}") == 1.0
    assert score_regex("ok", "OK", {"flags": "i"}) == 1.0 and score_regex("ok", "OK") == 0.0
    assert score_regex("x", "(") == 0.0


def test_options_carry_generation_settings_and_old_versions_keep_their_bytes(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text(
        json.dumps(
            {
                "prompt": "pi?",
                "expected": "3.14",
                "scorer": "numeric",
                "options": json.dumps({"tolerance": 0.01, "max_new_tokens": 4}),
            }
        )
        + "\n"
        + json.dumps({"prompt": "capital of France?", "expected": "Paris", "scorer": "f1"})
        + "\n"
    )
    items = load_items(f)
    assert json.loads(items[0].options) == {"max_new_tokens": 4, "tolerance": 0.01}
    store = GoldenStore(tmp_path / "golden")
    v = store.add(items)
    assert (
        '"options"' not in store._path(v).read_text().splitlines()[1 - [i.prompt for i in store.load(v)].index("pi?")]
    )
    assert store.add([]) == v  # nothing changed: no new version
    assert score(items, ["3.141", "Paris"]).scores == [1.0, 1.0]


def test_judge_through_a_local_openai_compatible_server():
    from aiohttp import web

    seen = []

    async def completions(request):
        body = await request.json()
        seen.append(body)
        grade = "9" if "Paris" in body["messages"][0]["content"].split("Answer to grade:")[1] else "1"
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": grade}}]})

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state = {}

    def serve():
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", completions)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]
        state["runner"] = runner
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        judge = Judge(f"http://127.0.0.1:{state['port']}/v1", model="grader")
        item = GoldenItem("g1", "Capital of France?", "Paris", "geo", "judge")
        assert score_item(item, "It is Paris.", judge) == pytest.approx(0.9)
        assert score_item(item, "Lyon", judge) == pytest.approx(0.1)
        assert seen[0]["model"] == "grader" and seen[0]["temperature"] == 0
        assert score_item(item, "Paris", None) == 0.0  # off by default: never needed offline
    finally:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_contaminated_records_are_dropped_and_counted_and_only_a_large_share_refuses():
    golden = [GoldenItem("g1", "what is the capital of france today", "Paris")]
    index = contamination.ContaminationIndex(golden, threshold=0.8)
    train = [Example("what is the capital of France today", "Paris")] + [
        Example(f"question number {i} about sql", "x") for i in range(9)
    ]
    (kept, val), report = contamination.drop(index, (train, []), max_share=0.2)
    assert len(kept) == 9 and val == [] and report.hits == 1 and report.checked == 10
    with pytest.raises(contamination.TooContaminated, match="contamination_max_share"):
        contamination.drop(index, (train[:3],), max_share=0.2)
