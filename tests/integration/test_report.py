"""`flywheel report` from the topics themselves, on the real broker: no monitoring stack needed."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from flywheel.topics import create_topics
from schemas.codec import Codec
from schemas.records import DatasetReady, ModelEvent, ReviewVerdict
from tests.integration.helpers import settings_env
from tests.integration.test_review_worker import produce
from tests.integration.test_rollout import joined

pytestmark = pytest.mark.integration

W = 7 * 86_400_000
T0 = (1_767_225_600_000 // W) * W


def model_event(kind: str, version: str, created: int, **kw) -> ModelEvent:
    return ModelEvent(event_id=uuid.uuid4().hex, event_type=kind, created_at=created, version=version, **kw)


def test_the_report_reads_cycles_from_the_topics_and_writes_plots(settings, tmp_path):
    s = settings
    create_topics(s)
    codec, records = Codec(), []
    for i, (decisions, passed, n) in enumerate([(2000, 1200, 900), (2400, 1500, 1100)]):
        r = DatasetReady(
            dataset_id=f"ds-{i}",
            uri=f"file:///x/ds-{i}",
            window_start=T0 + i * W,
            window_end=T0 + (i + 1) * W,
            lag_ms=14 * 86_400_000,
            policy_version="p@1",
            counts={"records": n, "window.decisions": decisions, "window.passed": passed},
            first_event_time=T0 + i * W,
            sealed_at=T0 + (i + 3) * W,
        )
        records.append((s.topic_datasets_ready, r.dataset_id.encode(), codec.encode("dataset_ready", r.to_dict())))
    events = [
        model_event("bootstrap", "v0001", 1, metrics={"overall": 0.6}, gate_passed=True),
        model_event(
            "candidate",
            "v0002",
            2,
            dataset_id="ds-0",
            metrics={"overall": 0.7},
            deltas={"overall": 0.1},
            incumbent_metrics={"overall": 0.6},
            gate_passed=True,
            time_to_improvement_ms=21 * 86_400_000,
        ),
        model_event("rollout_promote", "v0002", 3, base_model="v0001", gate_passed=True),
    ]
    records += [(s.topic_models, e.version.encode(), codec.encode("model_event", e.to_dict())) for e in events]
    v = ReviewVerdict(
        verdict_id="v-1",
        request_id="r-1",
        reviewer="ann",
        accuracy=4,
        helpfulness=4,
        safety=5,
        passed=True,
        reviewed_at=T0 + 2 * W,
        event_time=T0 + 5,
        gate_passed=True,
    )
    records.append((s.topic_verdicts, b"r-1", codec.encode("verdict", v.to_dict())))
    for i in range(40):
        c = joined("v0001" if i < 20 else "v0002", i % 4 != 0, f"u{i}")
        c.timestamp = T0 + (0 if i < 20 else W) + i
        records.append((s.topic_candidates, c.request_id.encode(), codec.encode("candidate", c.to_dict())))
    produce(s, records)

    page = tmp_path / "velocity.html"
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "report", "--html", str(page)],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "phase bootstrap, production v0002 (golden 70.0%)" in out and "cold start: v0001 at 60.0%" in out
    first = next(line for line in out.splitlines() if line.strip().startswith("1 "))
    assert all(
        x in first for x in ("2,000", "1,200", "60.0%", "900", "70.0%", "+10.0", "21.0d", "candidate", "promoted")
    )
    second = next(line for line in out.splitlines() if line.strip().startswith("2 "))
    assert "pending" in second and "62.5%" in second
    assert "v0001: " in out and "75.0% (n=20)" in out
    assert page.read_text().count("<svg") == 5
    as_json = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "report", "--json"],
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(as_json.stdout)
    assert [c["reviewed"] for c in data["cycles"]] == [1, 0] and data["phase"] == "bootstrap"
    # the candidates' second window is still open (its last event is before its end): only the first counts
    assert data["windows"] == [{"window_start": T0 // W * W, "requests": 20, "users": 20}]
    assert {g["curve"]: g["shape"] for g in data["growth"]} == {
        "quality": "too_short",
        "requests": "too_short",
        "users": "too_short",
    }
