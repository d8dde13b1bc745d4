"""Which model serves a user: the routing table the rollout controller writes and apps read.

The table is one small JSON value in Redis (`<app_id>:rollout:routing`):
`{"production": "v0003", "candidate": "v0004" | null, "weight": 0.05, "salt": "v0004"}`. A user is
in the candidate arm when a hash of (salt, user id) falls below the weight, so assignment is
deterministic, sticky per user, and a ramp from 5 % to 25 % only adds users to the candidate arm,
never moves one back. With no table yet, the production pointer the trainer's cold start set
(`<app_id>:models:production`) serves everyone.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable


def routing_key(app_id: str) -> str:
    return f"{app_id}:rollout:routing"


def production_key(app_id: str) -> str:
    return f"{app_id}:models:production"


@dataclass(frozen=True)
class Routing:
    production: str | None = None
    candidate: str | None = None
    weight: float = 0.0  # the candidate's share of users
    salt: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Routing":
        d = json.loads(raw)
        return cls(d.get("production"), d.get("candidate"), float(d.get("weight") or 0.0), d.get("salt") or "")


@dataclass(frozen=True)
class Assignment:
    model_version: str | None
    variant: str  # "candidate" | "production": what the interaction event carries


def bucket(salt: str, user_id: str) -> float:
    """A user's fixed place in [0, 1) for one rollout."""
    digest = hashlib.sha256(f"{salt}\0{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def choose(routing: Routing, user_id: str) -> Assignment:
    if (
        routing.candidate
        and routing.weight > 0
        and bucket(routing.salt or routing.candidate, user_id) < routing.weight
    ):
        return Assignment(routing.candidate, "candidate")
    return Assignment(routing.production, "production")


class Assigner:
    """`assign(user_id) -> model_version` for production apps: the routing table is read from Redis at
    most every `refresh_s` seconds and cached, so an app needs no other state and a Redis outage
    keeps the last table (a fresh process with no table and no Redis gets None: serve your default)."""

    def __init__(
        self, redis_client: Any, app_id: str, refresh_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ):
        self.redis = redis_client
        self.app_id = app_id
        self.refresh_s = refresh_s
        self.clock = clock
        self._routing = Routing()
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, redis_url: str, app_id: str, refresh_s: float = 5.0) -> "Assigner":
        import redis

        return cls(redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2), app_id, refresh_s)

    def routing(self) -> Routing:
        now = self.clock()
        with self._lock:
            if self._fetched_at is None or now - self._fetched_at >= self.refresh_s:
                self._fetched_at = now
                try:
                    raw, production = self.redis.mget(routing_key(self.app_id), production_key(self.app_id))
                    if raw:
                        self._routing = Routing.from_json(raw)
                    elif production:
                        self._routing = Routing(production.decode() if isinstance(production, bytes) else production)
                except Exception:  # Redis away: keep serving the last table
                    pass
            return self._routing

    def assignment(self, user_id: str) -> Assignment:
        return choose(self.routing(), user_id)

    def assign(self, user_id: str) -> str | None:
        return self.assignment(user_id).model_version
