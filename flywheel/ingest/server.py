"""HTTP ingest: `flywheel ingest` serves a small JSON API for apps without a Kafka client.

    POST /v1/interactions   one interaction, the JSON of the wire format (docs/wire-format.md)
    POST /v1/actions        one action
    POST /v1/batch          {"interactions": [...], "actions": [...]}: all accepted, or none
    POST /v1/openai         one line of `flywheel import openai-jsonl`
    POST /v1/traces         OTLP/HTTP trace export, protobuf or JSON (flywheel/ingest/otlp.py)
    GET  /healthz           counters (no authentication)

Every POST needs a bearer token of FLYWHEEL_INGEST_TOKENS or --token-file (401 otherwise). An event
is validated as the join would read it (400 with the dead-letter reason), a 200 comes once the
broker confirmed every event, past --max-pending a request is refused whole (429, Retry-After),
and SIGTERM drains. Design: docs/concepts/sdk.md#http-ingest
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from aiohttp import web

from flywheel.sdk import FlywheelProducer
from schemas.codec import Codec, DecodeError, EncodeError, parse_json
from schemas.records import FutureEvent, Interaction, InvalidEvent, UserAction, check_event_time_ahead

log = logging.getLogger("flywheel.ingest")

KINDS = {"interaction": Interaction, "action": UserAction}


class Refused(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra

    def body(self) -> dict:
        return {"error": self.error, "detail": self.detail, **self.extra}


@dataclass
class Counters:
    requests: int = 0
    accepted_events: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    delivery_failed: int = 0

    def refuse(self, error: str) -> None:
        self.refused[error] = self.refused.get(error, 0) + 1


def validate(
    codec: Codec, producer: FlywheelProducer, kind: str, obj: Any, *, now_ms: int, max_ahead_ms: int
) -> tuple[Interaction | UserAction, bytes]:
    """One event's JSON value -> (record, the bytes to produce); raises Refused with the join's reason."""
    try:
        record = codec.decode_json_value(kind, obj)  # the schema checked here: encoding needs no second check
        event = KINDS[kind].from_dict(record).check()
        check_event_time_ahead(kind, event.event_time, now_ms, max_ahead_ms)
        value = codec.encode(kind, event.to_dict())
    except DecodeError as exc:
        raise Refused(400, exc.reason, exc.detail, kind=kind) from None
    except FutureEvent as exc:
        raise Refused(400, FutureEvent.reason, str(exc), kind=kind) from None
    except (InvalidEvent, EncodeError, TypeError) as exc:
        raise Refused(
            400, "invalid_event", str(exc) if isinstance(exc, InvalidEvent) else type(exc).__name__, kind=kind
        ) from None
    limit = producer.settings.max_event_bytes
    if len(value) > limit:  # the join's own bound (FLYWHEEL_MAX_EVENT_BYTES)
        raise Refused(400, "oversized", f"{len(value)} bytes is over the limit of {limit}", kind=kind)
    return event, value


class IngestServer:
    def __init__(
        self,
        producer: FlywheelProducer,
        tokens: Sequence[str],
        *,
        codec: Codec | None = None,
        max_pending: int = 10_000,
        max_batch: int = 1000,
        delivery_timeout_s: float = 30.0,
        retry_after_s: int = 1,
        max_event_ahead_ms: int | None = None,
    ):
        self.producer = producer
        self.codec = codec or producer.codec
        self.tokens = [t.encode() for t in tokens if t]
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.delivery_timeout_s = delivery_timeout_s
        self.retry_after_s = retry_after_s
        self.max_ahead_ms = producer.settings.max_event_ahead_ms if max_event_ahead_ms is None else max_event_ahead_ms
        self.batch_limits = replace(
            self.codec.limits,
            max_depth=self.codec.limits.max_depth + 2,
            max_items=max(self.codec.limits.max_items, max_batch),
        )
        self.counters = Counters()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- the app -----------------------------------------------------------------------------------
    def app(self, max_body_bytes: int = 16 * 1024 * 1024) -> web.Application:
        self.max_body_bytes = max_body_bytes
        app = web.Application(client_max_size=max_body_bytes)
        app.add_routes(
            [
                web.post("/v1/interactions", self._one("interaction")),
                web.post("/v1/actions", self._one("action")),
                web.post("/v1/batch", self._batch),
                web.post("/v1/openai", self._openai),
                web.post("/v1/traces", self._traces),
                web.get("/healthz", self._health),
            ]
        )
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _start(self, app) -> None:
        self._poller = threading.Thread(target=self._poll, name="ingest-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    async def _cleanup(self, app) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        await asyncio.get_running_loop().run_in_executor(None, self.producer.close, 30.0)
        log.info("ingest stopped", extra={"event": "ingest_stopped", "accepted_events": self.counters.accepted_events})

    # -- handlers ----------------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> bool:
        if not self.tokens:
            return True  # --no-auth
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        ok = False
        for t in self.tokens:  # every token compared, in constant time each
            ok |= hmac.compare_digest(given, t)
        return ok

    async def _handle(self, request: web.Request, parse) -> web.Response:
        self.counters.requests += 1
        try:
            if not self._authorised(request):
                raise Refused(401, "unauthorized", "a valid bearer token is required")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise Refused(413, "too_large", f"the body is over {self.max_body_bytes} bytes") from None
            events = parse(body)
            return await self._send(events)
        except Refused as exc:
            self.counters.refuse(exc.error)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            if exc.status == 429:
                headers["Retry-After"] = str(self.retry_after_s)
            return web.json_response(exc.body(), status=exc.status, headers=headers)

    def _one(self, kind: str):
        def parse(body: bytes):
            now = int(time.time() * 1000)
            try:
                obj = parse_json(body, self.codec.limits)
            except DecodeError as exc:
                raise Refused(400, exc.reason, exc.detail, kind=kind) from None
            return [validate(self.codec, self.producer, kind, obj, now_ms=now, max_ahead_ms=self.max_ahead_ms)]

        async def handler(request: web.Request) -> web.Response:
            return await self._handle(request, parse)

        return handler

    async def _batch(self, request: web.Request) -> web.Response:
        def parse(body: bytes):
            now = int(time.time() * 1000)
            try:
                obj = parse_json(body, self.batch_limits)
            except DecodeError as exc:
                raise Refused(400, exc.reason, exc.detail) from None
            if not isinstance(obj, dict) or set(obj) - {"interactions", "actions"}:
                raise Refused(400, "invalid_batch", 'a batch is {"interactions": [...], "actions": [...]}')
            lists = [
                (kind, obj.get(key) or []) for kind, key in (("interaction", "interactions"), ("action", "actions"))
            ]
            if any(not isinstance(items, list) for _, items in lists):
                raise Refused(400, "invalid_batch", "interactions and actions must be arrays")
            total = sum(len(items) for _, items in lists)
            if total > self.max_batch:
                raise Refused(400, "too_many_items", f"a batch of {total} events (limit {self.max_batch})")
            out = []
            for kind, items in lists:
                for i, item in enumerate(items):
                    try:
                        out.append(
                            validate(self.codec, self.producer, kind, item, now_ms=now, max_ahead_ms=self.max_ahead_ms)
                        )
                    except Refused as exc:
                        exc.extra["index"] = i
                        raise
            return out

        return await self._handle(request, parse)

    async def _openai(self, request: web.Request) -> web.Response:
        from flywheel.importers import SkipLine, _interaction, parse_line

        def parse(body: bytes):
            now = int(time.time() * 1000)
            try:
                interaction, actions = parse_line(body, now_ms=now)
                events: list[Any] = [_interaction(interaction)]
                events += [UserAction(**a) for a in actions]
                out = []
                for e in events:
                    e.check()
                    check_event_time_ahead(e.schema_name, e.event_time, now, self.max_ahead_ms)
                    out.append((e, self.producer.encode(e)))
                return out
            except SkipLine as exc:
                raise Refused(400, "invalid_event", str(exc)) from None
            except FutureEvent as exc:
                raise Refused(400, FutureEvent.reason, str(exc)) from None
            except (InvalidEvent, TypeError, ValueError) as exc:
                raise Refused(
                    400, "invalid_event", str(exc) if isinstance(exc, InvalidEvent) else type(exc).__name__
                ) from None

        return await self._handle(request, parse)

    async def _traces(self, request: web.Request) -> web.Response:
        """OTLP/HTTP (flywheel/ingest/otlp.py): GenAI spans as interactions, feedback as actions; spans
        that cannot be mapped are counted in partial_success, the rest is produced."""
        from flywheel.importers import _interaction

        try:
            from flywheel.ingest import otlp
        except ImportError:  # opentelemetry-proto is not installed
            return web.json_response(
                {"error": "not_implemented", "detail": "install opentelemetry-proto for /v1/traces"}, status=501
            )
        ctype = request.headers.get("Content-Type", "application/x-protobuf").lower()
        self.counters.requests += 1
        try:
            if not self._authorised(request):
                raise Refused(401, "unauthorized", "a valid bearer token is required")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise Refused(413, "too_large", f"the body is over {self.max_body_bytes} bytes") from None
            try:
                mapped = otlp.map_request(otlp.parse_request(body, ctype))
            except Exception as exc:  # protobuf's DecodeError, json's, ParseError: the body is not OTLP
                raise Refused(400, "invalid_otlp", f"not an OTLP trace export ({type(exc).__name__})") from None
            now = int(time.time() * 1000)
            events, rejected = [], list(mapped.rejected)
            for make, items in ((_interaction, mapped.interactions), (lambda a: UserAction(**a), mapped.actions)):
                for kw in items:
                    try:
                        e = make(kw).check()
                        check_event_time_ahead(e.schema_name, e.event_time, now, self.max_ahead_ms)
                        events.append((e, self.producer.encode(e)))
                    except (InvalidEvent, TypeError, ValueError) as exc:
                        rejected.append(str(exc)[:200] if isinstance(exc, InvalidEvent) else type(exc).__name__)
            resp = await self._send(events)
            if resp.status != 200:
                return resp
            self.counters.refused["otlp_span_rejected"] = self.counters.refused.get("otlp_span_rejected", 0) + len(
                rejected
            )
            data, out_type = otlp.response_body(len(rejected), "; ".join(rejected[:3]), ctype)
            return web.Response(body=data, content_type=out_type)
        except Refused as exc:
            self.counters.refuse(exc.error)
            headers = {"Retry-After": str(self.retry_after_s)} if exc.status == 429 else {}
            return web.json_response(exc.body(), status=exc.status, headers=headers)

    async def _health(self, request: web.Request) -> web.Response:
        c = self.counters
        return web.json_response(
            {
                "ok": True,
                "pending": self.producer.pending,
                "max_pending": self.max_pending,
                "requests": c.requests,
                "accepted_events": c.accepted_events,
                "refused": c.refused,
                "throttled": c.throttled,
                "delivery_failed": c.delivery_failed,
            }
        )

    # -- producing ---------------------------------------------------------------------------------
    async def _send(self, events: list[tuple[Any, bytes]]) -> web.Response:
        if not events:
            return web.json_response({"accepted": 0, "request_ids": []})
        if self.producer.pending + len(events) > self.max_pending:
            self.counters.throttled += 1
            raise Refused(
                429,
                "busy",
                f"{self.producer.pending} events wait for the broker (limit {self.max_pending}); "
                f"retry after {self.retry_after_s} s",
            )
        loop = asyncio.get_running_loop()
        futures = []
        for event, value in events:  # nothing between these calls yields: the batch is queued whole
            fut = loop.create_future()
            try:
                self.producer.send_encoded(
                    event, value, on_delivery=lambda err, fut=fut: loop.call_soon_threadsafe(_settle, fut, err)
                )
            except BufferError:  # librdkafka's own queue is full (its limits are set far above max_pending)
                if not futures:
                    self.counters.throttled += 1
                    raise Refused(
                        429,
                        "busy",
                        "the producer queue is full",
                    ) from None
                await asyncio.wait(futures, timeout=self.delivery_timeout_s)
                raise Refused(
                    503,
                    "partially_queued",
                    f"{len(futures)} of {len(events)} events were queued before the "
                    "producer queue filled; they are in Kafka unless reported failed",
                    queued=len(futures),
                ) from None
            futures.append(fut)
        try:
            errors = await asyncio.wait_for(asyncio.gather(*futures), self.delivery_timeout_s)
        except asyncio.TimeoutError:
            errors = ["timeout"]
        failed = [e for e in errors if e is not None]
        if failed:
            self.counters.delivery_failed += len(failed)
            return web.json_response(
                {"error": "delivery_failed", "detail": str(failed[0])[:200], "failed": len(failed)},
                status=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.counters.accepted_events += len(events)
        return web.json_response({"accepted": len(events), "request_ids": [e.request_id for e, _ in events]})


def _settle(fut: asyncio.Future, err: Any) -> None:
    if not fut.done():
        fut.set_result(None if err is None else (err.str() if hasattr(err, "str") else str(err)))


def tokens_from(env_value: str, token_file: str | None) -> list[str]:
    tokens = [t.strip() for t in (env_value or "").split(",") if t.strip()]
    if token_file:
        with open(token_file, encoding="utf-8") as f:
            tokens += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return tokens


def serve(
    settings, *, host: str, port: int, tokens: Sequence[str], max_pending: int, max_batch: int, retry_after_s: int = 1
) -> None:
    """Run until SIGTERM/SIGINT (blocks). Prints one JSON line when listening."""
    producer = FlywheelProducer(
        settings,
        max_block_s=0.0,
        config={
            "queue.buffering.max.messages": max(100_000, 2 * (max_pending + max_batch)),
            "queue.buffering.max.kbytes": 1_048_576,
            "client.id": "flywheel-ingest",
        },
    )
    server = IngestServer(producer, tokens, max_pending=max_pending, max_batch=max_batch, retry_after_s=retry_after_s)
    app = server.app()

    def announce(_msg: str) -> None:
        print(
            json.dumps({"ingest": f"http://{host}:{port}", "auth": bool(tokens), "max_pending": max_pending}),
            flush=True,
        )

    web.run_app(app, host=host, port=port, print=announce, shutdown_timeout=60.0, access_log=None)
