"""The one settings object of the flywheel.

Every knob is a typed field; `Settings.from_env()` reads `FLYWHEEL_<FIELD>` (upper case) so that
production points the same code at any Kafka 3+ and Redis 6+ without editing files.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Mapping

ENV_PREFIX = "FLYWHEEL_"

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
ROLES = ("join", "gate", "review", "rollout", "guards")


class SettingsError(ValueError):
    """A setting has a value the flywheel cannot use."""


@dataclass(frozen=True)
class Topics:
    interactions: str = "flywheel.interactions"
    actions: str = "flywheel.actions"
    candidates: str = "flywheel.candidates"
    deadletter: str = "flywheel.deadletter"
    passed: str = "flywheel.candidates.passed"
    rejected: str = "flywheel.candidates.rejected"
    verdicts: str = "flywheel.review.verdicts"
    datasets_ready: str = "flywheel.datasets.ready"
    erasure: str = "flywheel.erasure"
    models: str = "flywheel.models"

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


@dataclass(frozen=True)
class Settings:
    # where things run
    kafka_bootstrap: str = field(
        default="", metadata={"doc": "Kafka bootstrap servers; empty means `flywheel up` starts the embedded broker"}
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0", metadata={"doc": "Redis for queues, indexes and pointers"}
    )
    app_id: str = field(default="flywheel", metadata={"doc": "Kafka consumer group and Faust app id"})
    worker_id: str = field(
        default="",
        metadata={
            "doc": "Static group membership id of this worker (e.g. the pod name): a restart takes its partitions back at once"
        },
    )
    shutdown_grace_s: float = field(
        default=20.0,
        metadata={
            "doc": "Longest a worker waits for a clean stop after SIGINT/SIGTERM before it leaves without one (nothing is lost: it restarts as after kill -9); a second signal leaves at once"
        },
    )
    restart_backoff_s: float = field(
        default=1.0,
        metadata={
            "doc": "`flywheel up` restarts a role (worker, review page, dataset builder, trainer) that exited on its own after this delay, doubled at each exit in a row"
        },
    )
    restart_backoff_max_s: float = field(
        default=30.0,
        metadata={
            "doc": "Longest delay before `flywheel up` restarts a role; back to the first delay once the role has stayed up 60 s"
        },
    )
    data_dir: str = field(default=".flywheel", metadata={"doc": "Embedded broker data and worker state"})
    broker_port: int = field(default=0, metadata={"doc": "Embedded broker port; 0 picks a free one"})
    metrics_port: int = field(default=9464, metadata={"doc": "Worker /metrics port; 0 disables"})
    log_level: str = field(default="INFO", metadata={"doc": "Structured log level"})
    # topics
    topic_interactions: str = field(default="flywheel.interactions", metadata={"doc": "Request/response events"})
    topic_actions: str = field(default="flywheel.actions", metadata={"doc": "User action events"})
    topic_candidates: str = field(
        default="flywheel.candidates", metadata={"doc": "One joined training candidate per request"}
    )
    topic_deadletter: str = field(
        default="flywheel.deadletter", metadata={"doc": "Undecodable or invalid input, with reason and original bytes"}
    )
    topic_passed: str = field(
        default="flywheel.candidates.passed", metadata={"doc": "Candidates the quality gate passed (redacted, scored)"}
    )
    topic_rejected: str = field(
        default="flywheel.candidates.rejected",
        metadata={"doc": "Candidates the gate rejected, with every reason and score (redacted too)"},
    )
    topic_verdicts: str = field(
        default="flywheel.review.verdicts",
        metadata={"doc": "Reviewers' verdicts on sampled candidates (the gold set)"},
    )
    topic_datasets_ready: str = field(
        default="flywheel.datasets.ready", metadata={"doc": "One event per sealed dataset: id, URI, manifest summary"}
    )
    topic_erasure: str = field(
        default="flywheel.erasure",
        metadata={
            "doc": "Erasure requests: a user id whose records leave every window, the sealed ones re-sealed without them (flywheel erasure status USER says where they still are)"
        },
    )
    topic_models: str = field(
        default="flywheel.models",
        metadata={
            "doc": "What the trainer did with each dataset: candidate models with lineage, metrics and the gate's verdict, or why none"
        },
    )
    partitions: int = field(
        default=4, metadata={"doc": "Partitions of every flywheel topic (sources must be co-partitioned)"}
    )
    replication_factor: int = field(default=1, metadata={"doc": "Replication factor for created topics"})
    retention_ms: int = field(
        default=6 * WEEK_MS, metadata={"doc": "Source topic retention; at least window + lag (5 weeks)"}
    )
    # the join
    settle_window_ms: int = field(
        default=30 * MINUTE_MS,
        metadata={"doc": "Event time after a request within which its actions count; none means abandoned"},
    )
    watermark_delay_ms: int = field(
        default=MINUTE_MS, metadata={"doc": "Out-of-orderness the watermark allows within one input"}
    )
    idle_input_ms: int = field(
        default=5_000,
        metadata={
            "doc": "Wall time an input must have been caught up and silent before it stops holding the watermark back"
        },
    )
    marker_horizon_ms: int = field(
        default=DAY_MS,
        metadata={"doc": "Event time a settled request is remembered, so replays and duplicates emit nothing"},
    )
    join_batch_size: int = field(default=2000, metadata={"doc": "Most records the join takes from one fetch"})
    empty_fetch_backoff_ms: int = field(
        default=0,
        metadata={
            "doc": "Pause after an empty fetch, for brokers that answer at once instead of waiting fetch.max.wait.ms (the embedded one); 0 for Kafka"
        },
    )
    # the quality gate
    roles: str = field(
        default="join,gate,review,rollout,guards",
        metadata={
            "doc": "Stream operators this worker runs: some of join, gate, review, rollout, guards (comma-separated); the dataset builder and the trainer are services of their own"
        },
    )
    gate_policy: str = field(
        default="", metadata={"doc": "Gate policy TOML file; empty: the built-in defaults (`flywheel policy show`)"}
    )
    gate_batch_size: int = field(default=128, metadata={"doc": "Most candidates the gate scores in one batch"})
    gate_batch_ms: int = field(default=250, metadata={"doc": "Longest the gate waits to fill a batch"})
    gate_threads: int = field(
        default=1, metadata={"doc": "Threads the gate's models may use (torch intra-op); the event loop keeps its own"}
    )
    # human review
    review_host: str = field(
        default="127.0.0.1", metadata={"doc": "Address the review page (`flywheel review`) listens on"}
    )
    review_port: int = field(default=8088, metadata={"doc": "Port of the review page (its /metrics too)"})
    review_lease_s: int = field(
        default=600, metadata={"doc": "Seconds a reviewer holds an item before it returns to the queue"}
    )
    review_session_h: int = field(default=12, metadata={"doc": "Hours a review sign-in lasts"})
    # datasets
    dataset_store: str = field(
        default="",
        metadata={
            "doc": "Where sealed datasets are written: a directory or any fsspec URL (s3://, gs://, ...); empty: <data_dir>/datasets"
        },
    )
    datasets_metrics_port: int = field(
        default=9465, metadata={"doc": "The dataset builder's /metrics port; 0 disables"}
    )
    seal_workers: int = field(
        default=0,
        metadata={
            "doc": "Processes that decode and write a window's partitions in parallel when it is sealed; 0: one per CPU core (at most one per partition)"
        },
    )
    seal_spool: str = field(
        default="",
        metadata={
            "doc": "Local directory where the dataset builder keeps each open window's candidates as it reads them, so a seal reads files, not the log (about the window's size on disk); empty: <data_dir>/seal-spool/<app_id>"
        },
    )
    idle_partition_ms: int = field(
        default=30_000,
        metadata={
            "doc": "Wall time a candidate partition must be caught up and silent before it stops holding dataset windows back"
        },
    )
    # the trainer
    model_store: str = field(
        default="",
        metadata={
            "doc": "Where versioned model directories are kept: a directory or any fsspec URL (s3://, gs://, ...); empty: <data_dir>/models"
        },
    )
    model_cache: str = field(
        default="",
        metadata={
            "doc": "Local directory where a model store at a URL is mirrored: versions downloaded to be loaded or exported, the trainer's staging and checkpoints; empty: <data_dir>/model-cache"
        },
    )
    trainer_metrics_port: int = field(default=9466, metadata={"doc": "The trainer's /metrics port; 0 disables"})
    golden_dir: str = field(
        default="", metadata={"doc": "Directory of the golden test set's versions; empty: <data_dir>/golden"}
    )
    # limits
    max_event_bytes: int = field(
        default=256 * 1024, metadata={"doc": "Largest accepted event; larger goes to the dead-letter topic"}
    )
    max_event_ahead_ms: int = field(
        default=15 * MINUTE_MS,
        metadata={
            "doc": "Longest an event's time (or a tick's) may lie ahead of the wall clock (its Kafka timestamp, if earlier); further ahead is dead-lettered as `future_event` and moves no watermark or window clock; -1 turns the check off (replays of synthetic future traffic)"
        },
    )
    tick_key: str = field(
        default="",
        metadata={
            "doc": "Secret that event-time ticks must be signed with (HMAC-SHA256 in the `flywheel-tick-mac` header); empty: ticks are not authenticated"
        },
    )
    pseudonym_key: str = field(
        default="",
        metadata={
            "doc": "Secret every user id the flywheel keeps is HMAC-SHA256'd with (datasets' users.txt and record-users.bin, the erased list, the gate's stand-in for an id holding personal data); empty: one is generated on first use and kept in Redis at `<app_id>:pseudonym-key`, with a warning (set it in production; docs: Datasets, Erasure says how to rotate it)"
        },
    )

    @property
    def topics(self) -> Topics:
        return Topics(
            interactions=self.topic_interactions,
            actions=self.topic_actions,
            candidates=self.topic_candidates,
            deadletter=self.topic_deadletter,
            passed=self.topic_passed,
            rejected=self.topic_rejected,
            verdicts=self.topic_verdicts,
            datasets_ready=self.topic_datasets_ready,
            erasure=self.topic_erasure,
            models=self.topic_models,
        )

    def changelog_topic(self, store: str) -> str:
        """Compacted topic behind a stream operator's state (one per app id and store)."""
        return f"{self.app_id}.{store}-changelog"

    @property
    def broker_url(self) -> str:
        if not self.kafka_bootstrap:
            raise SettingsError("FLYWHEEL_KAFKA_BOOTSTRAP is empty: start the stack with `flywheel up` or set it")
        return self.kafka_bootstrap

    @property
    def datasets_url(self) -> str:
        return self.dataset_store or f"{self.data_dir}/datasets"

    @property
    def seal_spool_dir(self) -> str:
        return self.seal_spool or f"{self.data_dir}/seal-spool/{self.app_id}"

    @property
    def models_dir(self) -> str:
        return self.model_store or f"{self.data_dir}/models"

    @property
    def model_cache_dir(self) -> str:
        return self.model_cache or f"{self.data_dir}/model-cache"

    @property
    def golden_path(self) -> str:
        return self.golden_dir or f"{self.data_dir}/golden"

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Settings":
        if self.partitions < 1:
            raise SettingsError(f"partitions must be >= 1, got {self.partitions}")
        if self.settle_window_ms <= 0:
            raise SettingsError(f"settle_window_ms must be > 0, got {self.settle_window_ms}")
        if self.retention_ms != -1 and self.retention_ms < 5 * WEEK_MS:
            raise SettingsError(
                f"retention_ms must cover window + lag (>= {5 * WEEK_MS}) or be -1, got {self.retention_ms}"
            )
        unknown = set(self.role_set) - set(ROLES)
        if unknown or not self.role_set:
            raise SettingsError(f"roles must be some of {', '.join(ROLES)} (comma-separated), got {self.roles!r}")
        if self.review_lease_s < 10 or self.review_session_h < 1:
            raise SettingsError("review_lease_s must be >= 10 and review_session_h >= 1")
        if self.gate_batch_size < 1 or self.gate_batch_ms < 1 or self.gate_threads < 1:
            raise SettingsError("gate_batch_size, gate_batch_ms and gate_threads must be >= 1")
        if self.max_event_ahead_ms < -1:
            raise SettingsError(
                f"max_event_ahead_ms must be >= 0, or -1 to turn the check off, got {self.max_event_ahead_ms}"
            )
        if self.max_event_bytes < 1024:
            raise SettingsError(f"max_event_bytes must be >= 1024, got {self.max_event_bytes}")
        if self.marker_horizon_ms < self.settle_window_ms:
            raise SettingsError("marker_horizon_ms must be >= settle_window_ms")
        if self.shutdown_grace_s <= 0:
            raise SettingsError(f"shutdown_grace_s must be > 0, got {self.shutdown_grace_s}")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()

    def to_env(self) -> dict[str, str]:
        """These settings as FLYWHEEL_* variables, for a child process."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, meaning) for the configuration reference page."""
        return [(ENV_PREFIX + f.name.upper(), repr(f.default), f.metadata.get("doc", "")) for f in fields(cls)]


def _coerce(f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, type) else {"int": int, "str": str, "float": float, "bool": bool}[f.type]
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
