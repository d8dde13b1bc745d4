"""Topic administration: every flywheel topic, co-partitioned, with retention that covers window + lag."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from flywheel.settings import Settings

log = logging.getLogger("flywheel.topics")


class TopicError(RuntimeError):
    pass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


STATE_STORES = ("join-state",)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Sources are co-partitioned (same count, keyed by request_id); every topic keeps window + lag;
    state changelogs are compacted (latest value per key, kept for ever)."""
    keep = {"retention.ms": str(settings.retention_ms), "cleanup.policy": "delete"}
    specs = [TopicSpec(name, settings.partitions, dict(keep)) for name in settings.topics.all()]
    specs += [
        TopicSpec(settings.changelog_topic(store), settings.partitions, {"cleanup.policy": "compact"})
        for store in STATE_STORES
    ]
    return specs


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.broker_url, "socket.timeout.ms": 10000})


def partition_counts(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    md = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items() if not t.error}


def create_topics(settings: Settings, timeout: float = 15.0) -> dict[str, str]:
    """Create missing topics, grow ones with too few partitions. Idempotent; returns what it did."""
    admin = admin_client(settings)
    existing = partition_counts(admin, timeout)
    done: dict[str, str] = {}
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=settings.replication_factor, config=s.config)
        for s in topic_specs(settings)
        if s.name not in existing
    ]
    grow = [
        NewPartitions(s.name, s.partitions)
        for s in topic_specs(settings)
        if s.name in existing and existing[s.name] < s.partitions
    ]
    for spec in topic_specs(settings):
        if spec.name in existing and existing[spec.name] > spec.partitions:
            raise TopicError(
                f"topic {spec.name} has {existing[spec.name]} partitions, more than the configured "
                f"{spec.partitions}; set FLYWHEEL_PARTITIONS={existing[spec.name]}"
            )
        if spec.name in existing and existing[spec.name] == spec.partitions:
            done[spec.name] = "exists"
    for futures, verb in (
        (admin.create_topics(new, operation_timeout=timeout) if new else {}, "created"),
        (admin.create_partitions(grow, operation_timeout=timeout) if grow else {}, "grown"),
    ):
        for name, fut in futures.items():
            try:
                fut.result(timeout)
                done[name] = verb
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    done[name] = "exists"
                else:
                    raise TopicError(f"could not create topic {name}: {err}") from None
    for name, verb in sorted(done.items()):
        log.info("topic %s: %s", name, verb)
    return done
