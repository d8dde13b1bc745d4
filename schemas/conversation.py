"""Conversations inside events: the `messages` of an interaction (schema v3) and of a candidate (v4).

A turn is a plain dict in OpenAI's chat shape, every key present after decoding:

    {"role": "user", "content": "...", "name": None, "tool_calls": [], "tool_call_id": None}
    tool call: {"id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}
    tool offered: {"name": "get_weather", "description": "...", "parameters": "<JSON Schema as text>"}

`messages` is what the model answered: the history, oldest first, ending with the turn answered
(normally a user turn, or a tool turn in an agent loop). The answer itself stays in `response`
(and `response_tool_calls`). System instructions may come as `system` or as leading system
turns; `system_text` reads both. Retrieved passages stay in `retrieved_context`.

The codec calls `upgrade_conversation` on every decoded interaction and candidate, whatever the
version it was written in: a single-turn event (v1/v2 interaction, v1-v3 candidate, or a current
one sent with `prompt` only) becomes a one-turn conversation, and a conversation sent without
`prompt` gets its last user turn as `prompt` (what dedup, pairing and the review queue key on).
Both are pure functions of the record, so decoding the same bytes twice gives the same record.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

ROLES = ("system", "developer", "user", "assistant", "tool")
INSTRUCTION_ROLES = ("system", "developer")
CONVERSATION_FIELDS = ("system", "messages", "tools", "response_tool_calls")


def message(
    role: str,
    content: str = "",
    *,
    name: str | None = None,
    tool_calls: Iterable[Mapping] = (),
    tool_call_id: str | None = None,
) -> dict:
    """A turn with every key of the schema's Message."""
    return {
        "role": role,
        "content": content,
        "name": name,
        "tool_calls": [tool_call(**t) for t in tool_calls],
        "tool_call_id": tool_call_id,
    }


def tool_call(name: str, arguments: str = "", id: str = "") -> dict:
    return {"id": id, "name": name, "arguments": arguments}


def tool_def(name: str, description: str = "", parameters: str = "") -> dict:
    return {"name": name, "description": description, "parameters": parameters}


def _full_message(m: Any) -> Any:
    """Fill a turn's optional keys (a JSON event may leave them out) and drop unknown ones; a value
    of the wrong type is left for the rules (`check_conversation`) to reject."""
    if not isinstance(m, dict):
        return m
    calls = m.get("tool_calls") or []
    return {
        "role": m.get("role"),
        "content": m.get("content", ""),
        "name": m.get("name"),
        "tool_calls": [_full_call(c) for c in calls] if isinstance(calls, list) else calls,
        "tool_call_id": m.get("tool_call_id"),
    }


def _full_call(c: Any) -> Any:
    if not isinstance(c, dict):
        return c
    return {"id": c.get("id", ""), "name": c.get("name"), "arguments": c.get("arguments", "")}


def _full_tool(t: Any) -> Any:
    if not isinstance(t, dict):
        return t
    return {"name": t.get("name"), "description": t.get("description", ""), "parameters": t.get("parameters", "")}


def upgrade_conversation(record: dict) -> dict:
    """The codec's upgrade of an interaction or a candidate, in place (see the module's doc)."""
    messages = record.get("messages")
    if messages is None:
        messages = []
    if messages and isinstance(messages, list):
        messages = [_full_message(m) for m in messages]
    prompt = record.get("prompt")
    if not messages and isinstance(prompt, str) and prompt:
        messages = [message("user", prompt)]
    elif not prompt and isinstance(messages, list):
        record["prompt"] = last_user_text(messages)
    record["messages"] = messages
    record.setdefault("system", "")
    tools = record.get("tools") or []
    record["tools"] = [_full_tool(t) for t in tools] if isinstance(tools, list) else tools
    calls = record.get("response_tool_calls") or []
    record["response_tool_calls"] = [_full_call(c) for c in calls] if isinstance(calls, list) else calls
    return record


def last_user_text(messages: Iterable[Mapping]) -> str:
    text = ""
    for m in messages:
        if isinstance(m, Mapping) and m.get("role") == "user" and isinstance(m.get("content"), str):
            text = m["content"]
    return text


def system_text(system: str, messages: Iterable[Mapping]) -> str:
    """The system instructions: `system` and the text of every system/developer turn, in order."""
    parts = [system] if system else []
    parts += [m["content"] for m in messages if m.get("role") in INSTRUCTION_ROLES and m.get("content")]
    return "\n\n".join(parts)


def dialogue(messages: Iterable[Mapping]) -> list[Mapping]:
    """The turns that are not instructions."""
    return [m for m in messages if m.get("role") not in INSTRUCTION_ROLES]


def check_conversation(kind: str, record: Any, invalid: type[Exception]) -> None:
    """The rules beyond the schema: known roles, text where text goes, a tool turn names its call."""
    if not isinstance(record.system, str):
        raise invalid(f"{kind}.system must be a string")
    if not isinstance(record.messages, list):
        raise invalid(f"{kind}.messages must be a list of turns")
    for i, m in enumerate(record.messages):
        where = f"{kind}.messages[{i}]"
        if not isinstance(m, dict):
            raise invalid(f"{where} must be an object with a role")
        role = m.get("role")
        if role not in ROLES:
            shown = repr(role) if isinstance(role, str) and len(role) <= 16 else f"a {type(role).__name__}"
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)}, got {shown}")
        if not isinstance(m.get("content"), str):
            raise invalid(f"{where}.content must be a string")
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise invalid(f"{where}.{key} must be a string")
        if role == "tool" and not m.get("tool_call_id"):
            raise invalid(f"{where}: a tool turn must carry the tool_call_id it answers")
        _check_calls(f"{where}.tool_calls", m.get("tool_calls"), invalid)
        if m.get("tool_calls") and role != "assistant":
            raise invalid(f"{where}: only an assistant turn makes tool calls")
    _check_calls(f"{kind}.response_tool_calls", record.response_tool_calls, invalid)
    if not isinstance(record.tools, list):
        raise invalid(f"{kind}.tools must be a list")
    for i, t in enumerate(record.tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise invalid(f"{kind}.tools[{i}] must have a name")
        for key in ("description", "parameters"):
            if not isinstance(t.get(key), str):
                raise invalid(f"{kind}.tools[{i}].{key} must be a string")


def _check_calls(where: str, calls: Any, invalid: type[Exception]) -> None:
    if not isinstance(calls, list):
        raise invalid(f"{where} must be a list")
    for j, c in enumerate(calls):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise invalid(f"{where}[{j}] must have a function name")
        for key in ("id", "arguments"):
            if not isinstance(c.get(key), str):
                raise invalid(f"{where}[{j}].{key} must be a string")


def conversation_texts(record: Any) -> Iterator[tuple[str, Any]]:
    """(text, setter) for every free text of a record's conversation, for scanners and redactors:
    the system instructions, each turn's content, name and tool-call arguments, the tools'
    descriptions and parameter schemas, the answer's tool-call arguments."""
    yield record.system, (lambda v: setattr(record, "system", v))
    for m in record.messages:
        yield m["content"], (lambda v, m=m: m.__setitem__("content", v))
        if m.get("name"):
            yield m["name"], (lambda v, m=m: m.__setitem__("name", v))
        for c in m["tool_calls"]:
            yield c["arguments"], (lambda v, c=c: c.__setitem__("arguments", v))
    for t in record.tools:
        yield t["description"], (lambda v, t=t: t.__setitem__("description", v))
        yield t["parameters"], (lambda v, t=t: t.__setitem__("parameters", v))
    for c in record.response_tool_calls:
        yield c["arguments"], (lambda v, c=c: c.__setitem__("arguments", v))
