"""`flywheel ingest` as a process against the real broker: authentication, the same refusals the join
gives (reason for reason), 429 with Retry-After when the producer queue is full, and no event lost or
duplicated while clients keep sending across a restart of the ingest process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from flywheel.embedded import free_port
from flywheel.topics import create_topics
from schemas.codec import Codec
from streams.join.core import INTERACTION, ACTION, DictStore, JoinCore, Record
from tests.integration.helpers import settings_env
from tests.integration.test_openai_shapes import consume

pytestmark = pytest.mark.integration
codec = Codec()
TOKEN = "tok-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Ingest:
    def __init__(self, settings, port: int, *extra: str):
        self.settings, self.port, self.extra = settings, port, extra
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Ingest":
        env = {**settings_env(self.settings), "FLYWHEEL_INGEST_TOKENS": f"other-token,{TOKEN}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "ingest", "--port", str(self.port), *self.extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()[-2000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("ingest did not start")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


@pytest.fixture
def ingest(settings):
    create_topics(settings)
    servers = []

    def make(*extra, settings_=None):
        s = Ingest(settings_ or settings, free_port(), *extra)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def interaction(rid: str, **kw) -> dict:
    e = {
        "request_id": rid,
        "session_id": "s",
        "user_id": "u",
        "event_time": int(time.time() * 1000),
        "model_version": "m",
        "messages": [{"role": "user", "content": f"question {rid} — ünï"}],
        "response": "answer",
        "retrieved_context": ["a passage"],
    }
    e.update(kw)
    return e


def join_reason(kind: str, body: bytes) -> str | None:
    """What the join does with these bytes sent as a JSON record: its dead-letter reason, or None."""
    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=1800_000,
        watermark_delay_ms=0,
        marker_horizon_ms=86_400_000,
        max_event_bytes=256 * 1024,
        max_event_ahead_ms=15 * 60_000,
    )
    try:
        key = json.loads(body).get("request_id", "").encode() or None
    except Exception:
        key = None
    out = j.apply_all(
        [
            Record(
                INTERACTION if kind == "interaction" else ACTION,
                "t",
                0,
                0,
                key,
                body,
                {"content-type": b"application/json"},
                int(time.time() * 1000),
            )
        ]
    )
    return out.deadletters[0].reason if out.deadletters else None


def test_auth_and_refusals_are_the_joins_own(ingest):
    srv = ingest().start()
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        body = json.dumps(interaction("r-auth")).encode()
        assert http.post("/v1/interactions", content=body).status_code == 401
        r = http.post("/v1/interactions", content=body, headers={"Authorization": "Bearer tok-wrong"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert (
            http.post("/v1/interactions", content=body, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        )
        r = http.post("/v1/interactions", content=body, headers=AUTH)
        assert r.status_code == 200 and r.json() == {"accepted": 1, "request_ids": ["r-auth"]}

        now = int(time.time() * 1000)
        hostile = [
            ("interaction", b"{" * 3 + b"[" * 40 + b"]" * 40 + b"}" * 3),
            ("interaction", b'{"request_id": "x", "oops": 1}'),
            ("interaction", json.dumps(interaction("r1", unknown_field="x")).encode()),
            (
                "interaction",
                json.dumps(interaction("r2", messages=[{"role": "user", "content": "x"}] * 1025)).encode(),
            ),
            ("interaction", json.dumps(interaction("r3", messages=[{"role": "robot", "content": "x"}])).encode()),
            ("interaction", json.dumps(interaction("r4", messages=[{"role": "tool", "content": "x"}])).encode()),
            (
                "interaction",
                json.dumps(interaction("r5", messages=[{"role": "user", "content": [[[[[["deep"]]]]]]}])).encode(),
            ),
            ("interaction", json.dumps(interaction("r6", event_time=now + 3_600_000)).encode()),
            ("interaction", json.dumps(interaction("r7", event_time=1_700_000_000)).encode()),
            (
                "interaction",
                json.dumps(
                    interaction(
                        "",
                    )
                ).encode(),
            ),
            ("interaction", json.dumps(interaction("r8", latency_ms="fast")).encode()),
            ("interaction", json.dumps(interaction("r9", response="x" * 200_001)).encode()),
            ("interaction", b'{"request_id": "r10", "event_time": 1e999}'),
            ("interaction", b'{"request_id": "r11", "event_time": ' + b"9" * 5000 + b"}"),
            ("interaction", b"\xff\xfe not utf-8"),
            ("interaction", b"[1, 2]"),
            (
                "action",
                json.dumps({"request_id": "r12", "user_id": "u", "event_time": now, "action": "loved"}).encode(),
            ),
            (
                "action",
                json.dumps({"request_id": "r13", "user_id": "u", "event_time": now, "action": "corrected"}).encode(),
            ),
            (
                "action",
                json.dumps(
                    {"request_id": "r14", "user_id": "u", "event_time": now, "action": "rated", "rating": 9}
                ).encode(),
            ),
        ]
        for kind, raw in hostile:
            r = http.post(f"/v1/{kind}s", content=raw, headers=AUTH)
            expected = join_reason(kind, raw)
            assert expected is not None, raw[:80]
            assert (r.status_code, r.json()["error"]) == (400, expected), (raw[:80], r.text[:300])
        # a batch is all or nothing; the refusal names the event
        batch = {
            "interactions": [interaction("b1"), interaction("b2", messages=[{"role": "robot", "content": "x"}])],
            "actions": [{"request_id": "b1", "user_id": "u", "event_time": now, "action": "accepted"}],
        }
        r = http.post("/v1/batch", json=batch, headers=AUTH)
        assert r.status_code == 400 and r.json()["error"] == "invalid_event" and r.json()["index"] == 1
        batch["interactions"].pop()
        r = http.post("/v1/batch", json=batch, headers=AUTH)
        assert r.status_code == 200 and r.json()["accepted"] == 2
        assert (
            http.post(
                "/v1/batch", json={"interactions": [interaction(f"m{i}") for i in range(1001)]}, headers=AUTH
            ).json()["error"]
            == "too_many_items"
        )
        # an OpenAI-shaped call
        r = http.post(
            "/v1/openai",
            headers=AUTH,
            json={
                "request": {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]},
                "user_id": "u-oa",
                "feedback": "up",
                "response": {
                    "id": "chatcmpl-h1",
                    "created": now // 1000,
                    "model": "gpt-x",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
                },
            },
        )
        assert r.status_code == 200 and r.json() == {"accepted": 2, "request_ids": ["chatcmpl-h1", "chatcmpl-h1"]}
        health = http.get("/healthz").json()
        assert health["accepted_events"] == 5 and health["refused"]["unauthorized"] == 3
    assert srv.stop() == 0
    got = {
        codec.decode("interaction", m.value())["request_id"]
        for m in consume(srv.settings, srv.settings.topics.interactions, 3)
    }
    assert got == {"r-auth", "b1", "chatcmpl-h1"}


def test_429_with_retry_after_when_the_producer_queue_is_full(ingest, settings):
    # a broker that does not answer: events wait in the producer queue, the budget fills
    srv = ingest(
        "--max-pending",
        "10",
        "--retry-after",
        "3",
        settings_=settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}"),
    )
    srv.start()
    hung = {}

    def first():
        try:
            hung["r"] = httpx.post(
                srv.url + "/v1/batch",
                headers=AUTH,
                timeout=120,
                json={"interactions": [interaction(f"q{i}") for i in range(8)]},
            )
        except httpx.HTTPError as exc:
            hung["r"] = exc

    t = threading.Thread(target=first, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while httpx.get(srv.url + "/healthz").json()["pending"] < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = httpx.post(
        srv.url + "/v1/batch", headers=AUTH, json={"interactions": [interaction(f"z{i}") for i in range(5)]}
    )
    assert r.status_code == 429 and r.headers["Retry-After"] == "3" and r.json()["error"] == "busy"
    assert httpx.get(srv.url + "/healthz").json()["throttled"] >= 1
    srv.proc.kill()
    srv.proc.wait()


def test_no_event_lost_or_duplicated_across_a_restart(ingest, settings):
    srv = ingest("--max-pending", "2000").start()
    total, per_request, clients = 3000, 20, 4
    ids = [f"rs-{i:05d}" for i in range(total)]
    chunks = [ids[i : i + per_request] for i in range(0, total, per_request)]
    stats = {"retries": 0, "throttled": 0, "done": 0}
    lock = threading.Lock()

    def client(my_chunks):
        with httpx.Client(base_url=srv.url, timeout=60, headers=AUTH) as http:
            for chunk in my_chunks:
                batch = {
                    "interactions": [interaction(r) for r in chunk],
                    "actions": [
                        {"request_id": r, "user_id": "u", "event_time": int(time.time() * 1000), "action": "accepted"}
                        for r in chunk[::2]
                    ],
                }
                while True:
                    try:
                        r = http.post("/v1/batch", json=batch)
                    except httpx.TransportError:  # the server is restarting: not taken, send again
                        with lock:
                            stats["retries"] += 1
                        time.sleep(0.05)
                        continue
                    if r.status_code in (429, 503):
                        with lock:
                            stats["throttled"] += 1
                        time.sleep(float(r.headers.get("Retry-After", "1")) / 10)
                        continue
                    assert r.status_code == 200, r.text
                    with lock:
                        stats["done"] += 1
                    break

    threads = [threading.Thread(target=client, args=(chunks[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while stats["done"] < len(chunks) // 4:  # a quarter through
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert srv.stop(signal.SIGTERM) == 0  # drains: requests held are answered after their confirmations
    done_at_restart = stats["done"]
    srv.start()  # same port: clients that found it closed send again
    for t in threads:
        t.join(300)
        assert not t.is_alive()
    assert srv.stop() == 0
    assert stats["retries"] > 0 and done_at_restart < len(chunks)  # the restart did happen under load
    got = [m.key().decode() for m in consume(settings, settings.topics.interactions, total, timeout=60)]
    assert len(got) == total and sorted(got) == ids  # every one, once
    acts = [m.key().decode() for m in consume(settings, settings.topics.actions, total // 2, timeout=60)]
    assert len(set(acts)) == len(acts) == total // 2
