"""Imports for teams that already log their LLM calls: `flywheel import openai-jsonl FILE`.

    from flywheel.importers import import_openai_jsonl, read_lines
    from flywheel.sdk import FlywheelProducer

    with FlywheelProducer() as fw:
        summary = import_openai_jsonl(read_lines("calls.jsonl.gz"), fw, default_user="support-app")
    summary.to_dict()   # {"lines": ..., "interactions": ..., "actions": ..., "skipped": ..., ...}

One JSON object a line: a fine-tuning style conversation, a logged request/response pair of either
OpenAI API, or a Batch API output line, with optional ids, time, context and feedback (which becomes
actions). A line without an id gets a hash of the line, so a file imported twice sends the same
events. A line that cannot be read is skipped and reported by number and reason, never its text.
Every field: docs/concepts/sdk.md#import-line-format
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from flywheel import openai_compat as oc
from schemas.records import InvalidEvent

THUMBS_UP = {"up", "thumbs_up", "thumbsup", "like", "liked", "positive", "good", "+1", "👍"}
THUMBS_DOWN = {"down", "thumbs_down", "thumbsdown", "dislike", "disliked", "negative", "bad", "-1", "👎"}
ACTION_NAMES = {"accepted", "copied", "corrected", "regenerated", "abandoned", "thumbs_up", "thumbs_down", "rated"}
MAX_LINE_BYTES = 4 * 1024 * 1024


class SkipLine(ValueError):
    """A line that is not an importable record: the reason is reported, the text is not."""


@dataclass
class ImportSummary:
    lines: int = 0
    interactions: int = 0
    actions: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)

    def skip(self, lineno: int, reason: str) -> None:
        self.skipped += 1
        key = reason.split(":")[0][:60]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        if len(self.first_errors) < 20:
            self.first_errors.append(f"line {lineno}: {reason}")

    def to_dict(self) -> dict:
        return {
            "lines": self.lines,
            "interactions": self.interactions,
            "actions": self.actions,
            "skipped": self.skipped,
            "skip_reasons": self.reasons,
            "first_errors": self.first_errors,
        }


def parse_time_ms(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SkipLine("timestamp: not a time")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SkipLine("timestamp: not a time")
        return int(value * 1000) if value < 10**11 else int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time_ms(float(text))
        except ValueError:
            pass
        try:
            t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise SkipLine("timestamp: neither epoch seconds/milliseconds nor ISO 8601") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return int(t.timestamp() * 1000)
    raise SkipLine("timestamp: not a time")


def _text_list(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise SkipLine(f"{where}: must be a list of passages")
    out = []
    for p in value:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, Mapping) and isinstance(p.get("text", p.get("content", p.get("page_content"))), str):
            out.append(p.get("text", p.get("content", p.get("page_content"))))
        else:
            raise SkipLine(f"{where}: a passage must be a text or an object with text")
    return out


def _ident(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise SkipLine("an id must be a string")


def feedback_actions(obj: Mapping[str, Any]) -> list[dict]:
    """The actions a line's feedback fields say, in the SDK's log_action keywords (no ids, no time)."""
    out: list[dict] = []

    def add(action: str, **kw):
        out.append({"action": action, **{k: v for k, v in kw.items() if v is not None}})

    def one(fb: Any) -> None:
        if fb is None or fb == "":
            return
        if isinstance(fb, bool):
            return add("thumbs_up" if fb else "thumbs_down")
        if isinstance(fb, (int, float)):
            if 1 <= fb <= 5:
                return add("rated", rating=float(fb))
            if fb in (-1, 0):
                return add("thumbs_down")
            raise SkipLine("feedback: a number must be a rating from 1 to 5")
        if isinstance(fb, str):
            name = (
                fb.strip().lower().replace(" ", "_").replace("-", "_")
                if fb.strip() not in ("+1", "-1")
                else fb.strip()
            )
            if name in THUMBS_UP:
                return add("thumbs_up")
            if name in THUMBS_DOWN:
                return add("thumbs_down")
            if name in ACTION_NAMES - {"corrected", "rated"}:
                return add(name)
            raise SkipLine("feedback: unknown feedback value")
        if isinstance(fb, Mapping):
            correction = fb.get("correction") or fb.get("corrected") or fb.get("ideal") or fb.get("edited_response")
            rating = fb.get("rating", fb.get("score"))
            action = fb.get("action") or fb.get("type") or fb.get("value")
            if correction is not None:
                if not isinstance(correction, str):
                    raise SkipLine("feedback: a correction must be a text")
                add("corrected", correction=correction)
            if rating is not None and not isinstance(rating, bool):
                if not isinstance(rating, (int, float)):
                    raise SkipLine("feedback: a rating must be a number")
                if 1 <= rating <= 5:
                    add("rated", rating=float(rating))
                elif 0 <= rating <= 1:  # a 0..1 score: thumbs by halves
                    add("thumbs_up" if rating >= 0.5 else "thumbs_down")
                else:
                    raise SkipLine("feedback: a rating must be 1-5 (or a 0-1 score)")
            if action is not None and not (correction is not None and action == "corrected"):
                one(action)
            if "thumbs" in fb:
                one(fb["thumbs"])
            return
        if isinstance(fb, list):
            for x in fb:
                one(x)
            return
        raise SkipLine("feedback: not a feedback value")

    one(obj.get("feedback"))
    if obj.get("correction") is not None:
        one({"correction": obj["correction"]})
    if obj.get("rating") is not None:
        one({"rating": obj["rating"]})
    if obj.get("thumbs") is not None:
        one(obj["thumbs"])
    if obj.get("accepted") is True:
        add("accepted")
    return out


def _shape(obj: Mapping[str, Any]) -> dict:
    """The conversation part of a line (openai_compat's fields)."""
    response = obj.get("response")
    if isinstance(response, Mapping) and isinstance(response.get("body"), Mapping):  # Batch API output
        if response.get("status_code") not in (None, 200):
            raise SkipLine("response: a failed call (status_code is not 200)")
        response = response["body"]
    request = obj.get("request") or obj.get("body")
    if response is not None and isinstance(request, Mapping):
        try:
            if oc.is_responses_shape(request, response):
                return oc.from_responses(request, response)
            return oc.from_chat_completion(request, response)
        except oc.ShapeError as exc:
            raise SkipLine(f"request/response: {exc}") from None
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SkipLine("no messages, and no request with a response")
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "assistant":
        raise SkipLine("messages: the last turn must be the assistant's answer")
    try:
        turns = [oc.chat_message(m) for m in messages]
        return {
            "messages": turns[:-1],
            "system": "",
            "tools": oc.tool_defs(obj.get("tools") or obj.get("functions")),
            "response": turns[-1]["content"],
            "response_tool_calls": turns[-1]["tool_calls"],
            "model_version": "",
            "request_id": "",
            "event_time": None,
            "metadata": {},
        }
    except oc.ShapeError as exc:
        raise SkipLine(f"messages: {exc}") from None


def _content_hash(obj: Any) -> str:
    """The id of a line that names none: a hash of its JSON value (not its bytes), so the same record
    re-exported with other spacing, line ends or a byte-order mark gets the same id."""
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def parse_line(
    line: bytes | str, *, default_user: str = "imported", now_ms: int | None = None
) -> tuple[dict, list[dict]]:
    """One JSONL line as (log_interaction keywords, [log_action keywords]). Raises SkipLine."""
    raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    if len(raw) > MAX_LINE_BYTES:
        raise SkipLine(f"line of {len(raw)} bytes (limit {MAX_LINE_BYTES})")
    try:
        obj = json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except (ValueError, RecursionError):
        raise SkipLine("not JSON") from None
    if not isinstance(obj, Mapping):
        raise SkipLine("not a JSON object")
    shape = _shape(obj)
    meta_in = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    request = obj.get("request") or obj.get("body") or {}
    pick = lambda *names: next((src[n] for n in names for src in (obj, meta_in) if src.get(n) not in (None, "")), None)  # noqa: E731
    request_id = _ident(pick("request_id", "id", "custom_id")) or shape["request_id"] or "imp-" + _content_hash(obj)
    user_id = (
        _ident(pick("user_id", "user"))
        or (_ident(request.get("user")) if isinstance(request, Mapping) else None)
        or default_user
    )
    event_time = parse_time_ms(pick("timestamp", "created_at", "created", "time", "event_time"))
    event_time = event_time or shape["event_time"] or now_ms
    metadata = {
        k: str(v)
        for k, v in meta_in.items()
        if isinstance(v, (str, int, float))
        and not isinstance(v, bool)
        and k not in ("request_id", "user_id", "session_id")
    }
    metadata.update(shape["metadata"])
    metadata["source"] = "openai-jsonl"
    latency = pick("latency_ms")
    interaction = {
        "request_id": request_id,
        "session_id": _ident(pick("session_id", "conversation_id", "thread_id")) or "",
        "user_id": user_id,
        "model_version": str(pick("model_version", "model") or shape["model_version"] or "unknown"),
        "response": shape["response"],
        "event_time": event_time,
        "task_type": str(pick("task_type") or ""),
        "variant": str(pick("variant") or ""),
        "retrieved_context": _text_list(pick("retrieved_context", "context", "documents", "passages"), "context"),
        "latency_ms": float(latency) if isinstance(latency, (int, float)) and not isinstance(latency, bool) else None,
        "metadata": metadata,
        "system": shape["system"],
        "messages": shape["messages"],
        "tools": shape["tools"],
        "response_tool_calls": shape["response_tool_calls"],
    }
    action_time = parse_time_ms(pick("feedback_time")) if pick("feedback_time") is not None else None
    actions = []
    for a in feedback_actions(obj):
        at = action_time if action_time is not None else (event_time + 1 if event_time is not None else None)
        actions.append(
            {
                "request_id": request_id,
                "user_id": user_id,
                "session_id": interaction["session_id"],
                "event_time": at,
                **a,
            }
        )
    return interaction, actions


def import_openai_jsonl(
    lines: Iterable[bytes], producer: Any, *, default_user: str = "imported", now_ms: int | None = None
) -> ImportSummary:
    """Every line through the SDK (validated exactly as the SDK validates; a line the SDK refuses is
    skipped with its reason). The caller flushes the producer."""
    import time

    summary = ImportSummary()
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        summary.lines += 1
        try:
            interaction, actions = parse_line(line, default_user=default_user, now_ms=now)
            # validate the whole line before sending any of it
            from schemas.records import UserAction

            producer.encode(_interaction(interaction))
            for a in actions:
                producer.encode(UserAction(**{**a, "event_time": a["event_time"] or now}))
        except SkipLine as exc:
            summary.skip(lineno, str(exc))
            continue
        except InvalidEvent as exc:
            summary.skip(lineno, f"invalid: {exc}")
            continue
        except (TypeError, ValueError) as exc:
            summary.skip(lineno, f"invalid: {type(exc).__name__}")
            continue
        producer.log_interaction(**interaction)
        summary.interactions += 1
        for a in actions:
            producer.log_action(**{**a, "event_time": a["event_time"] or now})
            summary.actions += 1
    return summary


def _interaction(kw: Mapping[str, Any]):
    from flywheel.sdk import _records, _turns
    from schemas.conversation import last_user_text, tool_call, tool_def
    from schemas.records import Interaction

    i = Interaction(
        **{
            **kw,
            "messages": _turns(kw["messages"]),
            "tools": _records(kw["tools"], tool_def, "tools"),
            "response_tool_calls": _records(kw["response_tool_calls"], tool_call, "response_tool_calls"),
            "prompt": "",
        }
    )
    i.prompt = last_user_text(i.messages)
    return i


def read_lines(path: str) -> Iterator[bytes]:
    """A file's lines ("-" for stdin), gzip when the name ends in .gz."""
    import gzip
    import sys

    if path == "-":
        yield from sys.stdin.buffer
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        yield from f
