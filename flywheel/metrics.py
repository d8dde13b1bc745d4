"""Metrics every role needs, whatever layer it lives in: serving `/metrics`, and the counters of
records a consumer could not use (a record can fail; a worker cannot: flywheel/deadletter.py)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, start_http_server

__all__ = ["serve_metrics", "ConsumerMetrics", "consumer_metrics"]


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0"):
    """Expose /metrics; port 0 disables."""
    if port:
        return start_http_server(port, addr=addr, registry=registry)
    return None


class ConsumerMetrics:
    """Records a consumer could not use (a record can fail; a worker cannot: flywheel/deadletter.py).
    Labels: the consumer (gate, review, rollout, guards, relay, trainer) and the reason code."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.deadletters = Counter(
            "flywheel_consumer_deadletters_total",
            "Records a consumer could not decode, validate or process and sent to the dead-letter "
            "topic, by consumer and reason code.",
            ["consumer", "reason"],
            registry=r,
        )
        self.skipped = Counter(
            "flywheel_consumer_skipped_total",
            "Undecodable records a consumer left to the one that owns their dead letters (the gate, for "
            "joined candidates), by consumer and reason code.",
            ["consumer", "reason"],
            registry=r,
        )


_CONSUMER_METRICS: "weakref.WeakKeyDictionary[CollectorRegistry, ConsumerMetrics]" = weakref.WeakKeyDictionary()


def consumer_metrics(registry: CollectorRegistry | None = None) -> ConsumerMetrics:
    """The one ConsumerMetrics of `registry`: the runners of a worker share its registry, where a
    metric name registers once. Without a registry, one of its own."""
    if registry is None:
        return ConsumerMetrics()
    metrics = _CONSUMER_METRICS.get(registry)
    if metrics is None:
        metrics = _CONSUMER_METRICS[registry] = ConsumerMetrics(registry)
    return metrics
