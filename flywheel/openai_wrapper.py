"""An OpenAI-compatible client that logs every call to the flywheel.

    from openai import OpenAI
    from flywheel.openai_wrapper import FlywheelOpenAI

    client = FlywheelOpenAI(OpenAI(base_url=..., api_key=...), producer, user_id="u-7")
    completion = client.chat.completions.create(model="m", messages=[...],
                                                flywheel_context=passages,   # optional: the RAG passages
                                                flywheel_session_id="s-1")   # optional, as the other flywheel_* keys
    producer.log_action(request_id=completion.flywheel_request_id, user_id="u-7", action="accepted")

`chat.completions.create` and `responses.create` are logged (not streaming calls), the rest passes
through; `flywheel_*` keyword arguments are taken off before the call. Logging never breaks the
app's call (failures count in `client.log_errors`). Design: docs/concepts/sdk.md#the-openai-wrapper
"""

from __future__ import annotations

import logging
import time
from typing import Any

from schemas.records import InvalidEvent

log = logging.getLogger("flywheel.openai")

_OWN_KEYS = ("user_id", "session_id", "request_id", "context", "task_type", "variant", "metadata")


class FlywheelOpenAI:
    def __init__(
        self,
        client: Any,
        producer: Any,
        *,
        user_id: str = "",
        session_id: str = "",
        task_type: str = "",
        variant: str = "",
    ):
        self._client = client
        self._producer = producer
        self._defaults = {"user_id": user_id, "session_id": session_id, "task_type": task_type, "variant": variant}
        self.last_request_id: str | None = None
        self.logged = 0
        self.log_errors = 0
        self.chat = _Namespace(client.chat, completions=_Logged(self, client.chat.completions))
        if hasattr(client, "responses"):
            self.responses = _Logged(self, client.responses)

    def __getattr__(self, name: str) -> Any:  # models, embeddings, files, ...: as the client has them
        return getattr(self._client, name)

    def _call(self, create: Any, kwargs: dict) -> Any:
        own = {k: kwargs.pop(f"flywheel_{k}") for k in _OWN_KEYS if f"flywheel_{k}" in kwargs}
        started = time.perf_counter()
        response = create(**kwargs)
        latency_ms = (time.perf_counter() - started) * 1000
        if kwargs.get("stream"):
            return response
        opts = {**self._defaults, **{k: v for k, v in own.items() if v is not None}}
        try:
            rid = self._producer.log_chat_completion(
                kwargs,
                response,
                user_id=opts["user_id"],
                session_id=opts["session_id"],
                request_id=opts.get("request_id"),
                retrieved_context=opts.get("context"),
                task_type=opts["task_type"],
                variant=opts["variant"],
                latency_ms=round(latency_ms, 3),
                metadata=opts.get("metadata"),
            )
        except (InvalidEvent, BufferError, RuntimeError) as exc:  # InvalidEvent, BackpressureError, FlywheelError
            self.log_errors += 1
            log.warning(
                "flywheel: call not logged (%s)",
                type(exc).__name__,
                extra={"event": "openai_log_failed", "error": str(exc)[:200]},
            )
            return response
        self.logged += 1
        self.last_request_id = rid
        try:
            setattr(response, "flywheel_request_id", rid)
        except (AttributeError, TypeError, ValueError):  # an object that takes no new attributes
            pass
        return response


class _Logged:
    """`completions` or `responses`: `create` logged, the rest of the resource as it is."""

    def __init__(self, owner: FlywheelOpenAI, resource: Any):
        self._owner = owner
        self._resource = resource

    def create(self, **kwargs: Any) -> Any:
        return self._owner._call(self._resource.create, kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)


class _Namespace:
    def __init__(self, inner: Any, **overrides: Any):
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
