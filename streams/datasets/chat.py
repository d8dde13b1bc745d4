"""Training records in chat form: what the model saw, laid out as the messages it will be trained on.

A record's `messages` (sft_record v2, preference_record v2) is the prompt side of the conversation,
ready for the model's own chat template (`tokenizer.apply_chat_template(messages + [answer])`):

    1. one system turn: the interaction's system instructions (`system`, then any system/developer
       turns of its messages, in order), with the retrieved passages appended when
       `chat_context = "system"` (the default);
    2. the history, oldest first, as it was served (user, assistant and tool turns, tool calls kept);
    3. the turn answered (normally the last user turn), with the passages put before its text when
       `chat_context = "user"`, or as a user turn of their own just before it when
       `chat_context = "turn"`. `"none"` leaves them out of `messages` (they stay in `context`).

The passages are written with two templates of the policy's [datasets] section:

    chat_passage_template = "[{n}] {text}"          # {n}: 1-based position, {text}: the passage
    chat_context_template = "Answer using only the documents below when they hold the answer.\\n\\n{passages}"

(passages joined by a blank line). No system turn is written when there are neither instructions
nor passages placed there. The raw passages stay in the record's `context` field, so a grounding
check at evaluation sees exactly what the model was given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from schemas.conversation import INSTRUCTION_ROLES, message, system_text

PLACEMENTS = ("system", "user", "turn", "none")
DEFAULT_CONTEXT_TEMPLATE = "Answer using only the documents below when they hold the answer.\n\n{passages}"
DEFAULT_PASSAGE_TEMPLATE = "[{n}] {text}"


@dataclass(frozen=True)
class ChatLayout:
    context: str = "system"
    context_template: str = DEFAULT_CONTEXT_TEMPLATE
    passage_template: str = DEFAULT_PASSAGE_TEMPLATE

    @classmethod
    def of(cls, policy: Any) -> "ChatLayout":
        """The layout a DatasetPolicy names (its chat_* keys); the default for anything else."""
        if policy is None:
            return DEFAULT_LAYOUT
        return cls(
            getattr(policy, "chat_context", cls.context),
            getattr(policy, "chat_context_template", cls.context_template),
            getattr(policy, "chat_passage_template", cls.passage_template),
        )

    def passages(self, context: Sequence[str]) -> str:
        """The context block: every non-empty passage through the passage template, joined, put in the
        context template. Literal braces in passages are safe (only the templates are formatted)."""
        items = [
            self.passage_template.replace("{n}", str(i)).replace("{text}", p)
            for i, p in enumerate((p for p in context if p and p.strip()), 1)
        ]
        if not items:
            return ""
        return self.context_template.replace("{passages}", "\n\n".join(items))


DEFAULT_LAYOUT = ChatLayout()


def _turn(m: Mapping[str, Any]) -> dict:
    """A stored turn in the chat shape datasets write: no null keys, tool calls in OpenAI's form."""
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
    if m.get("name"):
        out["name"] = m["name"]
    if m.get("tool_calls"):
        out["tool_calls"] = [dict(c) for c in m["tool_calls"]]
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out


def prompt_messages(
    system: str,
    messages: Sequence[Mapping[str, Any]],
    context: Sequence[str] | None,
    layout: ChatLayout = DEFAULT_LAYOUT,
) -> list[dict]:
    """The prompt side of a training record (see the module's doc). Turns are in the schema's
    Message shape (every key; None for absent ones), so they encode as Avro as they are."""
    block = layout.passages(context or ())
    instructions = system_text(system, messages)
    turns = [m for m in messages if m.get("role") not in INSTRUCTION_ROLES]
    placement = layout.context
    if placement in ("user", "turn") and (not turns or turns[-1].get("role") != "user"):
        placement = "system"  # the turn answered is a tool result: nothing may come between call and result
    out: list[dict] = []
    head = instructions
    if block and placement == "system":
        head = f"{instructions}\n\n{block}" if instructions else block
    if head:
        out.append(message("system", head))
    for i, m in enumerate(turns):
        last = i == len(turns) - 1
        if last and block and placement == "turn":
            out.append(message("user", block))
        if last and block and placement == "user":
            m = {**m, "content": f"{block}\n\n{m.get('content') or ''}"}
        out.append(
            message(
                m["role"],
                m.get("content") or "",
                name=m.get("name"),
                tool_calls=m.get("tool_calls") or (),
                tool_call_id=m.get("tool_call_id"),
            )
        )
    return out


def plain(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Stored turns as JSONL chat turns (null keys left out)."""
    return [_turn(m) for m in messages]


def answer_turn(text: str, tool_calls: Sequence[Mapping[str, Any]] = ()) -> dict:
    out: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        out["tool_calls"] = [dict(c) for c in tool_calls]
    return out


def tools_key(record: Mapping[str, Any]) -> dict:
    """{"tools": [...]} in OpenAI's function-tool shape (what chat templates take), or {} without tools."""
    tools = record.get("tools") or []
    if not tools:
        return {}
    out = []
    for t in tools:
        try:
            parameters = json.loads(t["parameters"]) if t.get("parameters") else {}
        except ValueError:
            parameters = {}
        out.append(
            {
                "type": "function",
                "function": {"name": t["name"], "description": t.get("description") or "", "parameters": parameters},
            }
        )
    return {"tools": out}
