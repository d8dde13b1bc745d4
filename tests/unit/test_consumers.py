"""How long-lived consumers poll and rest (flywheel/consumers.py)."""

from __future__ import annotations


def test_a_resting_consumer_polls_longer_right_after_a_rest():
    """The builder's and the trainer's loop: short polls while records flow, a longer first poll after
    a rest (a resumed fetch must be answered inside it), and the caller's timeout when it never rests."""
    from flywheel.consumers import AFTER_REST_POLL_S, STREAM_POLL_S, poll_window

    assert poll_window(1.0, resting=True, rested=False) == STREAM_POLL_S
    assert poll_window(1.0, resting=True, rested=True) == AFTER_REST_POLL_S > STREAM_POLL_S
    assert poll_window(0.1, resting=True, rested=True) == 0.1
    assert poll_window(1.0, resting=False, rested=True) == 1.0
