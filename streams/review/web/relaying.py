"""The verdict relay inside the review app: verdicts move from the Redis outbox to Kafka right after
each one is recorded and every second, off the event loop; a failing broker is logged, never raised."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from streams.review.web.state import K_STATE, State

__all__ = ["flush_relay", "relay_task"]

log = logging.getLogger("flywheel.review")

RELAY_INTERVAL_S = 1.0
RELAY_ERROR_LOG_EVERY_S = 60.0


async def flush_relay(state: State) -> int:
    """One flush, off the loop. Errors are logged (at most once a minute while they last), never raised."""
    try:
        sent = await asyncio.to_thread(state.relay.flush)
    except Exception as exc:
        now = time.monotonic()
        if not state.relay_failing_since:
            state.relay_failing_since = now
        if now - state.relay_logged_at >= RELAY_ERROR_LOG_EVERY_S:
            state.relay_logged_at = now
            log.error(
                "verdict relay failed; verdicts wait in the outbox",
                extra={"event": "relay_failed", "error": str(exc)[:300]},
            )
        return 0
    if state.relay_failing_since:
        log.info(
            "verdict relay recovered",
            extra={"event": "relay_recovered", "failed_s": round(time.monotonic() - state.relay_failing_since, 1)},
        )
        state.relay_failing_since = state.relay_logged_at = 0.0
    if sent:
        log.info("verdicts relayed", extra={"event": "relay_sent", "verdicts": sent})
    return sent


async def relay_loop(state: State) -> None:
    while True:  # one task: flushes never overlap (the relay's Redis lock is per instance, not per call)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.wake.wait(), RELAY_INTERVAL_S)
        state.wake.clear()
        await flush_relay(state)


async def relay_task(app: web.Application):
    state: State = app[K_STATE]
    state.wake = asyncio.Event()  # bound to the loop that serves the app
    task = asyncio.create_task(relay_loop(state))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await flush_relay(state)  # what the last requests recorded
