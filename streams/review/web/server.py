"""`flywheel review`: the review page served until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CollectorRegistry

from flywheel.metrics import consumer_metrics
from streams.review.accounts import Reviewers
from streams.review.queue import ReviewQueue, review_prefix
from streams.review.web.app import create_review_app

__all__ = ["serve", "run_review"]

log = logging.getLogger("flywheel.review")


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (host, port)
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        log.info(
            "review page listening on http://%s:%s/",
            shown,
            bound[1],
            extra={"event": "review_started", "url": f"http://{shown}:{bound[1]}/"},
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def run_review(settings) -> None:
    """`flywheel review`: serves the review page until SIGINT or SIGTERM."""
    import redis

    from streams.metrics import QueueCollector
    from streams.review.relay import VerdictRelay

    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
    prefix = review_prefix(settings)
    queue = ReviewQueue(client, prefix, lease_ms=settings.review_lease_s * 1000)
    reviewers = Reviewers(client, prefix, session_s=settings.review_session_h * 3600)
    registry = CollectorRegistry()
    relay = VerdictRelay(
        settings, queue, metrics=consumer_metrics(registry)
    )  # its dead letters on this page's /metrics
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
