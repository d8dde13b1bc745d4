"""OTLP/HTTP into the flywheel: the real OpenTelemetry SDK exports GenAI spans (protobuf) to
`flywheel ingest`'s /v1/traces, the same spans go as OTLP/JSON, and they come out of the real broker
as interactions and actions, then candidates and a chat record."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")

from google.protobuf import json_format  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from schemas.codec import Codec  # noqa: E402
from streams.datasets import content  # noqa: E402
from tests.integration.test_ingest import AUTH, TOKEN, ingest  # noqa: E402,F401  (the fixture)
from tests.integration.test_openai_shapes import consume, join  # noqa: E402

pytestmark = pytest.mark.integration
codec = Codec()

INPUT = [
    {"role": "user", "parts": [{"type": "text", "content": "What's the weather in Oslo? Use the tool."}]},
    {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": "call_w1", "name": "weather", "arguments": {"city": "Oslo"}}],
    },
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_w1", "response": "-3C, light snow"}]},
]
OUTPUT = [
    {
        "role": "assistant",
        "parts": [{"type": "text", "content": "It is -3°C with light snow in Oslo."}],
        "finish_reason": "stop",
    }
]


def emit(tracer, suffix: str) -> None:
    with tracer.start_as_current_span(f"chat weather-bot {suffix}", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-x",
                "gen_ai.response.model": "gpt-x-2026",
                "gen_ai.response.id": f"chatcmpl-otel-{suffix}",
                "gen_ai.conversation.id": "conv-9",
                "user.id": "u-otel",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.input.messages": json.dumps(INPUT),
                "gen_ai.output.messages": json.dumps(OUTPUT),
                "gen_ai.system_instructions": json.dumps(
                    [{"type": "text", "content": "You are a weather assistant."}]
                ),
                "gen_ai.tool.definitions": json.dumps(
                    [
                        {
                            "type": "function",
                            "name": "weather",
                            "description": "Current weather",
                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                        }
                    ]
                ),
                "flywheel.retrieved_context": ["Oslo forecast: -3C, light snow until 18:00."],
            }
        )
        span.add_event("gen_ai.feedback", {"feedback.value": "thumbs_up"})
    # OpenLLMetry's older indexed attributes
    with tracer.start_as_current_span(f"openai.chat {suffix}") as span:
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-y",
                "gen_ai.response.id": f"chatcmpl-old-{suffix}",
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "2+2?",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "5",
                "enduser.id": "u-old",
            }
        )
    # a plain HTTP span: not an LLM call, ignored
    with tracer.start_as_current_span("GET /api/orders") as span:
        span.set_attributes({"http.request.method": "GET", "http.response.status_code": 200})
    # a GenAI span with no output: rejected, counted
    with tracer.start_as_current_span(f"chat broken {suffix}") as span:
        span.set_attributes({"gen_ai.input.messages": json.dumps(INPUT), "gen_ai.response.id": f"broken-{suffix}"})
    # feedback as a span of its own, later: a correction and a low rating on the old-style call
    with tracer.start_as_current_span("gen_ai.feedback") as span:
        span.set_attributes(
            {
                "gen_ai.response.id": f"chatcmpl-old-{suffix}",
                "user.id": "u-old",
                "feedback.correction": "2+2 is 4.",
                "feedback.rating": 1,
            }
        )


def test_genai_spans_from_the_real_otel_sdk_become_interactions_and_actions(ingest, settings):
    srv = ingest().start()
    # protobuf, by the SDK's own exporter
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=srv.url + "/v1/traces", headers=AUTH)))
    emit(provider.get_tracer("test"), "pb")
    provider.shutdown()
    # the same spans as OTLP/JSON (hex ids), through the SDK's encoder
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    emit(provider.get_tracer("test"), "js")
    provider.shutdown()
    as_json = json_format.MessageToDict(encode_spans(memory.get_finished_spans()))
    for rs in as_json["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in sp:
                        sp[k] = base64.b64decode(sp[k]).hex()
    r = httpx.post(srv.url + "/v1/traces", json=as_json, headers=AUTH)
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert (
        httpx.post(
            srv.url + "/v1/traces", content=b"\x00garbage", headers={**AUTH, "Content-Type": "application/x-protobuf"}
        ).status_code
        == 400
    )
    assert httpx.post(srv.url + "/v1/traces", json=as_json).status_code == 401
    health = httpx.get(srv.url + "/healthz").json()
    assert health["refused"]["otlp_span_rejected"] == 2  # the broken span, once per export
    assert srv.stop() == 0

    interactions = consume(settings, settings.topics.interactions, 4)
    actions = consume(settings, settings.topics.actions, 6)
    recs = {
        codec.decode("interaction", m.value())["request_id"]: codec.decode("interaction", m.value())
        for m in interactions
    }
    assert set(recs) == {"chatcmpl-otel-pb", "chatcmpl-old-pb", "chatcmpl-otel-js", "chatcmpl-old-js"}
    for suffix in ("pb", "js"):
        r = recs[f"chatcmpl-otel-{suffix}"]
        assert r["user_id"] == "u-otel" and r["session_id"] == "conv-9" and r["model_version"] == "gpt-x-2026"
        assert r["system"] == "You are a weather assistant." and r["response"] == "It is -3°C with light snow in Oslo."
        assert [m["role"] for m in r["messages"]] == ["user", "assistant", "tool"]
        assert r["messages"][1]["tool_calls"] == [
            {"id": "call_w1", "name": "weather", "arguments": '{"city": "Oslo"}'}
        ]
        assert r["messages"][2]["tool_call_id"] == "call_w1" and r["messages"][2]["content"] == "-3C, light snow"
        assert r["tools"][0]["name"] == "weather" and r["retrieved_context"] == [
            "Oslo forecast: -3C, light snow until 18:00."
        ]
        assert r["metadata"]["gen_ai.usage.input_tokens"] == "120" and r["latency_ms"] >= 0
        old = recs[f"chatcmpl-old-{suffix}"]
        assert (
            old["prompt"] == "2+2?"
            and old["response"] == "5"
            and old["user_id"] == "u-old"
            and old["model_version"] == "gpt-y"
        )
    kinds = sorted(codec.decode("action", m.value())["action"] for m in actions)
    assert kinds == ["corrected", "corrected", "rated", "rated", "thumbs_up", "thumbs_up"]

    candidates = {c.request_id: c for c in join(interactions, actions)}
    assert candidates["chatcmpl-otel-pb"].label == "feedback_positive"
    c = candidates["chatcmpl-old-js"]
    assert c.label == "sft_correction"
    chat = content.chat_sft(content.sft_record(c, content.WindowStats(), 0.1))
    assert chat["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "2+2 is 4."}]
