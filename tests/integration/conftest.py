"""Fixtures of the Redis-backed review tests: a real client, and a key prefix of the test's own."""

from __future__ import annotations

import uuid

import pytest
import redis


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
