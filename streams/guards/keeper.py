"""Judging the monitors and acting on them: what the guard does when a monitor starts firing.

A monitor that starts firing takes the actions the policy lists for it, once:

- `hold_datasets`: the dataset builder seals nothing until a person releases the hold
  (`flywheel guards release datasets`); the windows wait, nothing is lost.
- `pause_rollout`: a ramping A/B test is paused (the candidate gets no more traffic) with the
  monitor as its reason, recorded on `flywheel.models` like any decision. While the monitor fires,
  a rollout that starts ramping is paused too, unless a person resumed it after the monitor fired.

A monitor that stops firing is cleared, but takes nothing back: people release holds and resume
rollouts. One worker acts at a time (a short Redis lock); every worker reads the same counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from schemas.records import ModelEvent
from flywheel.policy import GuardPolicy
from streams.guards.monitors import Signal, evaluate, merge, satisfaction
from streams.guards.store import GuardStore
from streams.rollout.controller import RolloutController

log = logging.getLogger("flywheel.guards")


@dataclass
class Judgement:
    signals: list[Signal]
    satisfaction: dict[str, dict[str, float]]
    holds: dict[str, dict]
    firing: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "monitors": [s.to_dict() for s in self.signals],
            "firing_since": self.firing,
            "holds": self.holds,
            "satisfaction": self.satisfaction,
        }


@dataclass(frozen=True)
class Action:
    monitor: str
    action: str
    taken: bool  # False when there was nothing to do (no rollout ramping, a hold already on)
    reason: str


class GuardKeeper:
    def __init__(self, store: GuardStore, rollout: RolloutController, policy: GuardPolicy):
        self.store = store
        self.rollout = rollout
        self.policy = policy

    def judge(self, now_s: float | None = None) -> Judgement:
        recent, baseline = self.store.windows(now_s)
        latest = merge(recent)
        return Judgement(
            evaluate(latest, merge(baseline), self.policy),
            satisfaction(latest),
            self.store.holds(),
            self.store.firing(),
        )

    def act(self, judgement: Judgement) -> tuple[list[Action], list[ModelEvent]]:
        """Under the lock: start and clear monitors, take the actions of those that start firing."""
        lock = f"{self.store.prefix}:lock"
        if not self.store.redis.set(lock, "1", nx=True, px=int(max(1.0, self.policy.evaluate_interval_s) * 2000)):
            return [], []
        try:
            before, now = self.store.firing(), int(time.time() * 1000)
            firing, actions, events = {}, [], []
            for s in judgement.signals:
                if s.firing:
                    since = firing[s.monitor] = before.get(s.monitor, now)
                    reason = f"guard:{s.monitor}:{s.value:.3f}>{s.bound}"
                    for action in self.policy.actions.get(s.monitor, ()):
                        if action == "hold_datasets" and s.monitor not in before:
                            actions.append(
                                Action(s.monitor, action, self.store.hold("datasets", s.monitor, reason), reason)
                            )
                        elif action == "pause_rollout":
                            event = self._pause(since, reason)
                            if event is not None or s.monitor not in before:
                                actions.append(Action(s.monitor, action, event is not None, reason))
                            events += [event] if event is not None else []
                    if s.monitor not in before:
                        log.warning(
                            "guard firing",
                            extra={
                                "monitor": s.monitor,
                                "value": round(s.value, 4),
                                "bound": s.bound,
                                "detail": s.detail,
                            },
                        )
                elif s.monitor in before:
                    if s.judged:
                        log.info("guard cleared", extra={"monitor": s.monitor, "value": round(s.value, 4)})
                    else:  # too little data to say it has recovered
                        firing[s.monitor] = before[s.monitor]
            self.store.set_firing(firing)
            judgement.firing = firing
            judgement.holds = self.store.holds()
            return actions, events
        finally:
            self.store.redis.delete(lock)

    def _pause(self, since_ms: int, reason: str) -> ModelEvent | None:
        state = self.rollout.state()
        if state.status != "ramping":
            return None
        resumed = max((t for t, action, _ in state.history if action == "resume"), default=0)
        if resumed >= since_ms:
            return None  # a person resumed it after the monitor fired: theirs to decide
        return self.rollout.override("pause", reason=reason)


def keeper_for(redis_client: Any, app_id: str, policy) -> GuardKeeper:
    """From the whole policy file: the guards' section, and the rollout's for the controller it pauses."""
    return GuardKeeper(
        GuardStore(redis_client, app_id, policy.guards),
        RolloutController(redis_client, app_id, policy.rollout),
        policy.guards,
    )
