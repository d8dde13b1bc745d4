"""Responses every part of the review app gives: HTML pages, problems, the sign-in page."""

from __future__ import annotations

import secrets

from aiohttp import web

from streams.review.web.pages import render_login, render_problem
from streams.review.web.state import K_IDENTITY, K_NONCE, LOGIN_COOKIE, Identity

__all__ = ["wants_html", "html", "unauthorized", "problem", "login_page"]


def wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or (request.method == "GET" and not accept)


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def unauthorized(request: web.Request) -> web.Response:
    if wants_html(request):
        response = login_page(request, status=401)
    else:
        response = web.Response(
            status=401, text="sign in required: a session cookie or Authorization: Bearer <token>\n"
        )
    response.headers["WWW-Authenticate"] = 'Bearer realm="flywheel-review"'
    return response


def problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    ident: Identity | None = request.get(K_IDENTITY)
    if wants_html(request) or request.content_type == "application/x-www-form-urlencoded":
        return html(
            render_problem(
                title, message, request[K_NONCE], ident.reviewer if ident else "", ident.csrf if ident else ""
            ),
            status,
        )
    return web.Response(status=status, text=message + "\n")


def login_page(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = len(token) < 20 or len(token) > 100
    if fresh:
        token = secrets.token_urlsafe(24)
    response = html(render_login(request[K_NONCE], token, error), status)
    if fresh:
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
    return response
