"""The routes: each parses its input, finds who asks (the middleware did), and hands the work to the
queue or the reviewer accounts, off the event loop."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from schemas.records import InvalidEvent
from streams.review.accounts import Reviewers
from streams.review.queue import Lease, LeaseLost, QueueStats, ReviewQueue
from streams.review.web.auth import checked_form, same_origin
from streams.review.web.forms import FormError, build_verdict, parse_verdict_form
from streams.review.web.pages import render_empty, render_item
from streams.review.web.responses import html, login_page, problem
from streams.review.web.state import COOKIE, K_IDENTITY, K_NONCE, K_QUEUE, K_REVIEWERS, K_STATE, LOGIN_COOKIE, Identity

__all__ = ["login_form", "login", "logout", "index", "verdict", "skip", "healthz", "metrics"]

log = logging.getLogger("flywheel.review")


async def login_form(request: web.Request) -> web.Response:
    return login_page(request)


async def login(request: web.Request) -> web.Response:
    reviewers: Reviewers = request.app[K_REVIEWERS]
    if not same_origin(request):
        log.warning(
            "sign-in refused: cross-site",
            extra={"event": "login_refused", "cause": "origin", "remote": request.remote},
        )
        return problem(request, 403, "Refused", "A sign-in from another site was refused.")
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not hmac.compare_digest(str(form.get("login_csrf", "")).encode(), expected.encode()):
        log.warning(
            "sign-in refused: no form token",
            extra={"event": "login_refused", "cause": "csrf", "remote": request.remote},
        )
        return login_page(request, 403, "The sign-in form expired; sign in again.")
    name = await asyncio.to_thread(reviewers.authenticate, str(form.get("token", "")).strip())
    if not name:
        log.warning(
            "sign-in refused: unknown token",
            extra={"event": "login_refused", "cause": "token", "remote": request.remote},
        )
        return login_page(request, 401, "That token was not accepted.")
    sid, _session = await asyncio.to_thread(reviewers.open_session, name)
    log.info("signed in", extra={"event": "login", "reviewer": name})
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(
        COOKIE, sid, httponly=True, samesite="Strict", path="/", max_age=reviewers.session_s, secure=request.secure
    )
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: web.Request) -> web.Response:
    form, refused = await checked_form(request)
    if refused:
        return refused
    ident: Identity = request[K_IDENTITY]
    if ident.sid:
        await asyncio.to_thread(request.app[K_REVIEWERS].close_session, ident.sid)
    log.info("signed out", extra={"event": "logout", "reviewer": ident.reviewer})
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(COOKIE, path="/")
    return response


def page_data(queue: ReviewQueue, reviewer: str) -> tuple[Lease | None, QueueStats, int]:
    lease = queue.lease(reviewer)
    return lease, queue.stats(), queue.reviewer_count(reviewer)


async def index(request: web.Request) -> web.Response:
    ident: Identity = request[K_IDENTITY]
    lease, stats, own = await asyncio.to_thread(page_data, request.app[K_QUEUE], ident.reviewer)
    if lease is None:
        return html(render_empty(stats, own, ident.reviewer, ident.csrf, request[K_NONCE]))
    return html(render_item(lease, stats, own, ident.reviewer, ident.csrf, request[K_NONCE]))


def lease_lost(request: web.Request) -> web.Response:
    return problem(request, 409, "Lease ended", "This item's lease ended; it went back to the queue.")


async def current_lease(request: web.Request, item_id: str, lease_id: str) -> Lease | None:
    """The reviewer's lease, if it is still the one the form was made for."""
    queue: ReviewQueue = request.app[K_QUEUE]
    lease = await asyncio.to_thread(queue.lease, request[K_IDENTITY].reviewer)
    if lease is None or lease.lease_id != lease_id or lease.item.item_id != item_id:
        return None
    return lease


async def verdict(request: web.Request) -> web.Response:
    form, refused = await checked_form(request)
    if refused:
        return refused
    try:
        parsed = parse_verdict_form(form)
    except FormError as exc:
        return problem(request, 400, "Not recorded", str(exc))
    ident: Identity = request[K_IDENTITY]
    queue: ReviewQueue = request.app[K_QUEUE]
    lease = await current_lease(request, parsed.item_id, parsed.lease_id)
    if lease is None:
        log.info(
            "verdict refused: lease lost",
            extra={"event": "lease_lost", "reviewer": ident.reviewer, "item_id": parsed.item_id},
        )
        return lease_lost(request)
    try:
        verdict = build_verdict(lease, ident.reviewer, parsed, int(time.time() * 1000))
        rounds = await asyncio.to_thread(queue.submit, lease, ident.reviewer, verdict)
    except LeaseLost:
        log.info(
            "verdict refused: lease lost",
            extra={"event": "lease_lost", "reviewer": ident.reviewer, "item_id": parsed.item_id},
        )
        return lease_lost(request)
    except (InvalidEvent, TypeError, ValueError) as exc:
        log.warning(
            "verdict refused: invalid",
            extra={
                "event": "verdict_invalid",
                "reviewer": ident.reviewer,
                "item_id": parsed.item_id,
                "error": str(exc),
            },
        )
        return problem(request, 400, "Not recorded", f"the verdict is not valid: {exc}")
    log.info(
        "verdict recorded",
        extra={
            "event": "verdict",
            "reviewer": ident.reviewer,
            "item_id": parsed.item_id,
            "passed": verdict.passed,
            "round": rounds,
            "seconds_spent": verdict.seconds_spent,
        },
    )
    request.app[K_STATE].wake.set()  # the relay sends it now rather than within the second
    return web.Response(status=303, headers={"Location": "/"})


async def skip(request: web.Request) -> web.Response:
    form, refused = await checked_form(request)
    if refused:
        return refused
    ident: Identity = request[K_IDENTITY]
    item_id, lease_id = form.get("item_id", ""), form.get("lease_id", "")
    lease = await current_lease(request, item_id, lease_id)
    if lease is None or not await asyncio.to_thread(request.app[K_QUEUE].release, lease, ident.reviewer):
        return lease_lost(request)
    log.info("item skipped", extra={"event": "skip", "reviewer": ident.reviewer, "item_id": item_id})
    return web.Response(status=303, headers={"Location": "/"})


async def healthz(request: web.Request) -> web.Response:
    try:
        ok = await asyncio.to_thread(request.app[K_QUEUE].redis.ping)
    except Exception as exc:
        log.warning("health check: redis unavailable", extra={"event": "health", "error": type(exc).__name__})
        ok = False
    return web.Response(status=200 if ok else 503, text="ok\n" if ok else "redis unavailable\n")


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, request.app[K_STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
