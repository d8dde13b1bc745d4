"""Reviewer accounts and sign-in sessions, in Redis.

A reviewer signs in with a token that `flywheel reviewers add NAME` prints once. Only its SHA-256
is stored: the token is 256 random bits, so a hash is enough and a copy of Redis gives nobody a
way in. A sign-in opens a session (a random id in an HttpOnly cookie, also stored hashed) that
carries its own CSRF token.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN_PREFIX = "fwr_"


class AccountError(ValueError):
    """A reviewer name that is not allowed, or that exists (or does not)."""


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Reviewers:
    def __init__(self, client: Any, prefix: str, session_s: int = 12 * 3600):
        self.redis = client
        self.prefix = prefix
        self.session_s = session_s

    def add(self, name: str) -> str:
        """Creates the reviewer; returns the token, which is shown once and never stored."""
        if not NAME_RE.match(name):
            raise AccountError(
                f"reviewer name {name!r} must be 1-64 letters, digits or _.@- and start with a letter or digit"
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = json.dumps({"token_sha256": _digest(token), "created_at": int(time.time() * 1000)})
        if not self.redis.hsetnx(f"{self.prefix}:reviewers", name, record):
            raise AccountError(f"reviewer {name!r} exists; remove it first to issue a new token")
        self.redis.hset(f"{self.prefix}:tokens", _digest(token), name)
        return token

    def remove(self, name: str) -> None:
        raw = self.redis.hget(f"{self.prefix}:reviewers", name)
        if raw is None:
            raise AccountError(f"no reviewer {name!r}")
        pipe = self.redis.pipeline()
        pipe.hdel(f"{self.prefix}:tokens", json.loads(raw)["token_sha256"])
        pipe.hdel(f"{self.prefix}:reviewers", name)
        pipe.execute()

    def list(self) -> list[dict[str, Any]]:
        rows = self.redis.hgetall(f"{self.prefix}:reviewers")
        return sorted(
            ({"name": k.decode(), "created_at": json.loads(v)["created_at"]} for k, v in rows.items()),
            key=lambda r: r["name"],
        )

    def authenticate(self, token: str) -> str | None:
        """The reviewer a token belongs to, or None."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        name = self.redis.hget(f"{self.prefix}:tokens", _digest(token))
        if name is None or not self.redis.hexists(f"{self.prefix}:reviewers", name):
            return None
        return name.decode()

    def open_session(self, reviewer: str) -> tuple[str, Session]:
        """A new session id (for the cookie) and the session it stands for."""
        sid = secrets.token_urlsafe(32)
        session = Session(reviewer, secrets.token_urlsafe(32))
        self.redis.set(f"{self.prefix}:session:{_digest(sid)}", json.dumps(session.__dict__), ex=self.session_s)
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        """The live session of a cookie; a removed reviewer's sessions end with the account."""
        if not sid or len(sid) > 100:
            return None
        raw = self.redis.get(f"{self.prefix}:session:{_digest(sid)}")
        if raw is None:
            return None
        session = Session(**json.loads(raw))
        if not self.redis.hexists(f"{self.prefix}:reviewers", session.reviewer):
            return None
        return session

    def close_session(self, sid: str) -> None:
        self.redis.delete(f"{self.prefix}:session:{_digest(sid)}")
