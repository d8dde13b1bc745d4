"""The monitors' shared state in Redis: counts per time bucket, which monitors fire, and the holds.

Every worker adds its batches to the same bucket hashes (`<app>:guards:b:<bucket>`, expiring once
older than the baseline), so the monitors judge all traffic whichever partitions a worker holds.
A hold (`<app>:guards:hold:<target>`) stays until a person releases it: a dataset built from the
traffic that set it off should be looked at before anyone trains on it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from flywheel.policy import GuardPolicy

HOLD_TARGETS = ("datasets",)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def hold_key(app_id: str, target: str) -> str:
    return f"{app_id}:guards:hold:{target}"


def read_hold(redis_client: Any, app_id: str, target: str) -> dict | None:
    """The hold on `target` ({monitor, reason, since}), or None."""
    raw = redis_client.get(hold_key(app_id, target))
    return json.loads(raw) if raw else None


class GuardStore:
    def __init__(self, redis_client: Any, app_id: str, policy: GuardPolicy):
        self.redis = redis_client
        self.app_id = app_id
        self.policy = policy
        self.prefix = f"{app_id}:guards"
        self.state_key = f"{self.prefix}:state"

    def bucket(self, now_s: float) -> int:
        return int(now_s // self.policy.bucket_s)

    def add(self, fields: Mapping[str, int], now_s: float | None = None) -> None:
        if not fields:
            return
        key = f"{self.prefix}:b:{self.bucket(time.time() if now_s is None else now_s)}"
        pipe = self.redis.pipeline(transaction=False)
        for name, n in fields.items():
            pipe.hincrby(key, name, n)
        g = self.policy
        pipe.expire(key, (g.recent_buckets + g.baseline_buckets + 2) * g.bucket_s)
        pipe.execute()

    def windows(self, now_s: float | None = None) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
        """(recent, baseline) buckets, complete ones only, oldest first."""
        g = self.policy
        current = self.bucket(time.time() if now_s is None else now_s)
        first = current - g.recent_buckets - g.baseline_buckets
        pipe = self.redis.pipeline(transaction=False)
        for b in range(first, current):
            pipe.hgetall(f"{self.prefix}:b:{b}")
        buckets = [{_text(k): int(v) for k, v in raw.items()} for raw in pipe.execute()]
        return buckets[g.baseline_buckets :], buckets[: g.baseline_buckets]

    # -- what fires, and the holds ------------------------------------------------------------------
    def firing(self) -> dict[str, int]:
        """Monitors firing now, with the time (ms) each began."""
        raw = self.redis.get(self.state_key)
        return {k: int(v) for k, v in json.loads(raw).get("firing", {}).items()} if raw else {}

    def set_firing(self, firing: Mapping[str, int]) -> None:
        self.redis.set(self.state_key, json.dumps({"firing": dict(firing)}, sort_keys=True))

    def hold(self, target: str, monitor: str, reason: str) -> bool:
        """Holds `target` unless it is held already; True when this call set the hold."""
        value = json.dumps({"monitor": monitor, "reason": reason, "since": int(time.time() * 1000)})
        return bool(self.redis.set(hold_key(self.app_id, target), value, nx=True))

    def holds(self) -> dict[str, dict]:
        return {t: h for t in HOLD_TARGETS if (h := read_hold(self.redis, self.app_id, t)) is not None}

    def release(self, target: str) -> bool:
        if target not in HOLD_TARGETS:
            raise ValueError(f"no such hold {target!r}; holds: {', '.join(HOLD_TARGETS)}")
        return bool(self.redis.delete(hold_key(self.app_id, target)))
