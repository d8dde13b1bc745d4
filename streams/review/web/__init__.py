"""The review page: people judge sampled candidates in a browser, with the keyboard.

One aiohttp application, no framework and no template engine: every value goes through `esc()` and
every response carries a strict Content-Security-Policy whose only script is the page's own, allowed
by a nonce drawn for that response. Routes (`handlers`): `GET /` leases the reviewer's next item,
`POST /verdict` records a verdict in the queue's outbox, `POST /skip`, `POST /login` and `/logout`,
`GET /healthz` and `/metrics`. Sign-in is a session cookie or `Authorization: Bearer <token>`
(`auth`). The relay (`relaying`) moves verdicts to Kafka; `server.run_review` is `flywheel review`.

Modules: `state` (shared keys and names), `forms`, `pages` (HTML; CSS and JS in `static/`),
`responses`, `auth`, `handlers`, `relaying`, `app`, `server`.
"""

from streams.review.web.app import create_review_app
from streams.review.web.forms import FormError, VerdictForm, build_verdict, parse_verdict_form
from streams.review.web.pages import (
    esc,
    page,
    render_empty,
    render_figures,
    render_header,
    render_item,
    render_login,
    render_problem,
)
from streams.review.web.relaying import flush_relay
from streams.review.web.server import run_review, serve
from streams.review.web.state import COOKIE, LOGIN_COOKIE, Identity, State

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "FormError",
    "Identity",
    "State",
    "VerdictForm",
    "build_verdict",
    "create_review_app",
    "esc",
    "flush_relay",
    "page",
    "parse_verdict_form",
    "render_empty",
    "render_figures",
    "render_header",
    "render_item",
    "render_login",
    "render_problem",
    "run_review",
    "serve",
]
