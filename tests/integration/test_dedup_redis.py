"""The duplicate filter on a real Redis: shared by workers, TTLs, no text, round trips per batch."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from streams.gate.dedup import DEFAULT_TTL_S, DuplicateCheck, DuplicateIndex, RedisBandStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TTL = 3600


def words(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9))) + f"q{i}"
            for i in range(n)]


def text(n: int, seed: int) -> str:
    return " ".join(words(n, seed))


def change(t: str, *positions: int) -> str:
    ws = t.split()
    for p in positions:
        ws[p] = f"zz{p}"
    return " ".join(ws)


def counting_client(url: str):
    """A redis-py client that counts what it writes to its sockets: one send per round trip
    (a pipeline or a script call is one send; so is a single command)."""

    class CountingConnection(redis.Connection):
        sends = 0

        def send_packed_command(self, command, check_health=True):
            CountingConnection.sends += 1
            return super().send_packed_command(command, check_health)

    client = redis.Redis.from_url(url, connection_class=CountingConnection)
    client.ping()  # connect (and its handshake) before anyone counts
    return client, CountingConnection


@pytest.fixture
def prefix(redis_url):
    p = f"test:dedup:{uuid.uuid4().hex[:12]}"
    yield p
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{p}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def all_keys(client, prefix) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:*", count=1000))


def test_exact_near_different_and_replays(client, prefix):
    idx = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL))
    base, other = text(60, 1), text(60, 2)
    idx.add([("a", base)])
    rs = idx.check([
        ("b", "  " + base.upper().replace(" ", " \n ") + "!"),  # exact after normalisation
        ("c", change(base, 30)),  # one word of 60 changed
        ("d", other),
        ("a", base),  # the added item itself, replayed
    ])
    assert rs[0] == DuplicateCheck("a", None, 1.0)
    assert rs[1].near_of == "a" and rs[1].exact_of is None and rs[1].similarity >= 0.85
    assert rs[2] == DuplicateCheck(None, None, 0.0)
    assert rs[3] == DuplicateCheck(None, None, 0.0)

    idx.add([("d", other)])
    snapshot = {k: (client.type(k), client.dump(k)) for k in all_keys(client, prefix)}
    idx.add([("a", base), ("d", other), ("d", other)])  # again: changes nothing
    assert {k: (client.type(k), client.dump(k)) for k in all_keys(client, prefix)} == snapshot
    assert idx.check([("d", other)]) == [DuplicateCheck(None, None, 0.0)]


def test_within_batch_and_half_similar_pair(client, prefix):
    strict = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL))
    t = text(60, 3)
    rs = strict.check([("a", t), ("b", t.lower()), ("c", change(t, 9)), ("d", text(60, 4))])
    assert [(r.exact_of, r.near_of) for r in rs] == [(None, None), ("a", None), (None, "a"), (None, None)]
    assert not any(r.is_duplicate for r in strict.check([("a", t), ("b", t)], within_batch=False))

    base = text(60, 5)
    half = " ".join(base.split()[:40] + words(20, 6))  # true Jaccard 38/78
    loose = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL), threshold=0.4)
    for idx in (strict, loose):
        idx.add([("h1", base)])
    assert strict.check([("h2", half)]) == [DuplicateCheck(None, None, 0.0)]
    [r] = loose.check([("h2", half)])
    assert r.near_of == "h1" and 0.35 < r.similarity < 0.65


def test_two_workers_share_the_index(redis_url, prefix):
    """Two processes: one adds, the other (fresh interpreter, other hash seed) finds its items."""
    base, other = text(80, 7), text(80, 8)
    code = (
        "import sys, redis\n"
        "from streams.gate.dedup import DuplicateIndex, RedisBandStore\n"
        "idx = DuplicateIndex(RedisBandStore(redis.Redis.from_url(sys.argv[1]), sys.argv[2], ttl_s=3600))\n"
        "idx.add([('w1-a', sys.argv[3]), ('w1-b', sys.argv[4])])\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="777")
    subprocess.run([sys.executable, "-c", code, redis_url, prefix, base, other], cwd=ROOT, env=env, check=True,
                   timeout=60)

    worker2 = DuplicateIndex(RedisBandStore(redis.Redis.from_url(redis_url), prefix, ttl_s=TTL))
    rs = worker2.check([("w2-a", base + " ..."), ("w2-b", change(other, 40)), ("w2-c", text(80, 9))])
    assert rs[0] == DuplicateCheck("w1-a", None, 1.0)
    assert rs[1].near_of == "w1-b"
    assert not rs[2].is_duplicate

    # both pass the same new text before either adds it: the first writer owns the exact key
    worker3 = DuplicateIndex(RedisBandStore(redis.Redis.from_url(redis_url), prefix, ttl_s=TTL))
    fresh = text(80, 10)
    assert not worker2.check([("w2-x", fresh)])[0].is_duplicate
    assert not worker3.check([("w3-x", fresh)])[0].is_duplicate
    worker2.add([("w2-x", fresh)])
    worker3.add([("w3-x", fresh)])
    assert worker3.check([("w3-y", fresh)])[0].exact_of == "w2-x"
    assert worker2.check([("w2-x", fresh)])[0].exact_of is None  # its own replay is still clean


def test_keys_carry_the_ttl_and_buckets_forget_old_members(client, prefix, monkeypatch):
    idx = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL))
    t = text(60, 11)
    idx.add([("a", t), ("b", text(60, 12))])
    keys = all_keys(client, prefix)
    assert len(keys) == 2 * (2 + idx.bands)  # exact, signature and one bucket per band, per item
    assert all(0 < client.ttl(k) <= TTL for k in keys)
    assert {client.type(k) for k in keys} == {b"string", b"zset"}

    # an item added more than the TTL ago leaves its buckets at the next write to them
    import streams.gate.dedup as dedup

    old_text = "an old text that someone wrote long ago, now forgotten"
    then = dedup.time.time() - 2 * TTL
    monkeypatch.setattr(dedup.time, "time", lambda: then)
    idx.add([("old", old_text)])
    monkeypatch.undo()
    buckets = [f"{prefix}:b:{t}" for t in idx._prepare("old", old_text).entry.bands]
    assert all(client.zscore(k, "old") == int(then) for k in buckets)
    idx.add([("new", "An old text that someone wrote long ago, now forgotten!")])  # the same buckets
    assert all(client.zscore(k, "old") is None and client.zscore(k, "new") for k in buckets)

    forever = f"{prefix}:forever"
    DuplicateIndex(RedisBandStore(client, forever, ttl_s=None)).add([("f", t)])
    assert all(client.ttl(k) == -1 for k in all_keys(client, forever))
    assert DEFAULT_TTL_S == 35 * 24 * 3600


def test_no_key_or_value_holds_the_text(client, prefix):
    idx = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL))
    secret = "Patient Zanzibarquux Wellington reported Ouagadougou symptoms yesterday"
    idx.add([("id-1", secret), ("id-2", "short secret")])
    idx.add([("id-3", secret + " and more Zanzibarquux")])
    tokens = [w.lower().encode() for w in (secret + " short secret").split() if len(w) >= 5]
    tokens += [w.encode() for w in secret.split() if len(w) >= 5]
    keys = all_keys(client, prefix)
    assert keys
    for k in keys:
        if client.type(k) == b"zset":
            values = client.zrange(k, 0, -1)
        else:
            values = [client.get(k)]
        for blob in [k, *values]:
            assert not any(tok in blob for tok in tokens), (k, blob)
            assert secret.encode() not in blob and b"short secret" not in blob


def test_round_trips_per_batch_are_constant(redis_url, prefix):
    client, conn = counting_client(redis_url)
    idx = DuplicateIndex(RedisBandStore(client, prefix, ttl_s=TTL))
    seeded = [(f"s{i}", text(60, 100 + i)) for i in range(100)]
    idx.add(seeded[:1])  # loads the write script (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA)

    counts = {}
    for n in (1, 10, 100):
        conn.sends = 0
        idx.add(seeded[:n])
        counts["add", n] = conn.sends
        batch = [(f"c{n}-{i}", change(t, 7)) for i, (_, t) in enumerate(seeded[:n])]  # near copies
        batch += [(f"d{n}-{i}", text(60, 10_000 * n + i)) for i in range(n)]  # new texts
        conn.sends = 0
        rs = idx.check(batch)
        counts["check", n] = conn.sends
        assert sum(r.near_of is not None for r in rs) >= 0.9 * n
        conn.sends = 0
        idx.check(batch[n:])  # nothing near: no signature fetch
        counts["check-new", n] = conn.sends
    assert counts == {**{("add", n): 1 for n in (1, 10, 100)},
                      **{("check", n): 2 for n in (1, 10, 100)},
                      **{("check-new", n): 1 for n in (1, 10, 100)}}


def test_a_decoding_client_is_refused(redis_url, prefix):
    with pytest.raises(ValueError, match="decode_responses"):
        RedisBandStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix)
