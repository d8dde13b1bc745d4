"""Who is asking, and may they: sessions and bearer tokens, CSRF and origin checks, the security
headers, in one middleware that every route goes through."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from streams.review.accounts import Reviewers, Session
from streams.review.web.responses import problem, unauthorized
from streams.review.web.state import COOKIE, K_IDENTITY, K_NONCE, K_REVIEWERS, K_STATE, PUBLIC_ROUTES, Identity, State

__all__ = ["guard", "identify", "same_origin", "checked_form", "route"]

log = logging.getLogger("flywheel.review")


def route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def security_headers(response: web.StreamResponse, nonce: str) -> None:
    h = response.headers
    h["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["Cache-Control"] = "no-store"
    h.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def guard(request: web.Request, handler):
    """Security headers, sign-in, and the request counter, for every route."""
    state: State = request.app[K_STATE]
    nonce = secrets.token_urlsafe(18)
    request[K_NONCE] = nonce
    name = route(request)
    try:
        if name not in PUBLIC_ROUTES and name != "other":
            ident = await identify(request)
            if ident is None:
                response = unauthorized(request)
            else:
                request[K_IDENTITY] = ident
                response = await handler(request)
        else:
            response = await handler(request)
    except web.HTTPException as exc:  # the router's 404 and 405
        response = web.Response(status=exc.status, text=exc.reason + "\n")
        for k in ("Allow",):
            if k in exc.headers:
                response.headers[k] = exc.headers[k]
    except Exception:
        log.exception("request failed", extra={"event": "request_failed", "route": name, "method": request.method})
        response = web.Response(status=500, text="internal error\n")
    security_headers(response, nonce)
    state.requests.labels(name, str(response.status)).inc()
    return response


async def identify(request: web.Request) -> Identity | None:
    reviewers: Reviewers = request.app[K_REVIEWERS]
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        name = await asyncio.to_thread(reviewers.authenticate, token.strip())
        return Identity(name, "") if name else None
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    session: Session | None = await asyncio.to_thread(reviewers.session, sid)
    return Identity(session.reviewer, session.csrf, sid) if session else None


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site. `Origin: null` (sent on
    POST by pages with Referrer-Policy: no-referrer, ours included) says nothing either way; the
    SameSite=Strict cookies and the CSRF tokens carry the check then."""
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value and value != "null":
            return urlsplit(value).netloc.lower() == request.host.lower()
    return True


async def checked_form(request: web.Request) -> tuple[Mapping[str, str] | None, web.Response | None]:
    """The posted form, once the session's CSRF token (and the origin) check out."""
    ident: Identity = request[K_IDENTITY]
    form = await request.post()
    if ident.csrf:  # a cookie session: ambient credentials, so the form must prove it came from our page
        if not same_origin(request):
            return None, problem(request, 403, "Refused", "A form from another site was refused.")
        sent = str(form.get("csrf", ""))
        if not sent or not hmac.compare_digest(sent.encode(), ident.csrf.encode()):
            log.warning(
                "form refused: csrf",
                extra={"event": "csrf_refused", "reviewer": ident.reviewer, "route": route(request)},
            )
            return None, problem(
                request, 403, "Refused", "The form's CSRF token is missing or wrong; reload the page."
            )
    return {k: str(v) for k, v in form.items()}, None
