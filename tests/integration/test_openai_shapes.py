"""OpenAI-shaped calls into the flywheel, through the real broker: the wrapper around the real `openai`
client talking to a local HTTP server that speaks the Chat Completions and Responses APIs, and
`log_chat_completion` with plain dicts. The logged bytes go through the join into candidates and
into chat-form training records with their context."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from confluent_kafka import Consumer, TopicPartition

from flywheel.sdk import FlywheelProducer
from flywheel.topics import create_topics
from schemas.codec import Codec, headers_dict
from schemas.records import InvalidEvent, TrainingCandidate
from streams.datasets import content
from streams.join.core import ACTION, INTERACTION, TICK_HEADER, DictStore, JoinCore, Record

pytestmark = pytest.mark.integration
openai = pytest.importorskip("openai")

codec = Codec()
MIN = 60_000


class ChatServer(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: answers with a tool call when tools are offered and no tool
    result came back yet, else with text; remembers the bodies it got."""

    bodies: list = []
    counter = 0

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, body, self.headers.get("Authorization")))
        type(self).counter += 1
        n = type(self).counter
        if self.path.endswith("/chat/completions"):
            wants_tool = body.get("tools") and body["messages"][-1]["role"] != "tool"
            message = (
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{n}",
                            "type": "function",
                            "function": {"name": "lookup_order", "arguments": '{"order":"A-1"}'},
                        }
                    ],
                }
                if wants_tool
                else {"role": "assistant", "content": "Refunds take up to 5 business days. ✓"}
            )
            out = {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "acme-chat-2",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if wants_tool else "stop"}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
            }
        elif self.path.endswith("/responses"):
            out = {
                "id": f"resp_{n}",
                "object": "response",
                "created_at": int(time.time()),
                "model": "acme-resp-1",
                "status": "completed",
                "output": [
                    {
                        "type": "message",
                        "id": f"msg_{n}",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": "Bonjour !", "annotations": []}],
                    }
                ],
                "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
            }
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    ChatServer.bodies = []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def consume(settings, topic: str, count: int, timeout: float = 20.0) -> list:
    c = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"oa-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m)
        assert len(out) == count, f"{len(out)} of {count} records"
        assert c.poll(0.5) is None  # nothing more
        return out
    finally:
        c.close()


def join(interactions: list, actions: list) -> list[TrainingCandidate]:
    """The broker's records through the join core, then settled by ticks past the window."""
    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=30 * MIN,
        watermark_delay_ms=0,
        marker_horizon_ms=24 * 60 * MIN,
        max_event_bytes=256 * 1024,
        max_event_ahead_ms=-1,
    )
    recs = [
        Record(INTERACTION, m.topic(), 0, i, m.key(), m.value(), headers_dict(m.headers()))
        for i, m in enumerate(interactions)
    ]
    recs += [
        Record(ACTION, m.topic(), 0, i, m.key(), m.value(), headers_dict(m.headers())) for i, m in enumerate(actions)
    ]
    first = j.apply_all(recs)  # old events settle here already, once the newer ones move the watermark
    assert first.deadletters == []
    end = str(int(time.time() * 1000) + 31 * MIN).encode()
    out = j.apply_all(
        [
            Record(INTERACTION, "i", 0, len(interactions), None, b"", {TICK_HEADER: end}),
            Record(ACTION, "a", 0, len(actions), None, b"", {TICK_HEADER: end}),
        ]
    )
    assert out.deadletters == []
    return [TrainingCandidate.from_dict(codec.decode("candidate", e.value)) for e in first.candidates + out.candidates]


def test_the_wrapper_logs_every_call_of_the_real_client_and_the_conversation_reaches_a_chat_record(settings, server):
    from flywheel.openai_wrapper import FlywheelOpenAI

    create_topics(settings)
    producer = FlywheelProducer(settings)
    client = FlywheelOpenAI(
        openai.OpenAI(base_url=server, api_key="sk-test-local", max_retries=0), producer, user_id="u-7"
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            },
        }
    ]
    messages = [
        {"role": "system", "content": "You are Acme's support bot."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "my order A-1 never came"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    passages = ["Refunds are paid within 5 business days.", "Lost parcels are refunded in full."]
    # an agent loop: the model calls a tool, the app runs it, the model answers
    first = client.chat.completions.create(
        model="acme-chat-2", messages=messages, tools=tools, flywheel_session_id="s-1"
    )
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "lost"}'},
    ]
    second = client.chat.completions.create(
        model="acme-chat-2",
        messages=messages,
        tools=tools,
        flywheel_session_id="s-1",
        flywheel_context=passages,
        flywheel_request_id="app-req-2",
    )
    third = client.responses.create(model="acme-resp-1", input="Dis bonjour", instructions="Réponds en français.")
    assert (first.flywheel_request_id, second.flywheel_request_id, third.flywheel_request_id) == (
        "chatcmpl-1",
        "app-req-2",
        "resp_3",
    )
    assert client.logged == 3 and client.log_errors == 0 and client.last_request_id == "resp_3"
    # the flywheel_* keys never reach the server; the server got the app's request as written
    assert all(not any(k.startswith("flywheel") for k in body) for _, body, _ in ChatServer.bodies)
    assert ChatServer.bodies[0][2] == "Bearer sk-test-local"
    producer.log_action(request_id=second.flywheel_request_id, user_id="u-7", action="accepted", session_id="s-1")
    producer.flush(15)

    got = consume(settings, settings.topics.interactions, 3)
    records = {
        codec.decode("interaction", m.value())["request_id"]: codec.decode("interaction", m.value()) for m in got
    }
    r1, r2, r3 = records["chatcmpl-1"], records["app-req-2"], records["resp_3"]
    assert r1["messages"][1]["content"] == "my order A-1 never came\n[image]" and r1["response"] == ""
    assert r1["response_tool_calls"] == [{"id": "call_1", "name": "lookup_order", "arguments": '{"order":"A-1"}'}]
    assert r1["metadata"]["usage.prompt_tokens"] == "42" and r1["metadata"]["finish_reason"] == "tool_calls"
    assert r1["latency_ms"] > 0 and r1["model_version"] == "acme-chat-2" and r1["session_id"] == "s-1"
    assert [m["role"] for m in r2["messages"]] == ["system", "user", "assistant", "tool"]
    assert (
        r2["messages"][2]["tool_calls"][0]["name"] == "lookup_order" and r2["messages"][3]["tool_call_id"] == "call_1"
    )
    assert r2["retrieved_context"] == passages and json.loads(r2["tools"][0]["parameters"])["type"] == "object"
    assert (
        r2["prompt"] == "my order A-1 never came\n[image]"
        and r2["response"] == "Refunds take up to 5 business days. ✓"
    )
    assert (
        r3["system"] == "Réponds en français."
        and r3["messages"][0]["content"] == "Dis bonjour"
        and r3["response"] == "Bonjour !"
    )

    actions = consume(settings, settings.topics.actions, 1)
    by_id = {c.request_id: c for c in join(got, actions)}
    c = by_id["app-req-2"]
    assert c.label == "sft_positive" and c.system == "" and c.messages[0]["role"] == "system"
    record = content.sft_record(c, content.WindowStats(), 0.1)
    codec.encode("sft_record", record)
    chat = content.chat_sft(record)
    assert chat["messages"][0]["role"] == "system"
    assert (
        chat["messages"][0]["content"].startswith("You are Acme's support bot.")
        and "[2] Lost parcels" in chat["messages"][0]["content"]
    )
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert chat["messages"][-1]["content"] == "Refunds take up to 5 business days. ✓"
    assert chat["tools"][0]["function"]["name"] == "lookup_order"
    producer.close()


def test_log_chat_completion_takes_dicts_of_both_apis_and_refuses_what_is_not_that_shape(settings):
    create_topics(settings)
    producer = FlywheelProducer(settings)
    request = {
        "model": "gpt-x",
        "messages": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
    }
    response = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "gpt-x-0613",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "4", "refusal": None}, "finish_reason": "stop"}
        ],
    }
    assert producer.log_chat_completion(request, response, user_id="u1") == "chatcmpl-abc"
    rid = producer.log_chat_completion(
        {
            "model": "o-mini",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather in Oslo?"}]},
                {"type": "function_call", "call_id": "fc_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call_output", "call_id": "fc_1", "output": "-3C, snow"},
            ],
        },
        {
            "id": "resp_9",
            "object": "response",
            "created_at": 1_760_000_001,
            "model": "o-mini",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Cold: -3C and snow."}],
                },
            ],
            "usage": {"input_tokens": 20, "output_tokens": 6},
        },
        user_id="u1",
        session_id="s9",
    )
    assert rid == "resp_9"
    for bad in (
        {"model": "m"},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
    ):
        with pytest.raises(InvalidEvent):
            producer.log_chat_completion(bad, response, user_id="u1")
    with pytest.raises(InvalidEvent):  # no choices
        producer.log_chat_completion(request, {"id": "x", "choices": []}, user_id="u1")
    with pytest.raises(InvalidEvent):  # a role the flywheel does not know
        producer.log_chat_completion({"messages": [{"role": "narrator", "content": "once"}]}, response, user_id="u1")
    producer.flush(15)
    got = [codec.decode("interaction", m.value()) for m in consume(settings, settings.topics.interactions, 2)]
    by_id = {r["request_id"]: r for r in got}
    a, b = by_id["chatcmpl-abc"], by_id["resp_9"]
    assert a["event_time"] == 1_760_000_000_000 and a["model_version"] == "gpt-x-0613" and a["prompt"] == "2+2?"
    assert a["messages"][0] == {
        "role": "developer",
        "content": "Be terse.",
        "name": None,
        "tool_calls": [],
        "tool_call_id": None,
    }
    assert [m["role"] for m in b["messages"]] == ["user", "assistant", "tool"] and b["messages"][2][
        "tool_call_id"
    ] == "fc_1"
    assert b["response"] == "Cold: -3C and snow." and b["metadata"]["usage.input_tokens"] == "20"
    producer.close()
