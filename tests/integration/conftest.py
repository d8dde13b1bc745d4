"""Integration fixtures: a real Redis client, a key prefix of the test's own, and closing what a test opened."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.integration.helpers import OPEN


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client):
    """`test-<random>:review`, deleted with every key under it when the test ends."""
    p = f"test-{uuid.uuid4().hex[:10]}:review"
    yield p
    for key in client.scan_iter(f"{p}:*", count=1000):
        client.delete(key)


@pytest.fixture(autouse=True)
def _close_what_the_test_opened():
    yield
    while OPEN:
        OPEN.pop().close()
