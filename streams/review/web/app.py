"""The review application: its routes, its middleware and its relay task."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from streams.review.accounts import Reviewers
from streams.review.queue import ReviewQueue
from streams.review.web import handlers
from streams.review.web.auth import guard
from streams.review.web.relaying import relay_task
from streams.review.web.state import K_QUEUE, K_REVIEWERS, K_STATE, MAX_FORM_BYTES, State

__all__ = ["create_review_app"]


def create_review_app(
    settings, queue: ReviewQueue, reviewers: Reviewers, relay=None, registry: CollectorRegistry | None = None
) -> web.Application:
    """The review page. `relay` (a VerdictRelay) moves verdicts to Kafka; without one they wait in the
    Redis outbox. Without `registry` the app makes its own, with the queue's figures (QueueCollector);
    with one, the caller decides what else it holds (run_review registers the QueueCollector)."""
    if registry is None:
        from streams.metrics import QueueCollector

        registry = CollectorRegistry()
        QueueCollector(queue, registry)
    state = State(queue, reviewers, relay, registry)
    app = web.Application(middlewares=[guard], client_max_size=MAX_FORM_BYTES)
    app[K_QUEUE] = queue
    app[K_REVIEWERS] = reviewers
    app[K_STATE] = state
    app.router.add_get("/", handlers.index)
    app.router.add_get("/login", handlers.login_form)
    app.router.add_post("/login", handlers.login)
    app.router.add_post("/logout", handlers.logout)
    app.router.add_post("/verdict", handlers.verdict)
    app.router.add_post("/skip", handlers.skip)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics)
    if relay is not None:
        app.cleanup_ctx.append(relay_task)
    return app
