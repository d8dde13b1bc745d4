"""Where the velocity report's figures come from: the flywheel's own topics (no monitoring stack
needed), or a Prometheus server's history of the same metrics."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any, Callable

from flywheel.report.velocity import Velocity, build, window_of
from flywheel.settings import DAY_MS, Settings
from flywheel.tail import read
from trainer.phase import PHASES

ACCEPTING = ("accepted", "copied")


def _counter(progress: Any) -> Callable[[int], object] | None:
    """A bar's `update`, or the callable itself: from_topics counts each record read through it."""
    if progress is None:
        return None
    update = getattr(progress, "update", progress)
    if not callable(update):
        raise TypeError(f"progress must be callable or have update(n), not {type(progress).__name__}")
    return update


def _events(
    settings: Settings, topic: str, max_events: int | None = None, progress: Callable[[int], object] | None = None
) -> list[dict]:
    out = []
    for r in read(settings, topic, to_end=True, idle_timeout=3.0, max_events=max_events):
        if progress is not None:
            progress(1)
        if isinstance(r.get("event"), dict) and "raw" not in r["event"]:
            out.append(r["event"])
    return out


def from_topics(
    settings: Settings, window_days: int = 7, max_requests: int = 1_000_000, progress: Any = None
) -> Velocity:
    """The report's figures read from the topics. `progress` (a bar with update(n), or a callable
    taking n) is advanced once per record read, so the CLI can draw a bar over this same reading."""
    update = _counter(progress)
    window_ms = window_days * DAY_MS
    ready = _events(settings, settings.topic_datasets_ready, progress=update)
    models = sorted(_events(settings, settings.topic_models, progress=update), key=lambda e: e.get("created_at", 0))
    verdicts = [v.get("event_time", 0) for v in _events(settings, settings.topic_verdicts, progress=update)]
    acceptance: dict[tuple[str, int], tuple[int, int]] = {}
    users: dict[int, set] = {}  # only their counts leave this function
    newest = 0
    for c in _events(settings, settings.topic_candidates, max_requests, progress=update):
        t = c.get("timestamp", 0)
        key = (c.get("model_version") or "-", window_of(t, window_ms))
        n, accepted = acceptance.get(key, (0, 0))
        acceptance[key] = (n + 1, accepted + (c.get("user_action") in ACCEPTING))
        users.setdefault(key[1], set()).add(c.get("user_id"))
        newest = max(newest, t)
    requests: Counter = Counter()  # per window, summed over the versions that served it
    for (_, start), (n, _) in acceptance.items():
        requests[start] += n
    windows = {t: (n, len(users[t])) for t, n in requests.items() if t + window_ms <= newest}  # complete ones only
    return build(ready, models, verdicts, acceptance, window_ms, windows)


class PrometheusError(RuntimeError):
    pass


def _prom(url: str, path: str, params: dict) -> dict:
    full = f"{url.rstrip('/')}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        body = json.loads(urllib.request.urlopen(full, timeout=10).read())
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query Prometheus at {url}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {params.get('query')!r}: {body.get('error')}")
    return body["data"]


def from_prometheus(url: str, since_s: float = 8 * 7 * 86400, points: int = 200) -> Velocity:
    """The same figures as series over time: x is days before now."""
    now = time.time()
    step = max(15.0, since_s / points)

    def series(query: str, label: str | None = None, name: str = "") -> dict[str, list[tuple[float, float]]]:
        data = _prom(url, "query_range", {"query": query, "start": now - since_s, "end": now, "step": step})
        out = {}
        for r in data["result"]:
            key = r["metric"].get(label, name) if label else name
            out[key] = [
                (-(now - float(t)) / 86400, float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")
            ]
        return out

    def latest(query: str) -> dict[str, float]:
        return {
            r["metric"].get("phase", ""): float(r["value"][1]) for r in _prom(url, "query", {"query": query})["result"]
        }

    quality = latest("max(flywheel_production_quality)").get("")
    phases = latest("max by (phase) (flywheel_phase)")
    phase = next((p for p, _ in PHASES if phases.get(p) == 1.0), "cold_start")
    v = Velocity([], None, None, quality, phase)
    v.series = {
        "Golden-set quality": {
            **series('max(flywheel_model_quality{task_type="all"})', name="candidate"),
            **series("max(flywheel_production_quality)", name="production"),
        },
        "Dataset records per cycle": series("sum(flywheel_datasets_records)", name="records"),
        "Gate pass rate": series("max(flywheel_gate_pass_ratio)", name="pass rate"),
        "Acceptance per model version": series(
            "max by (version) (flywheel_satisfaction_acceptance_ratio)", label="version"
        ),
    }
    return v
