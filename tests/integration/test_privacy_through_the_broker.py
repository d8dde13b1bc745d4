"""Names and secrets through the real broker, the worker's gate and review sampler: written the way
people paste them into an assistant, none of them reaches the passed or rejected topic, the review
queue, the worker's log or its /metrics in clear; a candidate carrying a credential is rejected as
`secret_found`."""

from __future__ import annotations

import time

import pytest
import redis

from flywheel.sdk import FlywheelProducer
from flywheel.topics import create_topics
from streams.review.queue import review_prefix
from tests.integration.helpers import WorkerProcess, forget_redis, read_all, wait_for

pytestmark = pytest.mark.integration

NAMES = ["Margarethe Vollenweider", "Dr. Oluwaseun Adeyemi-Hart", "siobhan o'flaherty", "Ms. Katarzyna Wiśniewska"]
SECRETS = [
    "AKIAZ7Q4VN2KX3JH8PLM",
    "ghp_R8sV2mK9qL4wX7tB1nC6dF3hJ5pA0zE2yU4i",
    "sk-proj-Qm7vT2xK9pL4wR8nB3cF6hJ1dS5gA0zE7yU2iO9",
    "correct-horse-battery-staple-42",
]
TEXTS = [
    (
        f"Please write a short thank-you note to {NAMES[0]} for hosting the team offsite last week, warm but brief.",
        None,
    ),
    (
        f"Patient {NAMES[1]} reports chest pain since Tuesday; draft a referral letter to cardiology with the history.",
        None,
    ),
    (f"hey can you help me reply to {NAMES[2]}, she asked whether the invoice from march was paid already", None),
    (f"Summarise this email from {NAMES[3]} about the quarterly budget review and list the action items.", None),
    (
        f"My deploy fails with AccessDenied. Config: aws_access_key_id = {SECRETS[0]} region eu-west-1. What is wrong?",
        SECRETS[0],
    ),
    (
        f"git push asks for a password, I set GITHUB_TOKEN={SECRETS[1]} in my shell, why does it still fail?",
        SECRETS[1],
    ),
    (f'Why does the OpenAI client say 401? I call OpenAI(api_key="{SECRETS[2]}") in my script.', SECRETS[2]),
    (f"My laptop password is {SECRETS[3]} and it stopped working after the update, how do I reset it?", SECRETS[3]),
]
ANSWER = (
    "Here is a careful answer with enough words to be a useful training example for the assistant, "
    "explaining the steps one by one and what to check first."
)


def test_names_and_secrets_never_leave_the_gate_in_clear(settings, tmp_path):
    s = settings.replace(roles="join,gate,review", gate_batch_size=16, gate_batch_ms=100)
    create_topics(s)
    t0 = int(time.time() * 1000) - 3_600_000
    worker = WorkerProcess(s, tmp_path)
    try:
        with FlywheelProducer(s) as sdk:
            for i, (prompt, _) in enumerate(TEXTS):
                rid = f"privacy-{i}"
                sdk.log_interaction(
                    request_id=rid,
                    session_id=f"s{i}",
                    user_id=f"u{i}",
                    model_version="m1",
                    prompt=prompt,
                    response=ANSWER,
                    event_time=t0 + i * 1000,
                    task_type="chat",
                )
                sdk.log_action(request_id=rid, user_id=f"u{i}", action="accepted", event_time=t0 + i * 1000 + 5_000)
            sdk.heartbeat(t0 + 40 * 60_000)
            sdk.flush(30)

        def decisions():
            return read_all(s, s.topic_passed, "candidate") + read_all(s, s.topic_rejected, "candidate")

        wait_for(lambda: len({k for k, _, _ in decisions()}) >= len(TEXTS), 240, interval=2, what="every decision")
        time.sleep(2)
        metrics = worker.metrics()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    records = decisions()
    by_id = {k.decode(): c for k, _, c in records}
    blob = b"\n".join(raw for _, raw, _ in records)
    client = redis.Redis.from_url(s.redis_url)
    queue = b"".join(client.hvals(f"{review_prefix(s)}:items"))
    log = worker.log_path.read_bytes()
    for value in NAMES + SECRETS:
        for where, text in (
            ("the gate's topics", blob),
            ("the review queue", queue),
            ("the worker's log", log),
            ("/metrics", metrics.encode()),
        ):
            assert value.encode() not in text, f"{value!r} in {where}"
            assert value.split()[-1].encode() not in text or len(value.split()[-1]) < 6, (
                f"{value!r}'s surname in {where}"
            )
    for i, (_, secret) in enumerate(TEXTS):
        c = by_id[f"privacy-{i}"]
        if secret:
            assert "secret_found" in c["reasons"], (i, c["reasons"])
        else:
            assert "pii_redacted" in c["notes"] and c["redactions"], (i, c["redactions"])
    forget_redis(s)
