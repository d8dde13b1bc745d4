"""OpenAI-shaped calls as flywheel interactions: pure converters, no `openai` import.

`from_chat_completion(request, response)` takes a Chat Completions request (the keyword arguments of
`client.chat.completions.create`, or the JSON body) and its response (a `ChatCompletion` object or
its JSON), `from_responses(request, response)` the same for the Responses API
(`client.responses.create`). Both give the conversation part of an interaction:

    {"messages": [...], "system": "...", "tools": [...], "response": "...", "response_tool_calls": [...],
     "model_version": "...", "request_id": "<the provider's id>", "event_time": ms or None,
     "metadata": {"usage.prompt_tokens": "12", ...}}

What is mapped: message content given as parts (`[{"type": "text", "text": ...}]`) is joined into one
text (non-text parts such as images become `[image]`, `[audio]`, `[file]`); tool calls
`{"id", "type": "function", "function": {"name", "arguments"}}` become `{"id", "name", "arguments"}`;
the legacy `function_call` too; tool definitions keep their name, description and JSON Schema (as JSON
text); `instructions` of the Responses API become `system`. Objects are read through `model_dump()`
(pydantic, as the `openai` package returns them) or as mappings.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

_PART_TEXT_KEYS = ("text", "input_text", "output_text", "refusal")


class ShapeError(ValueError):
    """A request or response that is not in the OpenAI shape this module reads."""


def as_dict(obj: Any) -> Any:
    """A pydantic model (openai's objects), a mapping, or a list of them, as plain dicts and lists."""
    if obj is None:
        return None
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=False)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and not isinstance(obj, Mapping):
        return to_dict()
    if isinstance(obj, Mapping):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    return obj


def content_text(content: Any) -> str:
    """Message content as one text: a string, or parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        raise ShapeError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, Mapping):
            raise ShapeError("a content part must be an object")
        kind = str(part.get("type") or "text")
        for key in _PART_TEXT_KEYS:
            if isinstance(part.get(key), str):
                texts.append(part[key])
                break
        else:
            if isinstance(part.get("text"), Mapping) and isinstance(part["text"].get("value"), str):
                texts.append(part["text"]["value"])  # the Assistants API's {"text": {"value": ...}}
            else:
                texts.append(f"[{kind.removeprefix('input_').removesuffix('_url')}]")
    return "\n".join(texts)


def _arguments(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def tool_calls_of(calls: Any) -> list[dict]:
    out = []
    for c in calls or ():
        if not isinstance(c, Mapping):
            raise ShapeError("a tool call must be an object")
        fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ShapeError("a tool call must name its function")
        out.append(
            {
                "id": str(c.get("id") or c.get("call_id") or ""),
                "name": name,
                "arguments": _arguments(fn.get("arguments")),
            }
        )
    return out


def chat_message(m: Any) -> dict:
    """One Chat Completions message as a flywheel turn."""
    m = as_dict(m)
    if not isinstance(m, Mapping):
        raise ShapeError("a message must be an object")
    calls = tool_calls_of(m.get("tool_calls"))
    if m.get("function_call"):  # the legacy single function call
        calls += tool_calls_of([{"function": m["function_call"]}])
    role = m.get("role")
    if role == "function":  # the legacy function result
        role = "tool"
    return {
        "role": role,
        "content": content_text(m.get("content")),
        "name": m.get("name"),
        "tool_calls": calls,
        "tool_call_id": m.get("tool_call_id") or (m.get("name") if m.get("role") == "function" else None),
    }


def tool_defs(tools: Any) -> list[dict]:
    out = []
    for t in as_dict(tools) or ():
        if not isinstance(t, Mapping):
            raise ShapeError("a tool must be an object")
        fn = t.get("function") if isinstance(t.get("function"), Mapping) else t
        name = fn.get("name") or t.get("type")  # built-in tools (web_search, ...) have a type only
        if not isinstance(name, str) or not name:
            continue
        params = fn.get("parameters")
        out.append(
            {
                "name": name,
                "description": str(fn.get("description") or ""),
                "parameters": "" if params is None else json.dumps(params, ensure_ascii=False, sort_keys=True),
            }
        )
    return out


def _usage(usage: Any, prefix: str = "usage.") -> dict[str, str]:
    out = {}
    for k, v in (as_dict(usage) or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = str(v)
    return out


def _seconds_to_ms(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value * 1000) if value < 10**11 else int(value)
    return None


def from_chat_completion(request: Any, response: Any) -> dict:
    """A Chat Completions call (request kwargs or body; `ChatCompletion` or its JSON) as interaction fields."""
    req, resp = as_dict(request) or {}, as_dict(response) or {}
    if not isinstance(req, Mapping) or not isinstance(resp, Mapping):
        raise ShapeError("request and response must be objects")
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise ShapeError("a Chat Completions request has a list of messages")
    choices = resp.get("choices") or []
    if not choices:
        raise ShapeError("the response has no choices")
    first = choices[0] if isinstance(choices[0], Mapping) else {}
    answer = chat_message(first.get("message") or {"role": "assistant", "content": ""})
    meta = _usage(resp.get("usage"))
    if first.get("finish_reason"):
        meta["finish_reason"] = str(first["finish_reason"])
    if len(choices) > 1:
        meta["choices"] = str(len(choices))
    return {
        "messages": [chat_message(m) for m in messages],
        "system": "",
        "tools": tool_defs(req.get("tools") or req.get("functions")),
        "response": answer["content"],
        "response_tool_calls": answer["tool_calls"],
        "model_version": str(resp.get("model") or req.get("model") or ""),
        "request_id": str(resp.get("id") or ""),
        "event_time": _seconds_to_ms(resp.get("created")),
        "metadata": meta,
    }


def _responses_input(items: Any) -> list[dict]:
    if isinstance(items, str):
        return [{"role": "user", "content": items, "name": None, "tool_calls": [], "tool_call_id": None}]
    out: list[dict] = []
    for item in as_dict(items) or ():
        if not isinstance(item, Mapping):
            raise ShapeError("an input item must be an object")
        kind = item.get("type") or "message"
        if kind == "message":
            out.append(
                {
                    "role": item.get("role"),
                    "content": content_text(item.get("content")),
                    "name": None,
                    "tool_calls": [],
                    "tool_call_id": None,
                }
            )
        elif kind == "function_call":
            call = tool_calls_of([{"id": item.get("call_id") or item.get("id"), "function": item}])
            if out and out[-1]["role"] == "assistant" and not out[-1]["content"]:
                out[-1]["tool_calls"] += call  # parallel calls: one assistant turn
            else:
                out.append(
                    {"role": "assistant", "content": "", "name": None, "tool_calls": call, "tool_call_id": None}
                )
        elif kind == "function_call_output":
            out.append(
                {
                    "role": "tool",
                    "content": content_text(item.get("output")),
                    "name": None,
                    "tool_calls": [],
                    "tool_call_id": str(item.get("call_id") or ""),
                }
            )
        # reasoning items and the like are not part of the conversation
    return out


def from_responses(request: Any, response: Any) -> dict:
    """A Responses API call (`client.responses.create` kwargs or body; `Response` or its JSON)."""
    req, resp = as_dict(request) or {}, as_dict(response) or {}
    if not isinstance(req, Mapping) or not isinstance(resp, Mapping):
        raise ShapeError("request and response must be objects")
    if "input" not in req:
        raise ShapeError("a Responses request has an input")
    texts, calls = [], []
    for item in resp.get("output") or ():
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            texts.append(content_text(item.get("content")))
        elif item.get("type") == "function_call":
            calls += tool_calls_of([{"id": item.get("call_id") or item.get("id"), "function": item}])
    if not texts and isinstance(resp.get("output_text"), str):
        texts.append(resp["output_text"])
    instructions = req.get("instructions") or resp.get("instructions") or ""
    return {
        "messages": _responses_input(req["input"]),
        "system": instructions if isinstance(instructions, str) else content_text(instructions),
        "tools": tool_defs(req.get("tools")),
        "response": "\n".join(texts),
        "response_tool_calls": calls,
        "model_version": str(resp.get("model") or req.get("model") or ""),
        "request_id": str(resp.get("id") or ""),
        "event_time": _seconds_to_ms(resp.get("created_at")),
        "metadata": _usage(resp.get("usage")),
    }


def is_responses_shape(request: Any, response: Any) -> bool:
    req, resp = as_dict(request) or {}, as_dict(response) or {}
    return (isinstance(resp, Mapping) and resp.get("object") == "response") or (
        isinstance(req, Mapping) and "input" in req and "messages" not in req
    )
