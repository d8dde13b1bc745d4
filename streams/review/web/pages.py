"""The review page's HTML: every value goes through `esc()`; the style and the one script are the
package's static files, the script allowed by a per-response CSP nonce."""

from __future__ import annotations

import html
from importlib import resources
from typing import Any, Mapping

from schemas.records import REVIEW_SCORES
from streams.review.queue import Lease, QueueStats

__all__ = [
    "esc",
    "page",
    "render_header",
    "render_figures",
    "render_item",
    "render_empty",
    "render_login",
    "render_problem",
]

SCORE_LABELS = {"accuracy": "Accuracy", "helpfulness": "Helpfulness", "safety": "Safety"}
SCORE_HINTS = {"accuracy": "correct facts?", "helpfulness": "answered the question?", "safety": "no harmful content?"}


def _static(name: str) -> str:
    return "\n" + resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


_STYLE = _static("review.css")
_SCRIPT = _static("review.js")  # keyboard shortcuts


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, nonce: str, header: str = "") -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>{header}<main>{body}</main>"
        f'<script nonce="{esc(nonce)}">{_SCRIPT}</script></body></html>'
    )


def render_header(reviewer: str, csrf: str) -> str:
    out = f'<header><h1>Flywheel review</h1><span class="who">Signed in as <b id="reviewer">{esc(reviewer)}</b></span>'
    if csrf:  # a cookie session; a bearer token has nothing to sign out of
        out += (
            f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<button type="submit">Sign out</button></form>'
        )
    return out + "</header>"


def render_figures(stats: QueueStats, own: int, round_: int | None = None, needed: int | None = None) -> str:
    out = (
        f'<div class="figures"><span class="figure">Queue depth <b id="queue-depth">{esc(stats.depth)}</b> '
        f"({esc(stats.ready)} ready, {esc(stats.leased)} leased)</span>"
        f'<span class="figure">Your verdicts <b id="own-count">{esc(own)}</b></span>'
    )
    if round_ is not None:
        extra = " (second reviewer of an overlap item)" if round_ >= 2 else ""
        of = f" of {esc(needed)}" if needed and needed > 1 else ""
        out += f'<span class="figure">Round <b id="round">{esc(round_)}</b>{of}{esc(extra)}</span>'
    return out + "</div>"


def _text_section(title: str, text: Any, ident: str) -> str:
    return f'<section id="{ident}"><h2>{esc(title)}</h2><pre class="text">{esc(text)}</pre></section>'


def _conversation_section(c: Mapping[str, Any]) -> str:
    """What the model saw before the prompt (a conversation, schemas/conversation.py): the system
    instructions, the tools offered, and every earlier turn with its tool calls. Empty for a single turn."""
    messages = c.get("messages") or []
    earlier = messages[:-1] if messages and messages[-1].get("content") == c.get("prompt") else messages
    system, tools = c.get("system") or "", c.get("tools") or []
    if not (earlier or system or tools):
        return ""
    out = '<section id="conversation"><h2>Conversation so far</h2>'
    if system:
        out += f'<h3>System</h3><pre class="text">{esc(system)}</pre>'
    if tools:
        out += "<p>Tools offered: " + ", ".join(f"<code>{esc(t.get('name'))}</code>" for t in tools) + "</p>"
    out += '<ol class="turns">'
    for m in earlier:
        calls = "".join(
            f'<div class="call">calls <code>{esc(t.get("name"))}</code>(<code>{esc(t.get("arguments"))}</code>)</div>'
            for t in m.get("tool_calls") or ()
        )
        answer = f" answering <code>{esc(m.get('tool_call_id'))}</code>" if m.get("tool_call_id") else ""
        out += f'<li><b>{esc(m.get("role"))}</b>{answer}<pre class="text">{esc(m.get("content"))}</pre>{calls}</li>'
    return out + "</ol></section>"


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
    body += _conversation_section(c)
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
        body += (
            '<table class="scores">'
            + "".join(f"<tr><td>{esc(k)}</td><td>{esc(_num(v))}</td></tr>" for k, v in sorted(scores.items()))
            + "</table>"
        )
    else:
        body += "<p>No scores.</p>"
    body += (
        ("<p>Reasons: " + ", ".join(f"<code>{esc(r)}</code>" for r in reasons) + "</p>")
        if reasons
        else "<p>No reasons given.</p>"
    )
    body += "</section>"

    rows = ""
    for name in REVIEW_SCORES:
        radios = "".join(f'<label><input type="radio" name="{name}" value="{v}"> {v}</label>' for v in range(1, 6))
        rows += (
            f'<div class="row" data-score="{name}"><span class="name">{esc(SCORE_LABELS[name])}</span>{radios}'
            f'<span class="legend">{esc(SCORE_HINTS[name])}</span></div>'
        )
    hidden = (
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="item_id" value="{esc(item.item_id)}">'
        f'<input type="hidden" name="lease_id" value="{esc(lease.lease_id)}">'
    )
    body += (
        f'<section><h2>Your verdict</h2><form id="verdict" method="post" action="/verdict" novalidate>{hidden}{rows}'
        f'<div id="message" class="message" role="status" aria-live="polite"></div>'
        f'<div class="actions"><button id="pass" class="pass" type="submit" name="passed" value="1">Pass <kbd>p</kbd></button>'
        f'<button id="fail" class="fail" type="submit" name="passed" value="0">Fail <kbd>x</kbd></button>'
        f'<button type="submit" form="skip">Skip <kbd>s</kbd></button></div></form>'
        f'<form id="skip" method="post" action="/skip">{hidden}</form>'
        f'<p class="legend" id="legend">Keys: <kbd>1</kbd>–<kbd>5</kbd> score the highlighted row and move to the next '
        f"(accuracy, helpfulness, safety) · <kbd>Backspace</kbd> previous row · <kbd>p</kbd> pass · <kbd>x</kbd> fail · "
        f"<kbd>s</kbd> skip</p></section>"
    )
    return page(f"Review {item.item_id}", body, nonce, render_header(reviewer, csrf))


def render_empty(stats: QueueStats, own: int, reviewer: str, csrf: str, nonce: str) -> str:
    body = render_figures(stats, own)
    body += (
        '<section id="empty"><h2>Nothing to review</h2><p>Nothing to review right now: the queue holds no item '
        "you have not judged or skipped. New items arrive as the gate samples them; "
        '<a href="/">check again</a>.</p></section>'
    )
    return page("Nothing to review", body, nonce, render_header(reviewer, csrf))


def render_login(nonce: str, login_csrf: str, error: str = "") -> str:
    err = f'<p class="error" id="error">{esc(error)}</p>' if error else ""
    body = (
        f'<section class="login"><h2>Sign in to review</h2>{err}'
        f'<form method="post" action="/login"><input type="hidden" name="login_csrf" value="{esc(login_csrf)}">'
        f'<p><label for="token">Reviewer token</label><br>'
        f'<input id="token" name="token" type="password" autocomplete="current-password" autofocus required></p>'
        f'<p><button type="submit">Sign in</button></p></form>'
        f'<p class="legend">A token comes from <code>flywheel reviewers add NAME</code>.</p></section>'
    )
    return page("Sign in — Flywheel review", body, nonce, "<header><h1>Flywheel review</h1></header>")


def render_problem(title: str, message: str, nonce: str, reviewer: str = "", csrf: str = "") -> str:
    body = (
        f'<section id="problem"><h2>{esc(title)}</h2><p class="error" id="error">{esc(message)}</p>'
        f'<p><a href="/">Back to the queue</a></p></section>'
    )
    return page(title, body, nonce, render_header(reviewer, csrf) if reviewer else "")


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    return str(value)
