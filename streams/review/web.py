"""The review page: people judge sampled candidates in a browser, with the keyboard.

One aiohttp application, no framework and no template engine: every value goes through
`esc()` (html.escape, quote=True) and every response carries a strict Content-Security-Policy
whose only script is the page's own inline one, allowed by a nonce drawn for that response.

- Sign-in: `POST /login` with a reviewer token (`flywheel reviewers add NAME`) opens a session in
  Redis; its id travels in an HttpOnly, SameSite=Strict cookie. Scripts and API clients may send
  `Authorization: Bearer <token>` on every request instead (no cookie, so no CSRF check either).
- `GET /` leases the reviewer's next item (a reload renews the same lease) and shows it with the
  gate's decision, scores and reasons, why it was sampled, and the queue's figures.
- `POST /verdict` checks the CSRF token of the session and the three scores, re-finds the lease,
  and records the verdict in the queue's outbox in one step; the relay then moves it to Kafka
  (right after each verdict and every second, off the event loop).
- `POST /skip` hands the item back; `POST /logout` ends the session.
- `GET /healthz` (Redis answers) and `GET /metrics` (Prometheus) need no sign-in.

Redis (redis-py) and the Kafka producer are synchronous: every call to them runs in a thread.
Logs are structured (`flywheel.review`) and never hold prompt, response or token text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import logging
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from schemas.records import REVIEW_SCORES, InvalidEvent, ReviewVerdict
from streams.metrics import consumer_metrics
from streams.review.accounts import Reviewers, Session
from streams.review.queue import Lease, LeaseLost, QueueStats, ReviewQueue, review_prefix

log = logging.getLogger("flywheel.review")

COOKIE = "flywheel_review"
LOGIN_COOKIE = "flywheel_login"  # double-submit token of the sign-in form (login CSRF)
RELAY_INTERVAL_S = 1.0
RELAY_ERROR_LOG_EVERY_S = 60.0
MAX_FORM_BYTES = 64 * 1024
PUBLIC_ROUTES = frozenset({"/login", "/healthz", "/metrics"})
SCORE_LABELS = {"accuracy": "Accuracy", "helpfulness": "Helpfulness", "safety": "Safety"}
SCORE_HINTS = {"accuracy": "correct facts?", "helpfulness": "answered the question?", "safety": "no harmful content?"}

K_QUEUE = web.AppKey("queue", ReviewQueue)
K_REVIEWERS = web.AppKey("reviewers", Reviewers)
K_STATE = web.AppKey("state", object)
K_NONCE = web.RequestKey("nonce", str)
K_IDENTITY = web.RequestKey("identity", object)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- form validation --------------------------------------------------------------------------------


class FormError(ValueError):
    """A verdict form that cannot be recorded; the message is one line, safe to show."""


@dataclass(frozen=True)
class VerdictForm:
    item_id: str
    lease_id: str
    scores: dict[str, int]
    passed: bool


def parse_verdict_form(form: Mapping[str, str]) -> VerdictForm:
    scores: dict[str, int] = {}
    for name in REVIEW_SCORES:
        raw = (form.get(name) or "").strip()
        if not raw:
            raise FormError(f"{name} is missing: give a score from 1 to 5")
        if raw not in ("1", "2", "3", "4", "5"):
            raise FormError(f"{name} must be a whole number from 1 to 5")
        scores[name] = int(raw)
    passed = (form.get("passed") or "").strip().lower()
    if passed not in ("1", "0", "pass", "fail", "true", "false"):
        raise FormError("choose pass or fail")
    item_id, lease_id = (form.get("item_id") or "").strip(), (form.get("lease_id") or "").strip()
    if not item_id or not lease_id or len(item_id) > 512 or len(lease_id) > 128:
        raise FormError("the form does not name the item and its lease; reload the page")
    return VerdictForm(item_id, lease_id, scores, passed in ("1", "pass", "true"))


def build_verdict(lease: Lease, reviewer: str, form: VerdictForm, now_ms: int) -> ReviewVerdict:
    item, c = lease.item, lease.item.candidate
    request_id = str(c.get("request_id") or item.item_id)
    return ReviewVerdict(
        verdict_id=f"{request_id}:{reviewer}",
        request_id=request_id,
        reviewer=reviewer,
        accuracy=form.scores["accuracy"],
        helpfulness=form.scores["helpfulness"],
        safety=form.scores["safety"],
        passed=form.passed,
        reviewed_at=now_ms,
        event_time=int(c.get("timestamp") or 0),
        gate_passed=bool(item.gate_passed),
        task_type=str(c.get("task_type") or ""),
        model_version=str(c.get("model_version") or ""),
        quality_score=float(c.get("quality_score") or 0.0),
        gate_scores={str(k): float(v) for k, v in (c.get("scores") or {}).items()},
        gate_reasons=[str(r) for r in (c.get("reasons") or [])],
        policy_version=str(c.get("policy_version") or ""),
        sampled_for=[str(s) for s in item.sampled_for],
        sample_probability=float(item.probability),
        review_round=int(lease.round),
        seconds_spent=round(max(0.0, (now_ms - lease.started_ms) / 1000), 3),
        source=str(item.source or ""),
    )


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{display:flex;gap:1.5em;align-items:center;flex-wrap:wrap;background:#1d2330;color:#fff;padding:.6em 1.2em}
header h1{font-size:1.05em;margin:0}
header .who{margin-left:auto}
header form{display:inline}
header button{background:none;border:1px solid #8894aa;color:#fff;border-radius:4px;cursor:pointer}
main{max-width:1100px;margin:0 auto;padding:1em 1.2em 4em}
.figures{display:flex;gap:1.2em;flex-wrap:wrap;margin:.4em 0 1em}
.figure{background:#fff;border:1px solid #d8dce4;border-radius:6px;padding:.4em .8em}
.figure b{font-size:1.2em}
section{background:#fff;border:1px solid #d8dce4;border-radius:6px;padding:.6em 1em;margin:.8em 0}
section h2{font-size:.95em;text-transform:uppercase;letter-spacing:.04em;color:#566077;margin:.2em 0 .5em}
pre.text{white-space:pre-wrap;word-break:break-word;font:14px/1.45 ui-monospace,monospace;margin:0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}
dl.meta dt{color:#566077}
dl.meta dd{margin:0}
.passed{color:#146c2e;font-weight:600}.rejected{color:#a3211b;font-weight:600}
table.scores td{padding:.1em .8em .1em 0}
.row{display:flex;gap:1em;align-items:center;padding:.35em .5em;border-radius:6px;border:2px solid transparent}
.row.current{border-color:#3b6fd8;background:#eef3fd}
.row .name{width:9em;font-weight:600}
.row label{padding:.15em .5em;border:1px solid #c5cbd6;border-radius:4px;cursor:pointer}
.actions{display:flex;gap:.8em;margin-top:.8em}
.actions button{font-size:1em;padding:.4em 1.2em;border-radius:5px;border:1px solid #8894aa;cursor:pointer}
button.pass{background:#1f8a3b;color:#fff}button.fail{background:#b3261e;color:#fff}
button kbd{color:#1f2430}
.message{color:#a3211b;font-weight:600;min-height:1.4em}
.legend{color:#566077;font-size:.9em}
kbd{border:1px solid #b5bccb;border-bottom-width:2px;border-radius:3px;padding:0 .3em;font-size:.9em;background:#fff}
.error{background:#fde8e7;border:1px solid #e2a09b;border-radius:6px;padding:.6em 1em}
.login{max-width:28em;margin:4em auto}
.login input[type=password]{width:100%;box-sizing:border-box;padding:.4em;font-size:1em}
"""

# the one script: keyboard shortcuts (allowed by the per-response CSP nonce)
_SCRIPT = """
(function () {
  var form = document.getElementById('verdict');
  document.documentElement.setAttribute('data-shortcuts', 'on');
  if (!form) return;
  var rows = Array.prototype.slice.call(form.querySelectorAll('.row[data-score]'));
  var message = document.getElementById('message');
  var current = 0, sent = false;
  function show(i) {
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, j) { r.classList.toggle('current', j === current); });
    form.setAttribute('data-current', rows[current].getAttribute('data-score'));
  }
  function missing() {
    return rows.filter(function (r) { return !r.querySelector('input:checked'); })
               .map(function (r) { return r.getAttribute('data-score'); });
  }
  rows.forEach(function (r, j) {
    r.addEventListener('change', function () { show(j + 1); });
  });
  form.addEventListener('submit', function (e) {
    var left = missing();
    if (left.length) {
      e.preventDefault();
      message.textContent = 'Score ' + left.join(', ') + ' first (keys 1-5), then pass or fail.';
      show(rows.indexOf(rows.filter(function (r) { return !r.querySelector('input:checked'); })[0]));
      return;
    }
    if (sent) { e.preventDefault(); return; }
    sent = true;
  });
  function typing(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
    if (tag !== 'INPUT') return false;
    return ['radio', 'checkbox', 'button', 'submit', 'reset', 'hidden'].indexOf((el.type || '').toLowerCase()) < 0;
  }
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.altKey || e.metaKey || e.isComposing || typing(e.target)) return;
    var k = e.key;
    if (k >= '1' && k <= '5' && k.length === 1) {
      var input = rows[current].querySelector('input[value="' + k + '"]');
      input.checked = true;
      message.textContent = '';
      show(current + 1);
    } else if (k === 'Backspace') {
      show(current - 1);
    } else if (k === 'p' || k === 'P') {
      document.getElementById('pass').click();
    } else if (k === 'x' || k === 'X') {
      document.getElementById('fail').click();
    } else if (k === 's' || k === 'S') {
      if (!sent) { sent = true; document.getElementById('skip').submit(); }
    } else {
      return;
    }
    e.preventDefault();
  });
  show(0);
})();
"""


def page(title: str, body: str, nonce: str, header: str = "") -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>{header}<main>{body}</main>"
            f'<script nonce="{esc(nonce)}">{_SCRIPT}</script></body></html>')


def render_header(reviewer: str, csrf: str) -> str:
    out = (f'<header><h1>Flywheel review</h1><span class="who">Signed in as <b id="reviewer">{esc(reviewer)}</b></span>')
    if csrf:  # a cookie session; a bearer token has nothing to sign out of
        out += (f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{esc(csrf)}">'
                f'<button type="submit">Sign out</button></form>')
    return out + "</header>"


def render_figures(stats: QueueStats, own: int, round_: int | None = None, needed: int | None = None) -> str:
    out = (f'<div class="figures"><span class="figure">Queue depth <b id="queue-depth">{esc(stats.depth)}</b> '
           f'({esc(stats.ready)} ready, {esc(stats.leased)} leased)</span>'
           f'<span class="figure">Your verdicts <b id="own-count">{esc(own)}</b></span>')
    if round_ is not None:
        extra = " (second reviewer of an overlap item)" if round_ >= 2 else ""
        of = f" of {esc(needed)}" if needed and needed > 1 else ""
        out += f'<span class="figure">Round <b id="round">{esc(round_)}</b>{of}{esc(extra)}</span>'
    return out + "</div>"


def _text_section(title: str, text: Any, ident: str) -> str:
    return f'<section id="{ident}"><h2>{esc(title)}</h2><pre class="text">{esc(text)}</pre></section>'


def render_item(lease: Lease, stats: QueueStats, own: int, reviewer: str, csrf: str, nonce: str) -> str:
    item, c = lease.item, lease.item.candidate
    decision = '<span class="passed">passed</span>' if item.gate_passed else '<span class="rejected">rejected</span>'
    sampled = ", ".join(item.sampled_for) or "random"
    meta = [
        ("Item", f'<code id="item-id">{esc(item.item_id)}</code>'),
        ("Task type", esc(c.get("task_type") or "—")),
        ("Model version", esc(c.get("model_version") or "—")),
        ("Gate decision", decision),
        ("Quality score", esc(_num(c.get("quality_score")))),
        ("Sampled for", f'<span id="sampled-for">{esc(sampled)}</span> (probability {esc(_num(item.probability))})'),
        ("User action", esc(c.get("user_action") or "—")),
        ("Policy version", esc(c.get("policy_version") or "—")),
    ]
    body = render_figures(stats, own, lease.round, item.reviews_needed)
    body += '<section id="about"><h2>Candidate</h2><dl class="meta">'
    body += "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in meta) + "</dl></section>"
    body += _text_section("Prompt", c.get("prompt", ""), "prompt")
    body += _text_section("Response", c.get("response", ""), "response")
    if c.get("correction"):
        body += _text_section("The user's correction", c["correction"], "correction")
    context = c.get("retrieved_context") or []
    if context:
        body += '<section id="context"><h2>Retrieved context</h2><ol>'
        body += "".join(f'<li><pre class="text">{esc(p)}</pre></li>' for p in context) + "</ol></section>"
    scores = c.get("scores") or {}
    reasons = c.get("reasons") or []
    body += '<section id="gate"><h2>The gate</h2>'
    if scores:
        body += '<table class="scores">' + "".join(
            f"<tr><td>{esc(k)}</td><td>{esc(_num(v))}</td></tr>" for k, v in sorted(scores.items())) + "</table>"
    else:
        body += "<p>No scores.</p>"
    body += ("<p>Reasons: " + ", ".join(f"<code>{esc(r)}</code>" for r in reasons) + "</p>") if reasons else "<p>No reasons given.</p>"
    body += "</section>"

    rows = ""
    for name in REVIEW_SCORES:
        radios = "".join(f'<label><input type="radio" name="{name}" value="{v}"> {v}</label>' for v in range(1, 6))
        rows += (f'<div class="row" data-score="{name}"><span class="name">{esc(SCORE_LABELS[name])}</span>{radios}'
                 f'<span class="legend">{esc(SCORE_HINTS[name])}</span></div>')
    hidden = (f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
              f'<input type="hidden" name="item_id" value="{esc(item.item_id)}">'
              f'<input type="hidden" name="lease_id" value="{esc(lease.lease_id)}">')
    body += (f'<section><h2>Your verdict</h2><form id="verdict" method="post" action="/verdict" novalidate>{hidden}{rows}'
             f'<div id="message" class="message" role="status" aria-live="polite"></div>'
             f'<div class="actions"><button id="pass" class="pass" type="submit" name="passed" value="1">Pass <kbd>p</kbd></button>'
             f'<button id="fail" class="fail" type="submit" name="passed" value="0">Fail <kbd>x</kbd></button>'
             f'<button type="submit" form="skip">Skip <kbd>s</kbd></button></div></form>'
             f'<form id="skip" method="post" action="/skip">{hidden}</form>'
             f'<p class="legend" id="legend">Keys: <kbd>1</kbd>–<kbd>5</kbd> score the highlighted row and move to the next '
             f'(accuracy, helpfulness, safety) · <kbd>Backspace</kbd> previous row · <kbd>p</kbd> pass · <kbd>x</kbd> fail · '
             f'<kbd>s</kbd> skip</p></section>')
    return page(f"Review {item.item_id}", body, nonce, render_header(reviewer, csrf))


def render_empty(stats: QueueStats, own: int, reviewer: str, csrf: str, nonce: str) -> str:
    body = render_figures(stats, own)
    body += ('<section id="empty"><h2>Nothing to review</h2><p>Nothing to review right now: the queue holds no item '
             'you have not judged or skipped. New items arrive as the gate samples them; '
             '<a href="/">check again</a>.</p></section>')
    return page("Nothing to review", body, nonce, render_header(reviewer, csrf))


def render_login(nonce: str, login_csrf: str, error: str = "") -> str:
    err = f'<p class="error" id="error">{esc(error)}</p>' if error else ""
    body = (f'<section class="login"><h2>Sign in to review</h2>{err}'
            f'<form method="post" action="/login"><input type="hidden" name="login_csrf" value="{esc(login_csrf)}">'
            f'<p><label for="token">Reviewer token</label><br>'
            f'<input id="token" name="token" type="password" autocomplete="current-password" autofocus required></p>'
            f'<p><button type="submit">Sign in</button></p></form>'
            f'<p class="legend">A token comes from <code>flywheel reviewers add NAME</code>.</p></section>')
    return page("Sign in — Flywheel review", body, nonce, '<header><h1>Flywheel review</h1></header>')


def render_problem(title: str, message: str, nonce: str, reviewer: str = "", csrf: str = "") -> str:
    body = (f'<section id="problem"><h2>{esc(title)}</h2><p class="error" id="error">{esc(message)}</p>'
            f'<p><a href="/">Back to the queue</a></p></section>')
    return page(title, body, nonce, render_header(reviewer, csrf) if reviewer else "")


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return str(value)


# -- the application ----------------------------------------------------------------------------------


@dataclass
class _Identity:
    reviewer: str
    csrf: str  # the session's; "" for a bearer token (no ambient credential, nothing to forge)
    sid: str = ""


class _State:
    def __init__(self, queue, reviewers, relay, registry: CollectorRegistry):
        self.queue = queue
        self.reviewers = reviewers
        self.relay = relay
        self.registry = registry
        self.requests = Counter("flywheel_review_http_requests", "Requests to the review page, by route template and status.",
                                ["route", "status"], registry=registry)
        self.wake = asyncio.Event()
        self.relay_failing_since = 0.0
        self.relay_logged_at = 0.0


def create_review_app(settings, queue: ReviewQueue, reviewers: Reviewers, relay=None,
                      registry: CollectorRegistry | None = None) -> web.Application:
    """The review page. `relay` (a VerdictRelay) moves verdicts to Kafka; without one they wait in the
    Redis outbox. Without `registry` the app makes its own, with the queue's figures (QueueCollector);
    with one, the caller decides what else it holds (run_review registers the QueueCollector)."""
    if registry is None:
        from streams.metrics import QueueCollector

        registry = CollectorRegistry()
        QueueCollector(queue, registry)
    state = _State(queue, reviewers, relay, registry)
    app = web.Application(middlewares=[_guard], client_max_size=MAX_FORM_BYTES)
    app[K_QUEUE] = queue
    app[K_REVIEWERS] = reviewers
    app[K_STATE] = state
    app.router.add_get("/", _index)
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_post("/verdict", _verdict)
    app.router.add_post("/skip", _skip)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    if relay is not None:
        app.cleanup_ctx.append(_relay_task)
    return app


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def _security_headers(response: web.StreamResponse, nonce: str) -> None:
    h = response.headers
    h["Content-Security-Policy"] = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
                                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["Cache-Control"] = "no-store"
    h.setdefault("X-Frame-Options", "DENY")


@web.middleware
async def _guard(request: web.Request, handler):
    """Security headers, sign-in, and the request counter, for every route."""
    state: _State = request.app[K_STATE]
    nonce = secrets.token_urlsafe(18)
    request[K_NONCE] = nonce
    route = _route(request)
    try:
        if route not in PUBLIC_ROUTES and route != "other":
            ident = await _identify(request)
            if ident is None:
                response = _unauthorized(request)
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
        log.exception("request failed", extra={"event": "request_failed", "route": route, "method": request.method})
        response = web.Response(status=500, text="internal error\n")
    _security_headers(response, nonce)
    state.requests.labels(route, str(response.status)).inc()
    return response


async def _identify(request: web.Request) -> _Identity | None:
    reviewers: Reviewers = request.app[K_REVIEWERS]
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        name = await asyncio.to_thread(reviewers.authenticate, token.strip())
        return _Identity(name, "") if name else None
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    session: Session | None = await asyncio.to_thread(reviewers.session, sid)
    return _Identity(session.reviewer, session.csrf, sid) if session else None


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept or (request.method == "GET" and not accept)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _unauthorized(request: web.Request) -> web.Response:
    if _wants_html(request):
        response = _login_page(request, status=401)
    else:
        response = web.Response(status=401, text="sign in required: a session cookie or Authorization: Bearer <token>\n")
    response.headers["WWW-Authenticate"] = 'Bearer realm="flywheel-review"'
    return response


def _problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    ident: _Identity | None = request.get(K_IDENTITY)
    if _wants_html(request) or request.content_type == "application/x-www-form-urlencoded":
        return _html(render_problem(title, message, request[K_NONCE], ident.reviewer if ident else "",
                                    ident.csrf if ident else ""), status)
    return web.Response(status=status, text=message + "\n")


def _same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site. `Origin: null` (sent on
    POST by pages with Referrer-Policy: no-referrer, ours included) says nothing either way; the
    SameSite=Strict cookies and the CSRF tokens carry the check then."""
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value and value != "null":
            return urlsplit(value).netloc.lower() == request.host.lower()
    return True


def _login_page(request: web.Request, status: int = 200, error: str = "") -> web.Response:
    token = request.cookies.get(LOGIN_COOKIE) or ""
    fresh = len(token) < 20 or len(token) > 100
    if fresh:
        token = secrets.token_urlsafe(24)
    response = _html(render_login(request[K_NONCE], token, error), status)
    if fresh:
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
    return response


async def _login_form(request: web.Request) -> web.Response:
    return _login_page(request)


async def _login(request: web.Request) -> web.Response:
    reviewers: Reviewers = request.app[K_REVIEWERS]
    if not _same_origin(request):
        log.warning("sign-in refused: cross-site", extra={"event": "login_refused", "cause": "origin", "remote": request.remote})
        return _problem(request, 403, "Refused", "A sign-in from another site was refused.")
    form = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not expected or not hmac.compare_digest(str(form.get("login_csrf", "")).encode(), expected.encode()):
        log.warning("sign-in refused: no form token", extra={"event": "login_refused", "cause": "csrf", "remote": request.remote})
        return _login_page(request, 403, "The sign-in form expired; sign in again.")
    name = await asyncio.to_thread(reviewers.authenticate, str(form.get("token", "")).strip())
    if not name:
        log.warning("sign-in refused: unknown token", extra={"event": "login_refused", "cause": "token", "remote": request.remote})
        return _login_page(request, 401, "That token was not accepted.")
    sid, _session = await asyncio.to_thread(reviewers.open_session, name)
    log.info("signed in", extra={"event": "login", "reviewer": name})
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/", max_age=reviewers.session_s,
                        secure=request.secure)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def _checked_form(request: web.Request) -> tuple[Mapping[str, str] | None, web.Response | None]:
    """The posted form, once the session's CSRF token (and the origin) check out."""
    ident: _Identity = request[K_IDENTITY]
    form = await request.post()
    if ident.csrf:  # a cookie session: ambient credentials, so the form must prove it came from our page
        if not _same_origin(request):
            return None, _problem(request, 403, "Refused", "A form from another site was refused.")
        sent = str(form.get("csrf", ""))
        if not sent or not hmac.compare_digest(sent.encode(), ident.csrf.encode()):
            log.warning("form refused: csrf", extra={"event": "csrf_refused", "reviewer": ident.reviewer, "route": _route(request)})
            return None, _problem(request, 403, "Refused", "The form's CSRF token is missing or wrong; reload the page.")
    return {k: str(v) for k, v in form.items()}, None


async def _logout(request: web.Request) -> web.Response:
    form, refused = await _checked_form(request)
    if refused:
        return refused
    ident: _Identity = request[K_IDENTITY]
    if ident.sid:
        await asyncio.to_thread(request.app[K_REVIEWERS].close_session, ident.sid)
    log.info("signed out", extra={"event": "logout", "reviewer": ident.reviewer})
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(COOKIE, path="/")
    return response


def _page_data(queue: ReviewQueue, reviewer: str) -> tuple[Lease | None, QueueStats, int]:
    lease = queue.lease(reviewer)
    return lease, queue.stats(), queue.reviewer_count(reviewer)


async def _index(request: web.Request) -> web.Response:
    ident: _Identity = request[K_IDENTITY]
    lease, stats, own = await asyncio.to_thread(_page_data, request.app[K_QUEUE], ident.reviewer)
    if lease is None:
        return _html(render_empty(stats, own, ident.reviewer, ident.csrf, request[K_NONCE]))
    return _html(render_item(lease, stats, own, ident.reviewer, ident.csrf, request[K_NONCE]))


def _lease_lost(request: web.Request) -> web.Response:
    return _problem(request, 409, "Lease ended", "This item's lease ended; it went back to the queue.")


async def _current_lease(request: web.Request, item_id: str, lease_id: str) -> Lease | None:
    """The reviewer's lease, if it is still the one the form was made for."""
    queue: ReviewQueue = request.app[K_QUEUE]
    lease = await asyncio.to_thread(queue.lease, request[K_IDENTITY].reviewer)
    if lease is None or lease.lease_id != lease_id or lease.item.item_id != item_id:
        return None
    return lease


async def _verdict(request: web.Request) -> web.Response:
    form, refused = await _checked_form(request)
    if refused:
        return refused
    try:
        parsed = parse_verdict_form(form)
    except FormError as exc:
        return _problem(request, 400, "Not recorded", str(exc))
    ident: _Identity = request[K_IDENTITY]
    queue: ReviewQueue = request.app[K_QUEUE]
    lease = await _current_lease(request, parsed.item_id, parsed.lease_id)
    if lease is None:
        log.info("verdict refused: lease lost", extra={"event": "lease_lost", "reviewer": ident.reviewer, "item_id": parsed.item_id})
        return _lease_lost(request)
    try:
        verdict = build_verdict(lease, ident.reviewer, parsed, int(time.time() * 1000))
        rounds = await asyncio.to_thread(queue.submit, lease, ident.reviewer, verdict)
    except LeaseLost:
        log.info("verdict refused: lease lost", extra={"event": "lease_lost", "reviewer": ident.reviewer, "item_id": parsed.item_id})
        return _lease_lost(request)
    except (InvalidEvent, TypeError, ValueError) as exc:
        log.warning("verdict refused: invalid", extra={"event": "verdict_invalid", "reviewer": ident.reviewer,
                                                        "item_id": parsed.item_id, "error": str(exc)})
        return _problem(request, 400, "Not recorded", f"the verdict is not valid: {exc}")
    log.info("verdict recorded", extra={"event": "verdict", "reviewer": ident.reviewer, "item_id": parsed.item_id,
                                        "passed": verdict.passed, "round": rounds, "seconds_spent": verdict.seconds_spent})
    request.app[K_STATE].wake.set()  # the relay sends it now rather than within the second
    return web.Response(status=303, headers={"Location": "/"})


async def _skip(request: web.Request) -> web.Response:
    form, refused = await _checked_form(request)
    if refused:
        return refused
    ident: _Identity = request[K_IDENTITY]
    item_id, lease_id = form.get("item_id", ""), form.get("lease_id", "")
    lease = await _current_lease(request, item_id, lease_id)
    if lease is None or not await asyncio.to_thread(request.app[K_QUEUE].release, lease, ident.reviewer):
        return _lease_lost(request)
    log.info("item skipped", extra={"event": "skip", "reviewer": ident.reviewer, "item_id": item_id})
    return web.Response(status=303, headers={"Location": "/"})


async def _healthz(request: web.Request) -> web.Response:
    try:
        ok = await asyncio.to_thread(request.app[K_QUEUE].redis.ping)
    except Exception as exc:
        log.warning("health check: redis unavailable", extra={"event": "health", "error": type(exc).__name__})
        ok = False
    return web.Response(status=200 if ok else 503, text="ok\n" if ok else "redis unavailable\n")


async def _metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, request.app[K_STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- the relay ----------------------------------------------------------------------------------------


async def flush_relay(state: _State) -> int:
    """One flush, off the loop. Errors are logged (at most once a minute while they last), never raised."""
    try:
        sent = await asyncio.to_thread(state.relay.flush)
    except Exception as exc:
        now = time.monotonic()
        if not state.relay_failing_since:
            state.relay_failing_since = now
        if now - state.relay_logged_at >= RELAY_ERROR_LOG_EVERY_S:
            state.relay_logged_at = now
            log.error("verdict relay failed; verdicts wait in the outbox", extra={"event": "relay_failed", "error": str(exc)[:300]})
        return 0
    if state.relay_failing_since:
        log.info("verdict relay recovered", extra={"event": "relay_recovered",
                                                   "failed_s": round(time.monotonic() - state.relay_failing_since, 1)})
        state.relay_failing_since = state.relay_logged_at = 0.0
    if sent:
        log.info("verdicts relayed", extra={"event": "relay_sent", "verdicts": sent})
    return sent


async def _relay_loop(state: _State) -> None:
    while True:  # one task: flushes never overlap (the relay's Redis lock is per instance, not per call)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.wake.wait(), RELAY_INTERVAL_S)
        state.wake.clear()
        await flush_relay(state)


async def _relay_task(app: web.Application):
    state: _State = app[K_STATE]
    state.wake = asyncio.Event()  # bound to the loop that serves the app
    task = asyncio.create_task(_relay_loop(state))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await flush_relay(state)  # what the last requests recorded


# -- the server ---------------------------------------------------------------------------------------


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        log.info("review page listening on http://%s:%s/", shown, bound[1],
                 extra={"event": "review_started", "url": f"http://{shown}:{bound[1]}/"})
        await stop.wait()
    finally:
        await runner.cleanup()


def run_review(settings) -> None:
    """`flywheel review`: serves the review page until SIGINT or SIGTERM."""
    import redis

    from streams.metrics import QueueCollector
    from streams.review.relay import VerdictRelay

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
    prefix = review_prefix(settings)
    queue = ReviewQueue(client, prefix, lease_ms=settings.review_lease_s * 1000)
    reviewers = Reviewers(client, prefix, session_s=settings.review_session_h * 3600)
    registry = CollectorRegistry()
    relay = VerdictRelay(settings, queue, metrics=consumer_metrics(registry))  # its dead letters on this page's /metrics
    QueueCollector(queue, registry)
    app = create_review_app(settings, queue, reviewers, relay=relay, registry=registry)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, settings.review_host, settings.review_port, stop)

    try:
        asyncio.run(main())
    finally:
        relay.close()
        client.close()
        log.info("review page stopped", extra={"event": "review_stopped"})
