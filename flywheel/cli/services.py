"""The clients several commands open from the settings: Redis (checked), the model registry, and the
models topic's announcer. One place, so every command opens them alike."""

from __future__ import annotations

from flywheel.settings import SettingsError


def redis_client(settings):
    """Redis as every command opens it: a command waits 10 s for an answer, 5 s to connect."""
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)


def review_redis(settings):
    """Redis for the review queue and accounts; one clear error when it does not answer."""
    import redis

    client = redis_client(settings)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SettingsError(f"Redis at {settings.redis_url} does not answer: {exc}") from None
    return client


def registry(settings):
    from trainer.registry import Registry

    return Registry(settings.models_dir, redis_client(settings), settings.app_id, cache_dir=settings.model_cache_dir)


def announce_model_event(settings, event) -> bool:
    """Send `event` on the models topic when a broker is configured; whether it was sent."""
    if not settings.kafka_bootstrap:
        return False
    from trainer.service import ModelsAnnouncer

    out = ModelsAnnouncer(settings)
    try:
        out.announce(event)
    finally:
        out.close()
    return True
