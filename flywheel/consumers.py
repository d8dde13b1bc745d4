"""What every long-lived confluent-kafka consumer of the flywheel does while it is not reading.

Why: librdkafka keeps fetching for an assigned partition whether or not the application polls, and
a broker that answers an empty fetch at once instead of holding it (the embedded one) turns that
into a busy loop: measured, an idle consumer costs 45 % of a core and the broker 37 %, and a
trainer whose own consumer sat idle beside it trained 3.7 times slower (the torch threads lost
their cores). So a consumer is paused while its owner works (a seal, a training cycle) and while it
rests between empty polls.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def paused(consumer: Any) -> Iterator[None]:
    """No fetching for the consumer's current assignment inside the block."""
    assignment = consumer.assignment()
    consumer.pause(assignment)
    try:
        yield
    finally:
        consumer.resume(assignment)


def rest(consumer: Any, seconds: float) -> None:
    """Wait with fetching paused."""
    with paused(consumer):
        time.sleep(seconds)


STREAM_POLL_S = 0.05  # a poll while records flow
# The first poll after a rest: a resumed partition's fetch must be sent and answered inside it, or the
# next rest pauses it again and the answer is dropped. At 50 ms, on a loaded 2-core machine (load 2-5), a
# record produced to an idle consumer was read 30-54 s later; at 0.1-0.25 s, within 0-3 s.
AFTER_REST_POLL_S = 0.2


def poll_window(timeout: float, resting: bool, rested: bool) -> float:
    """How long the next poll waits: `timeout` for a consumer that never rests; else a short poll while
    records flow, and a longer one right after a rest (`rested`), so that the resumed fetch is heard."""
    if not resting:
        return timeout
    return min(timeout, AFTER_REST_POLL_S if rested else STREAM_POLL_S)
