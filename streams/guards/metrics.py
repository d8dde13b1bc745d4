"""The monitors' metrics: labels are monitor, action, hold target and model version (bounded by `Cap`)."""

from __future__ import annotations

from typing import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.guards.monitors import Signal


class GuardMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.value = Gauge(
            "flywheel_guard_value",
            "A negative-flywheel monitor's value over the recent window.",
            ["monitor"],
            registry=r,
        )
        self.bound = Gauge(
            "flywheel_guard_bound", "The policy's bound on the monitor's value.", ["monitor"], registry=r
        )
        self.firing = Gauge(
            "flywheel_guard_firing", "1 while the monitor is past its bound and significant.", ["monitor"], registry=r
        )
        self.judged = Gauge(
            "flywheel_guard_judged",
            "1 when the recent window holds enough data to judge the monitor.",
            ["monitor"],
            registry=r,
        )
        self.actions = Counter(
            "flywheel_guard_actions_total",
            "Actions the monitors took (pause_rollout, hold_datasets).",
            ["monitor", "action"],
            registry=r,
        )
        self.hold = Gauge("flywheel_guard_hold", "1 while a hold is on (target: datasets).", ["target"], registry=r)
        self.counted = Counter(
            "flywheel_guard_counted_total", "Records counted by the monitors, by kind.", ["kind"], registry=r
        )
        self.acceptance = Gauge(
            "flywheel_satisfaction_acceptance_ratio",
            "Accepted or copied answers per request over the recent window, by model version.",
            ["version"],
            registry=r,
        )
        self.feedback = Gauge(
            "flywheel_satisfaction_feedback_ratio",
            "Thumbs (up or down) per request over the recent window, by model version.",
            ["version"],
            registry=r,
        )
        self.positive = Gauge(
            "flywheel_satisfaction_positive_ratio",
            "Thumbs up per thumb over the recent window, by model version.",
            ["version"],
            registry=r,
        )
        self.requests = Gauge(
            "flywheel_satisfaction_requests",
            "Joined requests in the recent window, by model version.",
            ["version"],
            registry=r,
        )
        self._versions: set[str] = set()

    def observe(
        self,
        signals: Sequence[Signal],
        satisfaction: Mapping[str, Mapping[str, float]],
        holds: Mapping[str, dict],
        targets: Sequence[str],
    ) -> None:
        for s in signals:
            self.value.labels(s.monitor).set(s.value)
            self.bound.labels(s.monitor).set(s.bound)
            self.firing.labels(s.monitor).set(1.0 if s.firing else 0.0)
            self.judged.labels(s.monitor).set(1.0 if s.judged else 0.0)
        for t in targets:
            self.hold.labels(t).set(1.0 if t in holds else 0.0)
        gauges = {
            "acceptance": self.acceptance,
            "feedback": self.feedback,
            "positive": self.positive,
            "requests": self.requests,
        }
        for gone in self._versions - set(satisfaction):  # a version out of the recent window leaves no stale series
            for g in gauges.values():
                g.remove(gone)
        for version, figures in satisfaction.items():
            for name, g in gauges.items():
                g.labels(version).set(figures[name])
        self._versions = set(satisfaction)
