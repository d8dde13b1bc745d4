"""The trainer's own records: a training example and a golden item, as plain typed values."""

from __future__ import annotations

from dataclasses import dataclass, field

SCORERS = (
    "exact",
    "contains",
    "sql",
    "f1",
    "numeric",
    "json",
    "regex",
    "judge",
)  # how a golden item's answer is judged (trainer/evaluate.py)


@dataclass(frozen=True, slots=True)
class Example:
    """One supervised example: the model should answer `prompt` with `target`."""

    prompt: str
    target: str
    task_type: str = ""
    # the prompt side in chat form (sft_record v2): what the model saw, for its chat template (not hashed: dicts)
    messages: tuple = field(default=(), hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class GoldenItem:
    """One held-out test question. `expected` is the reference answer; `scorer` says how an answer
    is compared with it (exact match after normalising case and whitespace, by default)."""

    id: str
    prompt: str
    expected: str
    task_type: str = ""
    scorer: str = "exact"
    # a JSON object: generation (max_new_tokens) and scorer settings (tolerance, rel_tolerance, flags)
    options: str = ""


@dataclass(frozen=True, slots=True)
class Pair:
    """One preference: for `prompt`, `chosen` is the better answer and `rejected` the one users did not keep."""

    prompt: str
    chosen: str
    rejected: str
    task_type: str = ""
    messages: tuple = field(
        default=(), hash=False, compare=False
    )  # the prompt side in chat form (preference_record v2)


def chat_turns(messages) -> tuple:
    """A record's stored turns (schemas/conversation.py) as chat-template turns: no empty keys, tool
    calls in the shape Hugging Face templates read ({"type": "function", "function": {name, arguments}})."""
    out = []
    for m in messages or ():
        turn = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("name"):
            turn["name"] = m["name"]
        if m.get("tool_calls"):
            turn["tool_calls"] = [
                {
                    "id": c.get("id") or "",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c.get("arguments") or ""},
                }
                for c in m["tool_calls"]
            ]
        if m.get("tool_call_id"):
            turn["tool_call_id"] = m["tool_call_id"]
        out.append(turn)
    return tuple(out)
