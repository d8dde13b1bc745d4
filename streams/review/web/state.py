"""What the review app's modules share: the cookie names, the app's and requests' keys, the signed-in
identity and the app's state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from streams.review.accounts import Reviewers
from streams.review.queue import ReviewQueue

__all__ = ["COOKIE", "LOGIN_COOKIE", "MAX_FORM_BYTES", "PUBLIC_ROUTES", "Identity", "State"]

COOKIE = "flywheel_review"
LOGIN_COOKIE = "flywheel_login"  # double-submit token of the sign-in form (login CSRF)
MAX_FORM_BYTES = 64 * 1024
PUBLIC_ROUTES = frozenset({"/login", "/healthz", "/metrics"})

K_QUEUE = web.AppKey("queue", ReviewQueue)
K_REVIEWERS = web.AppKey("reviewers", Reviewers)
K_STATE = web.AppKey("state", object)
K_NONCE = web.RequestKey("nonce", str)
K_IDENTITY = web.RequestKey("identity", object)


@dataclass
class Identity:
    reviewer: str
    csrf: str  # the session's; "" for a bearer token (no ambient credential, nothing to forge)
    sid: str = ""


class State:
    def __init__(self, queue, reviewers, relay, registry: CollectorRegistry):
        self.queue = queue
        self.reviewers = reviewers
        self.relay = relay
        self.registry = registry
        self.requests = Counter(
            "flywheel_review_http_requests",
            "Requests to the review page, by route template and status.",
            ["route", "status"],
            registry=registry,
        )
        self.wake = asyncio.Event()
        self.relay_failing_since = 0.0
        self.relay_logged_at = 0.0
