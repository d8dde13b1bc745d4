"""Keyed pseudonyms of user ids: HMAC-SHA256 with one secret per flywheel, never a plain hash.

A plain sha256 of a user id is no pseudonym: anyone who knows (or guesses) the ids reverses it by
hashing them. So every user identifier the flywheel keeps for joins or erasure (datasets'
users.txt and record-users sidecars, the erased list in Redis, the gate's stand-in for an id that
held personal data) is HMAC-SHA256(key, id).

The key is `FLYWHEEL_PSEUDONYM_KEY`. When it is empty, the first process that needs one generates
32 random bytes and keeps them in Redis (`<app_id>:pseudonym-key`, SET NX: every process of the
flywheel agrees on the one that won), with a warning: the default install works, but a key kept in
the same Redis as the pseudonyms protects little. Production sets it (docs: Datasets, Erasure and rotation).

Rotation: `FLYWHEEL_PSEUDONYM_KEY=new,old` (comma-separated, the current key first). New pseudonyms
are made with the first; an erasure also computes the user's pseudonyms under every older key, so
datasets sealed before the rotation (whose users.txt no HMAC can re-hash without the ids, which the
flywheel does not keep) are still found, re-sealed and re-keyed. An older key can go once no dataset
and no erased-list entry made with it remains (`flywheel erasure status` names the keys in use).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from typing import Any

log = logging.getLogger("flywheel.pseudonyms")

_cache: dict[tuple[str, str, str], bytes] = {}
_lock = threading.Lock()


def redis_key(app_id: str) -> str:
    return f"{app_id}:pseudonym-key"


def keyed(key: bytes, value: str) -> str:
    """HMAC-SHA256(key, value), hex: the pseudonym of `value`."""
    return hmac.digest(key, value.encode("utf-8"), "sha256").hex()


def resolve_keys(settings: Any, client: Any = None) -> list[bytes]:
    """Every pseudonym key, the current one first: FLYWHEEL_PSEUDONYM_KEY's (comma-separated, after a
    rotation), else the one kept in Redis."""
    configured = [k.strip() for k in (getattr(settings, "pseudonym_key", "") or "").split(",") if k.strip()]
    if configured:
        return [k.encode("utf-8") for k in configured]
    return [resolve_key(settings, client)]


def resolve_key(settings: Any, client: Any = None) -> bytes:
    """The flywheel's current pseudonym key: FLYWHEEL_PSEUDONYM_KEY's first, else the one kept in Redis
    (generated there on first use, with a warning). Cached per (Redis, app id) for the life of the process."""
    configured = [k.strip() for k in (getattr(settings, "pseudonym_key", "") or "").split(",") if k.strip()]
    if configured:
        return configured[0].encode("utf-8")
    where = (settings.redis_url, settings.app_id, "")
    with _lock:
        if where in _cache:
            return _cache[where]
        own = client is None
        if own:
            import redis

            client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        try:
            name = redis_key(settings.app_id)
            if client.set(name, secrets.token_hex(32), nx=True):
                log.warning(
                    "FLYWHEEL_PSEUDONYM_KEY is empty: a pseudonym key was generated and kept in Redis; "
                    "set FLYWHEEL_PSEUDONYM_KEY in production (docs: Datasets, Erasure)",
                    extra={"redis_key": name},
                )
            value = client.get(name)
        finally:
            if own:
                client.close()
        if not value:
            raise RuntimeError(f"no pseudonym key: FLYWHEEL_PSEUDONYM_KEY is empty and Redis holds none at {name}")
        key = value if isinstance(value, bytes) else str(value).encode()
        _cache[where] = key
        return key


def key_source(settings: Any) -> str:
    """Where the key comes from, for `flywheel erasure status`: configured, or generated (Redis)."""
    return (
        "FLYWHEEL_PSEUDONYM_KEY"
        if getattr(settings, "pseudonym_key", "")
        else f"generated, kept in Redis at {redis_key(settings.app_id)}"
    )


def current_key() -> bytes:
    """The key for a caller with no settings at hand (the gate's id pseudonyms): from the environment."""
    from flywheel.settings import Settings

    return resolve_key(Settings.from_env())


def fingerprint(key: bytes) -> str:
    """A short public name of a key (which key hashed a dataset's users), never the key."""
    return hashlib.sha256(b"flywheel-pseudonym-key\x00" + key).hexdigest()[:12]
