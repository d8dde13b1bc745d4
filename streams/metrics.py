"""The worker's Prometheus metrics, on a registry of its own (no process-wide globals)."""

from __future__ import annotations


from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.gate.filters import FILTER_ERROR

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.06,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class JoinMetrics:
    """Label values are bounded: input kind, action, label and reason codes; never ids or text."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "flywheel_events_consumed_total",
            "Events read from the source topics, by input (interaction, action).",
            ["input"],
            registry=r,
        )
        self.candidates = Counter(
            "flywheel_candidates_total",
            "Training candidates emitted by the join, by resolved user action and label.",
            ["user_action", "label"],
            registry=r,
        )
        self.deadletters = Counter(
            "flywheel_deadletters_total",
            "Records sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "flywheel_join_duplicates_total",
            "Events seen again (producer retries, replays after a restart) and ignored.",
            registry=r,
        )
        self.pending = Gauge(
            "flywheel_join_pending_requests",
            "Requests (and settled markers) held in join state by this worker.",
            registry=r,
        )
        self.watermark = Gauge(
            "flywheel_join_watermark_seconds",
            "Event-time watermark per source partition (Unix seconds).",
            ["partition"],
            registry=r,
        )
        self.latency = Histogram(
            "flywheel_join_latency_seconds",
            "Wall time from the append of the record that let a request settle to the candidate's emission.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "flywheel_join_batch_seconds",
            "Time spent joining one batch of records.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


SCORE_BUCKETS = tuple(round(i * 0.05, 2) for i in range(1, 21))
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_TASK_LABELS = 50  # task types come from the app: past this many, the rest share "other"


class GateMetrics:
    """The quality gate's metrics. Labels are filter names, reason codes, entity types and task
    types (capped): never ids, never text."""

    def __init__(self, registry: CollectorRegistry | None = None, window: int = 1000):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "flywheel_gate_decisions_total", "Gate decisions, by verdict (passed, rejected).", ["verdict"], registry=r
        )
        self.checked = Counter(
            "flywheel_gate_filter_checked_total", "Candidates each filter checked.", ["filter"], registry=r
        )
        self.rejections = Counter(
            "flywheel_gate_filter_rejections_total",
            "Reasons given, by filter and reason code (a candidate can have several).",
            ["filter", "reason"],
            registry=r,
        )
        self.removed = Counter(
            "flywheel_gate_removed_total",
            "Rejected candidates by the first filter that rejected them (the funnel).",
            ["filter"],
            registry=r,
        )
        self.pass_ratio = Gauge("flywheel_gate_pass_ratio", "Share of the last decisions that passed.", registry=r)
        self.filter_pass_ratio = Gauge(
            "flywheel_gate_filter_pass_ratio",
            "Share of the last candidates each filter checked that it did not reject.",
            ["filter"],
            registry=r,
        )
        self.scores = Histogram(
            "flywheel_gate_score",
            "Scores the gate computed, by score name.",
            ["score"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "flywheel_gate_stage_seconds",
            "Time one filter took over one batch.",
            ["filter"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "flywheel_gate_batch_seconds", "Time to decide and write one batch.", buckets=STAGE_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "flywheel_gate_batch_size",
            "Candidates per gate batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.latency = Histogram(
            "flywheel_gate_latency_seconds",
            "Wall time from a candidate's append to the join's output to its gate decision's write.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "flywheel_gate_filter_errors_total",
            "Filter failures after retry (the candidates were rejected with filter_error).",
            ["filter"],
            registry=r,
        )
        self.redactions = Counter(
            "flywheel_gate_redactions_total", "Personal data redacted, by entity type.", ["entity"], registry=r
        )
        self.replays = Counter(
            "flywheel_gate_replays_total",
            "Candidates seen again (a replay after a restart) whose decision was already written.",
            registry=r,
        )
        self.keep_rate = Gauge(
            "flywheel_gate_keep_rate",
            "Rolling share of logged candidates that passed, by task type.",
            ["task_type"],
            registry=r,
        )
        self.keep_threshold = Gauge(
            "flywheel_gate_keep_threshold",
            "Current keep-rate quality quantile, by task type.",
            ["task_type"],
            registry=r,
        )
        self.keep_band = Gauge("flywheel_gate_keep_band", "The configured keep-rate band.", ["edge"], registry=r)
        self._recent: list[bool] = []
        self._recent_filter: dict[str, list[bool]] = {}
        self._window = window
        self._tasks: set[str] = set()

    def task_label(self, task: str) -> str:
        if task in self._tasks:
            return task
        if len(self._tasks) < MAX_TASK_LABELS:
            self._tasks.add(task)
            return task
        return "other"

    def _roll(self, series: list[bool], values: list[bool]) -> float:
        series.extend(values)
        del series[: -self._window]
        return sum(series) / len(series)

    def observe_stage(self, stage: str, seconds: float, n: int) -> None:
        self.stage_seconds.labels(stage).observe(seconds)
        self.checked.labels(stage).inc(n)

    def observe_decisions(self, decisions) -> None:
        passed = [d.passed for d in decisions]
        for verdict in (True, False):
            n = passed.count(verdict)
            if n:
                self.decisions.labels("passed" if verdict else "rejected").inc(n)
        if passed:
            self.pass_ratio.set(self._roll(self._recent, passed))
        by_filter: dict[str, list[bool]] = {}
        for d in decisions:
            c = d.candidate
            for stage, code in d.why:
                self.rejections.labels(stage, code).inc()
                if code == FILTER_ERROR:
                    self.errors.labels(stage).inc()
            if d.removed_by:
                self.removed.labels(d.removed_by).inc()
            rejected_by = {stage for stage, _ in d.why}
            for name in ("quality", "toxicity", "grounding", "similarity"):
                if name in c.scores:
                    self.scores.labels(name).observe(c.scores[name])
                    stage = "duplicates" if name == "similarity" else name
                    by_filter.setdefault(stage, []).append(stage not in rejected_by)
            for entity, n in c.redactions.items():
                self.redactions.labels(entity).inc(n)
        for stage, values in by_filter.items():
            self.filter_pass_ratio.labels(stage).set(self._roll(self._recent_filter.setdefault(stage, []), values))

    def observe_keep_rate(self, keep) -> None:
        if keep is None:
            return
        self.keep_band.labels("low").set(keep.band[0])
        self.keep_band.labels("high").set(keep.band[1])
        for task in list(keep.tasks):
            label = self.task_label(task)
            rate, threshold = keep.rate(task), keep.threshold(task)
            if rate is not None:
                self.keep_rate.labels(label).set(rate)
            if threshold is not None:
                self.keep_threshold.labels(label).set(threshold)


class SamplerMetrics:
    """The review sampler in the worker. Labels: gate verdict, sample class, skip cause."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.considered = Counter(
            "flywheel_review_considered_total",
            "Gate decisions the review sampler looked at, by gate verdict.",
            ["gate"],
            registry=r,
        )
        self.sampled = Counter(
            "flywheel_review_sampled_total",
            "Candidates queued for review, by the class that chose them (correction, uncertainty, changed, "
            "rare_task, gate_audit, random).",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "flywheel_review_skipped_total",
            "Candidates the draw chose but the queue did not take, by cause (budget, duplicate).",
            ["cause"],
            registry=r,
        )


class QueueCollector:
    """Review-queue figures read from Redis at scrape time: they are global (every worker and web
    replica shares the queue), so one process exports them, the review page."""

    def __init__(self, queue, registry: CollectorRegistry | None = None):
        self.queue = queue
        if registry is not None:
            registry.register(self)

    def describe(self):
        return []

    def collect(self):
        import json

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            s = self.queue.stats()
            raw = self.queue.redis.get(self.queue.calibration_key)
        except Exception:  # Redis away: no figures rather than a failed scrape
            up = GaugeMetricFamily("flywheel_review_queue_up", "1 when the review queue's Redis answered this scrape.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("flywheel_review_queue_up", "1 when the review queue's Redis answered this scrape.")
        up.add_metric([], 1)
        yield up
        g = GaugeMetricFamily(
            "flywheel_review_queue_depth", "Items waiting for review or leased to a reviewer.", labels=["state"]
        )
        g.add_metric(["ready"], s.ready)
        g.add_metric(["leased"], s.leased)
        yield g
        yield GaugeMetricFamily(
            "flywheel_review_oldest_item_age_seconds",
            "Wall time since the oldest item not yet fully reviewed was queued.",
            value=s.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "flywheel_review_outbox_verdicts", "Verdicts recorded but not yet on the verdicts topic.", value=s.outbox
        )
        c = CounterMetricFamily(
            "flywheel_review_verdicts",
            "Verdicts given, by verdict (rate() * 3600: verdicts per hour).",
            labels=["verdict"],
        )
        c.add_metric(["passed"], s.counts.get("passed", 0))
        c.add_metric(["failed"], s.counts.get("failed", 0))
        yield c
        c = CounterMetricFamily(
            "flywheel_review_queue_events",
            "Queue events: queued, completed, expired leases, skips, items refused for the window budget.",
            labels=["event"],
        )
        for event, key in (
            ("queued", "queued"),
            ("completed", "completed"),
            ("lease_expired", "expired"),
            ("skipped", "skipped"),
            ("over_budget", "over_budget"),
        ):
            c.add_metric([event], s.counts.get(key, 0))
        yield c
        judged = s.counts.get("passed", 0) + s.counts.get("failed", 0)
        if judged:
            yield GaugeMetricFamily(
                "flywheel_review_pass_ratio",
                "Share of verdicts that passed the item.",
                value=s.counts.get("passed", 0) / judged,
            )
        pairs = s.counts.get("agree", 0) + s.counts.get("disagree", 0)
        if pairs:
            yield GaugeMetricFamily(
                "flywheel_review_agreement_ratio",
                "Share of overlap items whose second reviewer agreed with the first on pass or fail.",
                value=s.counts.get("agree", 0) / pairs,
            )
        if raw:
            report = json.loads(raw)
            overall = report.get("overall") or {}
            g = GaugeMetricFamily(
                "flywheel_review_gate_calibration_ratio",
                "The gate against reviewers, from the last `flywheel calibrate`.",
                labels=["measure"],
            )
            for measure in ("agreement", "precision", "recall", "f1"):
                if overall.get(measure) is not None:
                    g.add_metric([measure], overall[measure])
            yield g
            threshold = report.get("threshold") or {}
            if threshold.get("threshold") is not None:
                g = GaugeMetricFamily(
                    "flywheel_review_quality_threshold",
                    "Quality-score threshold: the policy's, and the one calibration proposes.",
                    labels=["source"],
                )
                g.add_metric(["policy"], threshold["current"])
                g.add_metric(["proposed"], threshold["threshold"])
                yield g


class DatasetMetrics:
    """The dataset builder. Labels: topic kind, outcome, split, window state: bounded sets."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.candidates = Counter(
            "flywheel_datasets_candidates_total",
            "Gate decisions the builder read, by topic (passed, rejected) and outcome "
            "(member of an open window, late: its window was past its seal boundary, replay).",
            ["topic", "outcome"],
            registry=r,
        )
        self.windows = Gauge(
            "flywheel_datasets_windows",
            "Event-time windows by state (pending: open with members; sealed: sealed and remembered).",
            ["state"],
            registry=r,
        )
        self.watermark = Gauge(
            "flywheel_datasets_watermark_seconds", "The builder's event-time watermark (Unix seconds).", registry=r
        )
        self.sealed_total = Counter("flywheel_datasets_sealed_total", "Datasets sealed and announced.", registry=r)
        self.records = Gauge(
            "flywheel_datasets_records",
            "Records of the last sealed dataset, by split (dataset volume per cycle).",
            ["split"],
            registry=r,
        )
        self.examples_per_day = Gauge(
            "flywheel_datasets_examples_per_day",
            "Training examples the last sealed window collected per day of event time.",
            registry=r,
        )
        self.window_pass_ratio = Gauge(
            "flywheel_datasets_window_pass_ratio",
            "Share of the last sealed window's gate decisions that passed.",
            registry=r,
        )
        self.window_late = Gauge(
            "flywheel_datasets_window_late_events",
            "Events that came after the last sealed window's boundary (counted, never mixed in).",
            registry=r,
        )
        self.seal_seconds = Histogram(
            "flywheel_datasets_seal_seconds",
            "Time to seal one window (read, write, publish, announce).",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.seal_reads = Counter(
            "flywheel_datasets_seal_partitions_total",
            "Partitions a seal read, by where from (spool: the "
            "builder's local copy of the window; log: the broker, when the copy was not complete).",
            ["source"],
            registry=r,
        )
        self.erasures = Counter("flywheel_datasets_erasures_total", "Erasure requests recorded.", registry=r)
        self.lag = Gauge(
            "flywheel_consumer_lag_messages",
            "Gate decisions on the topics not yet read by the dataset builder "
            "(the pipeline's last stage: a growing lag is a stalled pipeline), by topic (passed, rejected).",
            ["topic"],
            registry=r,
        )
        self.held = Gauge(
            "flywheel_datasets_held", "1 while a guard holds datasets: due windows wait to be sealed.", registry=r
        )
        self.active = Gauge(
            "flywheel_datasets_active",
            "1 while this builder holds the builders' lease and builds; 0 while "
            "it stands by (another builder, or a clock reset, holds the lease).",
            registry=r,
        )
        self.takeovers = Counter(
            "flywheel_datasets_lease_takeovers_total",
            "Times this builder took the lease after standing "
            "by while another builder held it (that one stopped and let go, or died and its lease "
            "lapsed).",
            registry=r,
        )

    def observed(self, outcome: str, passed: bool) -> None:
        self.candidates.labels("passed" if passed else "rejected", outcome).inc()

    def clock(self, clock) -> None:
        self.windows.labels("pending").set(len(clock.pending()))
        self.windows.labels("sealed").set(len(clock.sealed))
        if clock.watermark is not None:
            self.watermark.set(clock.watermark / 1000)

    def sealed(self, result, seconds: float) -> None:
        m = result.manifest
        self.sealed_total.inc()
        self.seal_seconds.observe(seconds)
        self.seal_reads.labels("spool").inc(result.from_spool)
        self.seal_reads.labels("log").inc(result.from_log)
        for split, n in m["counts"]["split"].items():
            self.records.labels(split).set(n)
        days = max(1, m["window"]["days"])
        self.examples_per_day.set(m["counts"]["records"] / days)
        self.window_late.set(m.get("late_events", 0))
        if m["window"].get("decisions"):
            self.window_pass_ratio.set(m["window"]["passed"] / m["window"]["decisions"])
