"""The rollout's stream agents: joined candidates counted per model version, candidate models
started as A/B tests, and a timer that decides. The work is in `RolloutController`."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from flywheel.settings import Settings
from schemas.codec import Codec, DecodeError
from schemas.records import ModelEvent
from streams.gate.policy import RolloutPolicy
from streams.rollout.controller import RolloutController
from streams.rollout.metrics import RolloutMetrics
from streams.runner import BatchRunner


class RolloutRunner(BatchRunner):
    def __init__(self, settings: Settings, policy: RolloutPolicy, codec: Codec, metrics: RolloutMetrics,
                 redis_client: Any, send: Callable[..., Any]):
        super().__init__(settings, codec, redis_client, send, "rollout")
        self.policy = policy
        self.metrics = metrics
        self.controller = RolloutController(redis_client, settings.app_id, policy)

    async def process(self, events: Sequence[Any]) -> None:
        """Count a batch of joined candidates; undecodable ones are the gate's to dead-letter."""
        candidates, _dead = self._decode(events)
        batch = [(c, f"{m.topic}/{m.partition}", m.offset) for c, m in candidates]
        if batch:
            n = await self._retrying("count", lambda: self._off_loop(self.controller.count, batch))
            self.metrics.counted.inc(n)

    async def on_model_event(self, value: bytes) -> None:
        try:
            event = ModelEvent.from_dict(self.codec.decode("model_event", value or b""))
        except (DecodeError, TypeError) as exc:
            self.log.warning("models event not understood", extra={"error": str(exc)[:200]})
            return
        if event.event_type == "candidate" and event.gate_passed and event.version and self.policy.enabled:
            started = await self._retrying("start", lambda: self._off_loop(self.controller.start, event.version))
            await self._announce([started] if started else [])

    async def tick(self) -> None:
        events = await self._retrying("decide", lambda: self._off_loop(self._decide))
        await self._announce(events)

    def _decide(self) -> list[ModelEvent]:
        events = self.controller.tick()
        state = self.controller.state()
        self.metrics.weight.set(state.weight if state.status in ("ramping", "watching") else 0.0)
        if state.rollout_id:
            for arm, phase, version in (("incumbent", "ab", state.incumbent), ("candidate", "ab", state.candidate),
                                        ("after", "watch", state.candidate)):
                self.metrics.observe(arm, self.controller.stats(state, phase, version))
        for e in events:
            self.metrics.decisions.labels(e.event_type.removeprefix("rollout_")).inc()
            if "likelihood_ratio" in e.metrics:
                self.metrics.likelihood.set(e.metrics["likelihood_ratio"])
        return events


def add_rollout_agents(app, settings: Settings, runner: RolloutRunner):
    """Register on the Faust app: short loops, the work is in `runner`."""
    candidates = app.topic(settings.topic_candidates, key_serializer="raw", value_serializer="raw")
    models = app.topic(settings.topic_models, key_serializer="raw", value_serializer="raw")

    @app.agent(candidates, name="rollout-count")
    async def count(stream):
        async for events in stream.take_events(settings.gate_batch_size, within=settings.gate_batch_ms / 1000):
            await runner.process(events)

    @app.agent(models, name="rollout-start")
    async def start(stream):
        async for value in stream:
            await runner.on_model_event(value)

    @app.timer(runner.policy.decide_interval_s)
    async def decide():
        await runner.tick()

    return count, start, decide
