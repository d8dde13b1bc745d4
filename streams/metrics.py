"""The worker's Prometheus metrics, on a registry of its own (no process-wide globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.4, 0.5,
                   0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class JoinMetrics:
    """Label values are bounded: input kind, action, label and reason codes; never ids or text."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "flywheel_events_consumed_total", "Events read from the source topics, by input (interaction, action).",
            ["input"], registry=r)
        self.candidates = Counter(
            "flywheel_candidates_total", "Training candidates emitted by the join, by resolved user action and label.",
            ["user_action", "label"], registry=r)
        self.deadletters = Counter(
            "flywheel_deadletters_total", "Records sent to the dead-letter topic, by reason code.", ["reason"], registry=r)
        self.duplicates = Counter(
            "flywheel_join_duplicates_total", "Events seen again (producer retries, replays after a restart) and ignored.",
            registry=r)
        self.pending = Gauge(
            "flywheel_join_pending_requests", "Requests (and settled markers) held in join state by this worker.", registry=r)
        self.watermark = Gauge(
            "flywheel_join_watermark_seconds", "Event-time watermark per source partition (Unix seconds).",
            ["partition"], registry=r)
        self.latency = Histogram(
            "flywheel_join_latency_seconds",
            "Wall time from the append of the record that let a request settle to the candidate's emission.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "flywheel_join_batch_seconds", "Time spent joining one batch of records.", buckets=LATENCY_BUCKETS, registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Expose /metrics; port 0 disables."""
        if port:
            return start_http_server(port, addr=addr, registry=self.registry)
        return None
