"""The review queue in Redis: priority order, leases that expire, overlap, and a verdict outbox.

Every state change is one Lua script. An item is leased to one reviewer at a time; an expired lease
puts it back in its place, and a verdict on a lost lease is refused. A reviewer is never offered an
item they judged or skipped; overlap items go back for a second reviewer. A verdict goes to an
outbox stream in the same script as the end of its lease (`streams/review/relay.py` moves it to
Kafka), and an item's text is deleted once it has all its verdicts.

Design: docs/concepts/review.md#the-queue
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from schemas.records import ReviewVerdict
from streams.review.items import ReviewItem

KNOWN_TTL_S = 60 * 24 * 3600  # longer than any replay: an item is queued once per candidate, ever
PRIORITY_SPAN = 10**13  # score = rank * span + enqueued ms: class order first, then first come first served
REAP_BATCH = 200
SCAN_LIMIT = 1000  # most ready items a lease looks through for one this reviewer has not seen

_REAP = (
    """
local function reap(p, now)
  local expired = redis.call('ZRANGEBYSCORE', p..':leases', '-inf', now, 'LIMIT', 0, %d)
  for _, id in ipairs(expired) do
    local l = redis.call('HGET', p..':lease', id)
    if l then
      local who = string.match(l, '^[^|]*|([^|]*)|')
      if who and redis.call('HGET', p..':holding', who) == id then redis.call('HDEL', p..':holding', who) end
    end
    redis.call('HDEL', p..':lease', id)
    redis.call('ZREM', p..':leases', id)
    local score = redis.call('HGET', p..':score', id)
    if score then redis.call('ZADD', p..':ready', score, id) end
    redis.call('HINCRBY', p..':stats', 'expired', 1)
  end
  return #expired
end
"""
    % REAP_BATCH
)

_ENQUEUE = (
    """
local p, now, budget, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 6 do
  local id, item, rank, need, win, task = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), ARGV[i+3], ARGV[i+4], ARGV[i+5]
  local wk = p..':window:'..win
  if redis.call('EXISTS', p..':known:'..id) == 1 then
    table.insert(out, 'duplicate')
  elseif budget > 0 and tonumber(redis.call('HGET', wk, '*') or '0') >= budget then
    redis.call('HINCRBY', p..':stats', 'over_budget', 1)
    table.insert(out, 'budget')
  else
    redis.call('SET', p..':known:'..id, '1', 'EX', ttl)
    redis.call('HINCRBY', wk, '*', 1)
    redis.call('HINCRBY', wk, task, 1)
    redis.call('EXPIRE', wk, ttl)
    local score = rank * %d + now
    redis.call('HSET', p..':items', id, item)
    redis.call('HSET', p..':need', id, need)
    redis.call('HSET', p..':score', id, score)
    redis.call('ZADD', p..':ready', score, id)
    redis.call('ZADD', p..':age', now, id)
    redis.call('HINCRBY', p..':stats', 'queued', 1)
    table.insert(out, 'queued')
  end
end
return out
"""
    % PRIORITY_SPAN
)

_LEASE = (
    _REAP
    + """
local p, now, span, who, lease_id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
reap(p, now)
local held = redis.call('HGET', p..':holding', who)
if held then
  local l = redis.call('HGET', p..':lease', held)
  if l and string.match(l, '^[^|]*|([^|]*)|') == who then
    redis.call('ZADD', p..':leases', now + span, held)
    local rounds = tonumber(redis.call('HGET', p..':rounds', held) or '0')
    return {held, string.match(l, '^([^|]*)|'), now + span, redis.call('HGET', p..':items', held), rounds + 1,
            tonumber(string.match(l, '([^|]*)$'))}
  end
  redis.call('HDEL', p..':holding', who)
end
for offset = 0, %d - 1, 50 do
  local ids = redis.call('ZRANGE', p..':ready', offset, offset + 49)
  if #ids == 0 then return false end
  for _, id in ipairs(ids) do
    if redis.call('HEXISTS', p..':by:'..id, who) == 0 then
      redis.call('ZREM', p..':ready', id)
      redis.call('HSET', p..':lease', id, lease_id..'|'..who..'|'..now)
      redis.call('ZADD', p..':leases', now + span, id)
      redis.call('HSET', p..':holding', who, id)
      local rounds = tonumber(redis.call('HGET', p..':rounds', id) or '0')
      return {id, lease_id, now + span, redis.call('HGET', p..':items', id), rounds + 1, now}
    end
  end
end
return false
"""
    % SCAN_LIMIT
)

# ARGV: p, now, who, lease_id, id, passed ('1'|'0'), verdict json, known ttl
_SUBMIT = """
local p, now, who, lease_id, id, passed, verdict, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local l = redis.call('HGET', p..':lease', id)
if not l or string.sub(l, 1, #lease_id + #who + 2) ~= lease_id..'|'..who..'|' then return {'lost', 0} end
redis.call('HDEL', p..':lease', id)
redis.call('ZREM', p..':leases', id)
if redis.call('HGET', p..':holding', who) == id then redis.call('HDEL', p..':holding', who) end
redis.call('HSET', p..':by:'..id, who, 'v')
redis.call('EXPIRE', p..':by:'..id, ttl)
local rounds = redis.call('HINCRBY', p..':rounds', id, 1)
redis.call('HINCRBY', p..':stats', 'verdicts', 1)
redis.call('HINCRBY', p..':stats', passed == '1' and 'passed' or 'failed', 1)
redis.call('HINCRBY', p..':count', who, 1)
redis.call('XADD', p..':outbox', '*', 'verdict', verdict)
local first = redis.call('HGET', p..':first', id)
if not first then
  redis.call('HSET', p..':first', id, passed)
elseif first == passed then
  redis.call('HINCRBY', p..':stats', 'agree', 1)
else
  redis.call('HINCRBY', p..':stats', 'disagree', 1)
end
if rounds < tonumber(redis.call('HGET', p..':need', id) or '1') then
  redis.call('ZADD', p..':ready', redis.call('HGET', p..':score', id), id)
else
  for _, k in ipairs({'items', 'need', 'score', 'rounds', 'first'}) do redis.call('HDEL', p..':'..k, id) end
  redis.call('ZREM', p..':age', id)
  redis.call('HINCRBY', p..':stats', 'completed', 1)
end
return {'ok', rounds}
"""

_RELEASE = """
local p, who, lease_id, id, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local l = redis.call('HGET', p..':lease', id)
if not l or string.sub(l, 1, #lease_id + #who + 2) ~= lease_id..'|'..who..'|' then return 0 end
redis.call('HDEL', p..':lease', id)
redis.call('ZREM', p..':leases', id)
if redis.call('HGET', p..':holding', who) == id then redis.call('HDEL', p..':holding', who) end
redis.call('HSET', p..':by:'..id, who, 's')
redis.call('EXPIRE', p..':by:'..id, ttl)
redis.call('ZADD', p..':ready', redis.call('HGET', p..':score', id), id)
redis.call('HINCRBY', p..':stats', 'skipped', 1)
return 1
"""

_REAP_NOW = _REAP + "return reap(ARGV[1], tonumber(ARGV[2]))"


def review_prefix(settings) -> str:
    """Redis key prefix of the review queue and the reviewer accounts of one flywheel (app id)."""
    return f"{settings.app_id}:review"


class LeaseLost(Exception):
    """The lease ended (expired and given to someone else, or already used): the verdict is refused."""


@dataclass(frozen=True)
class Lease:
    item: ReviewItem
    lease_id: str
    expires_ms: int
    round: int  # 2 for the second reviewer of an overlap item
    started_ms: int = 0  # when this reviewer first leased it (a reload renews, never restarts, a lease)


@dataclass(frozen=True)
class QueueStats:
    ready: int
    leased: int
    oldest_age_s: float  # of the oldest item not yet fully reviewed; 0 when empty
    outbox: int  # verdicts not yet on Kafka
    counts: dict[
        str, int
    ]  # queued, verdicts, passed, failed, agree, disagree, expired, skipped, completed, over_budget

    @property
    def depth(self) -> int:
        return self.ready + self.leased


class ReviewQueue:
    def __init__(self, client: Any, prefix: str, lease_ms: int = 600_000, clock: Callable[[], float] = time.time):
        self.redis = client
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.clock = clock
        self._enqueue = client.register_script(_ENQUEUE)
        self._lease = client.register_script(_LEASE)
        self._submit = client.register_script(_SUBMIT)
        self._release = client.register_script(_RELEASE)
        self._reap = client.register_script(_REAP_NOW)

    @property
    def calibration_key(self) -> str:
        """Where `flywheel calibrate` leaves its last report (the review page exports it as metrics)."""
        return f"{self.prefix}:calibration"

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def enqueue(self, items: Sequence[ReviewItem], budget: int = 0) -> list[str]:
        """'queued', 'duplicate' (queued before: replays are harmless) or 'budget' per item.
        `budget` caps the items of one window, across every worker; 0 means no cap."""
        if not items:
            return []
        now = self._now()
        args: list[Any] = [self.prefix, now, budget, KNOWN_TTL_S]
        for item in items:
            item.enqueued_at = now
            args += [
                item.item_id,
                item.to_json(),
                item.priority,
                item.reviews_needed,
                item.window,
                item.task_type or "-",
            ]
        return [s.decode() if isinstance(s, bytes) else s for s in self._enqueue(args=args)]

    def lease(self, reviewer: str) -> Lease | None:
        """The reviewer's current item (renewed), or the first in priority order they have not seen."""
        got = self._lease(args=[self.prefix, self._now(), self.lease_ms, reviewer, uuid.uuid4().hex])
        if not got:
            return None
        item_id, lease_id, expires, raw, rounds, started = got
        return Lease(ReviewItem.from_json(raw), _text(lease_id), int(expires), int(rounds), int(started))

    def submit(self, lease: Lease, reviewer: str, verdict: ReviewVerdict) -> int:
        """Ends the lease and records the verdict for the relay, in one step. Returns the round."""
        verdict.check()
        status, rounds = self._submit(
            args=[
                self.prefix,
                self._now(),
                reviewer,
                lease.lease_id,
                lease.item.item_id,
                "1" if verdict.passed else "0",
                json.dumps(verdict.to_dict()),
                KNOWN_TTL_S,
            ]
        )
        if _text(status) != "ok":
            raise LeaseLost(f"the lease on {lease.item.item_id} ended before the verdict; it was not recorded")
        return int(rounds)

    def release(self, lease: Lease, reviewer: str) -> bool:
        """Skip: the item goes back to its place, and is not offered to this reviewer again."""
        return bool(self._release(args=[self.prefix, reviewer, lease.lease_id, lease.item.item_id, KNOWN_TTL_S]))

    def reap(self) -> int:
        """Put expired leases back (leasing and stats do it too); returns how many."""
        return int(self._reap(args=[self.prefix, self._now()]))

    def stats(self) -> QueueStats:
        self.reap()
        p = self.prefix
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(f"{p}:ready")
        pipe.zcard(f"{p}:leases")
        pipe.zrange(f"{p}:age", 0, 0, withscores=True)
        pipe.xlen(f"{p}:outbox")
        pipe.hgetall(f"{p}:stats")
        ready, leased, oldest, outbox, counts = pipe.execute()
        age = max(0.0, (self._now() - oldest[0][1]) / 1000) if oldest else 0.0
        return QueueStats(int(ready), int(leased), age, int(outbox), {_text(k): int(v) for k, v in counts.items()})

    def reviewer_count(self, reviewer: str) -> int:
        return int(self.redis.hget(f"{self.prefix}:count", reviewer) or 0)

    def window_counts(self, window: int) -> dict[str, int]:
        """Items sampled in a window, by task type ('*' is the total; '-' the items without one)."""
        return {_text(k): int(v) for k, v in self.redis.hgetall(f"{self.prefix}:window:{window}").items()}

    # -- the verdict outbox ----------------------------------------------------------------------
    def outbox(self, count: int = 500) -> list[tuple[str, ReviewVerdict]]:
        entries = self.redis.xrange(f"{self.prefix}:outbox", "-", "+", count=count)
        return [(_text(eid), ReviewVerdict.from_dict(json.loads(fields[b"verdict"]))) for eid, fields in entries]

    def ack(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            self.redis.xdel(f"{self.prefix}:outbox", *entry_ids)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
