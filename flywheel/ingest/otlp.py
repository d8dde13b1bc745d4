"""OTLP/HTTP traces (`POST /v1/traces`, protobuf or JSON) mapped to flywheel interactions and actions.

`parse_request` decodes the export request, `map_request` maps it: a span carrying GenAI
semantic-convention attributes (`gen_ai.input.messages`, `gen_ai.output.messages`, ...; or
OpenLLMetry's indexed `gen_ai.prompt.N.*`) becomes an interaction, a `gen_ai.feedback` or
`feedback` span or span event becomes actions, other spans are ignored, and a GenAI span that
cannot be made an event is counted, with its reason, in `partial_success.rejected_spans`
(`response_body`).

The attribute mapping: docs/concepts/sdk.md#otlp-attribute-mapping
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from flywheel.importers import SkipLine, feedback_actions

FEEDBACK_NAMES = ("gen_ai.feedback", "feedback")


@dataclass
class Mapped:
    interactions: list[dict] = field(default_factory=list)  # log_interaction keywords
    actions: list[dict] = field(default_factory=list)  # log_action keywords
    rejected: list[str] = field(default_factory=list)  # one reason per GenAI span that could not be mapped


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    if content_type.startswith("application/json"):
        obj = json.loads(body)
        _hex_ids_to_base64(obj)  # OTLP/JSON writes ids as hex, protobuf's JSON mapping as base64
        json_format.ParseDict(obj, req, ignore_unknown_fields=True)
    else:
        req.ParseFromString(body)
    return req


def response_body(rejected: int, message: str, content_type: str) -> tuple[bytes, str]:
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message[:500]
    if content_type.startswith("application/json"):
        return json_format.MessageToJson(resp).encode(), "application/json"
    return resp.SerializeToString(), "application/x-protobuf"


def _hex_ids_to_base64(obj: Any) -> None:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") and isinstance(
                    v, str
                ):
                    try:
                        node[k] = base64.b64encode(bytes.fromhex(v)).decode()
                    except ValueError:
                        pass  # already base64
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


def any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _structured(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{":
            try:
                return json.loads(text)
            except ValueError:
                return value
    return value


def _parts_text(parts: Any) -> tuple[str, list[dict], str | None]:
    """(text, tool calls, tool_call_id of a tool response) of a message's parts."""
    texts, calls, answered = [], [], None
    if isinstance(parts, str):
        return parts, [], None
    for p in parts or ():
        if not isinstance(p, Mapping):
            continue
        kind = p.get("type", "text")
        if kind == "text":
            texts.append(str(p.get("content", p.get("text", ""))))
        elif kind == "tool_call":
            args = p.get("arguments")
            calls.append(
                {
                    "id": str(p.get("id") or ""),
                    "name": str(p.get("name") or ""),
                    "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                }
            )
        elif kind == "tool_call_response":
            answered = str(p.get("id") or "")
            resp = p.get("response", p.get("result"))
            texts.append(resp if isinstance(resp, str) else json.dumps(resp, ensure_ascii=False))
        elif kind in ("blob", "uri", "file", "image"):
            texts.append(f"[{p.get('modality') or kind}]")
    return "\n".join(texts), calls, answered


def genai_messages(value: Any) -> list[dict]:
    value = _structured(value)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SkipLine("gen_ai messages must be an array")
    out = []
    for m in value:
        if not isinstance(m, Mapping):
            raise SkipLine("a gen_ai message must be an object")
        if "parts" in m:
            text, calls, answered = _parts_text(m.get("parts"))
        else:  # {"role", "content"} as some instrumentations write it
            text, calls, answered = str(m.get("content") or ""), [], m.get("tool_call_id")
        out.append(
            {
                "role": m.get("role"),
                "content": text,
                "name": m.get("name"),
                "tool_calls": calls,
                "tool_call_id": answered,
            }
        )
    return out


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict]:
    """OpenLLMetry's `gen_ai.prompt.0.role`, `gen_ai.prompt.0.content`, ..."""
    out, i = [], 0
    while f"{prefix}.{i}.content" in attrs or f"{prefix}.{i}.role" in attrs:
        out.append(
            {
                "role": attrs.get(f"{prefix}.{i}.role") or ("assistant" if "completion" in prefix else "user"),
                "content": str(attrs.get(f"{prefix}.{i}.content") or ""),
                "name": None,
                "tool_calls": [],
                "tool_call_id": None,
            }
        )
        i += 1
    return out


def is_genai(attrs: Mapping[str, Any]) -> bool:
    return (
        "gen_ai.input.messages" in attrs
        or "gen_ai.output.messages" in attrs
        or "gen_ai.prompt.0.content" in attrs
        or "gen_ai.completion.0.content" in attrs
    )


def _ms(nanos: int) -> int:
    return int(nanos // 1_000_000)


def _str(v: Any) -> str:
    return "" if v is None else str(v)


def map_request(req: ExportTraceServiceRequest) -> Mapped:
    out = Mapped()
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs = {**resource, **attributes(span.attributes)}
                try:
                    if is_genai(attrs):
                        rid = _map_llm_span(span, attrs, out)
                        for ev in span.events:
                            if ev.name in FEEDBACK_NAMES:
                                _feedback(attributes(ev.attributes), _ms(ev.time_unix_nano), out, rid, attrs)
                    elif span.name in FEEDBACK_NAMES:
                        _feedback(attrs, _ms(span.end_time_unix_nano or span.start_time_unix_nano), out, None, attrs)
                    else:
                        for ev in span.events:
                            if ev.name in FEEDBACK_NAMES:
                                _feedback(
                                    {**attrs, **attributes(ev.attributes)}, _ms(ev.time_unix_nano), out, None, attrs
                                )
                except SkipLine as exc:
                    out.rejected.append(str(exc))
    return out


def _map_llm_span(span, attrs: Mapping[str, Any], out: Mapped) -> str:
    messages = genai_messages(attrs.get("gen_ai.input.messages")) or _indexed(attrs, "gen_ai.prompt")
    answer = genai_messages(attrs.get("gen_ai.output.messages")) or _indexed(attrs, "gen_ai.completion")
    answer = [m for m in answer if m["role"] in (None, "assistant")]
    if not answer:
        raise SkipLine("a GenAI span without an output message")
    system = _structured(attrs.get("gen_ai.system_instructions"))
    if isinstance(system, list):
        system = _parts_text(system)[0]
    tools = []
    for t in _structured(attrs.get("gen_ai.tool.definitions")) or ():
        if isinstance(t, Mapping) and (t.get("name") or (t.get("function") or {}).get("name")):
            fn = t.get("function") if isinstance(t.get("function"), Mapping) else t
            params = fn.get("parameters")
            tools.append(
                {
                    "name": str(fn.get("name")),
                    "description": _str(fn.get("description")),
                    "parameters": params
                    if isinstance(params, str)
                    else ("" if params is None else json.dumps(params, sort_keys=True)),
                }
            )
    rid = (
        _str(attrs.get("gen_ai.response.id") or attrs.get("flywheel.request_id"))
        or f"otel-{span.trace_id.hex()}-{span.span_id.hex()}"
    )
    meta = {}
    for key in (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.operation.name",
    ):
        if attrs.get(key) is not None:
            meta[key] = _str(attrs[key])
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if reasons:
        meta["gen_ai.response.finish_reasons"] = (
            ",".join(map(str, reasons)) if isinstance(reasons, list) else _str(reasons)
        )
    context = attrs.get("flywheel.retrieved_context")
    if isinstance(context, str):
        context = [context]
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    out.interactions.append(
        {
            "request_id": rid,
            "session_id": _str(attrs.get("gen_ai.conversation.id") or attrs.get("session.id")),
            "user_id": _str(attrs.get("user.id") or attrs.get("enduser.id")) or "otel",
            "model_version": _str(attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model"))
            or "unknown",
            "event_time": _ms(end or start),
            "latency_ms": (end - start) / 1e6 if end and start and end >= start else None,
            "system": system if isinstance(system, str) else "",
            "messages": messages,
            "tools": tools,
            "response": "\n".join(m["content"] for m in answer if m["content"]),
            "response_tool_calls": [c for m in answer for c in m["tool_calls"]],
            "retrieved_context": [str(c) for c in context] if isinstance(context, list) else None,
            "task_type": _str(attrs.get("flywheel.task_type")),
            "variant": _str(attrs.get("flywheel.variant")),
            "metadata": {**meta, "source": "otlp"},
        }
    )
    return rid


def _feedback(
    attrs: Mapping[str, Any], time_ms: int, out: Mapped, rid: str | None, span_attrs: Mapping[str, Any]
) -> None:
    target = _str(attrs.get("gen_ai.response.id") or attrs.get("flywheel.request_id")) or rid
    if not target:
        raise SkipLine("a feedback event that names no request (gen_ai.response.id or flywheel.request_id)")
    fb = {
        "feedback": attrs.get("feedback.value"),
        "rating": attrs.get("feedback.rating"),
        "correction": attrs.get("feedback.correction"),
    }
    user = _str(attrs.get("user.id") or attrs.get("enduser.id") or span_attrs.get("user.id")) or "otel"
    session = _str(
        attrs.get("gen_ai.conversation.id") or attrs.get("session.id") or span_attrs.get("gen_ai.conversation.id")
    )
    for a in feedback_actions({k: v for k, v in fb.items() if v is not None}):
        out.actions.append({"request_id": target, "user_id": user, "session_id": session, "event_time": time_ms, **a})
