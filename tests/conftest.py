"""Shared fixtures: a real embedded broker and a real Redis, started by the project's own code."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from flywheel.embedded import EmbeddedBroker

    b = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    from flywheel.embedded import EmbeddedRedis, free_port, redis_answers

    url = os.environ.get("FLYWHEEL_REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    server = EmbeddedRedis(f"redis://127.0.0.1:{free_port()}/0", tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def settings(broker, redis_url, tmp_path):
    """Settings with topic names and app id of their own, so tests never see each other's data."""
    from flywheel.settings import Settings

    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        redis_url=redis_url,
        app_id=f"flywheel-test-{run}",
        data_dir=str(tmp_path / "data"),
        metrics_port=0,
        empty_fetch_backoff_ms=10,  # the embedded broker does not hold empty fetches
        partitions=4,
        roles="join",  # gate tests ask for the gate; the join's tests stay free of model start-up
        topic_interactions=f"t{run}.interactions",
        topic_actions=f"t{run}.actions",
        topic_candidates=f"t{run}.candidates",
        topic_deadletter=f"t{run}.deadletter",
        topic_passed=f"t{run}.candidates.passed",
        topic_rejected=f"t{run}.candidates.rejected",
        topic_verdicts=f"t{run}.review.verdicts",
        topic_datasets_ready=f"t{run}.datasets.ready",
        topic_erasure=f"t{run}.erasure",
        topic_models=f"t{run}.models",
        dataset_store=str(tmp_path / "datasets"),
        datasets_metrics_port=0,
        trainer_metrics_port=0,
    ).validate()
