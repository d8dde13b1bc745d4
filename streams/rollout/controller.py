"""The rollout's state in Redis and the decisions applied to it.

State (`<app>:rollout:state`, JSON) says which candidate is tested against which incumbent, at what
stage, and how it ended; counts per arm are Redis hashes (`<app>:rollout:<id>:<phase>:<version>`),
written with the last counted offset of every partition in the same transaction, so a batch
replayed after a crash is not counted twice. Every change writes the routing table that apps read
(`flywheel/routing.py`) and returns a `ModelEvent` for `flywheel.models`. Shared by every worker:
the periodic decision takes a short Redis lock, so one worker decides at a time.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable

from flywheel.routing import Routing, production_key, routing_key
from schemas.records import ModelEvent, TrainingCandidate
from flywheel.policy import RolloutPolicy
from streams.rollout.analysis import USER_SUMS_LUA, ArmStats, Verdict, compare, counts_of, decide, watch

log = logging.getLogger("flywheel.rollout")

ACTIVE = ("ramping", "paused", "watching")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RolloutState:
    rollout_id: str = ""
    incumbent: str = ""
    candidate: str = ""
    status: str = "idle"  # ramping | paused | watching | promoted | rolled_back | retired | idle
    stage: int = 0
    stage_start: int = 0  # candidate requests when the stage began
    weight: float = 0.0
    baseline: float = 0.0  # the incumbent's acceptance in the test: what the watch compares with
    baseline_var: float = 0.0  # and its variance (users as the unit): the watch weighs both sides' uncertainty
    reason: str = ""
    started_at: int = 0
    updated_at: int = 0
    pending: str = ""  # a newer candidate waiting for this rollout to end
    history: list = field(default_factory=list)  # (time, action, reason), most recent last

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> "RolloutState":
        if not raw:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})


class RolloutController:
    def __init__(self, redis_client: Any, app_id: str, policy: RolloutPolicy):
        self.redis = redis_client
        self.app_id = app_id
        self.policy = policy
        self.prefix = f"{app_id}:rollout"
        self.state_key = f"{self.prefix}:state"
        self.offsets_key = f"{self.prefix}:offsets"
        self._user_sums = redis_client.register_script(USER_SUMS_LUA)

    # -- reading ---------------------------------------------------------------------------------------
    def state(self) -> RolloutState:
        return RolloutState.from_json(self.redis.get(self.state_key))

    def stats_key(self, state: RolloutState, phase: str, version: str, stage: int | None = None) -> str:
        """An arm's counts: per ramp stage in the A/B test (`ab` phase), one for the watch."""
        part = phase if stage is None else f"{phase}{stage}"
        return f"{self.prefix}:{state.rollout_id}:{part}:{version}"

    def stage_stats(self, state: RolloutState, version: str) -> list[ArmStats]:
        """One A/B arm's counts per ramp stage so far."""
        pipe = self.redis.pipeline(transaction=False)
        for stage in range(state.stage + 1):
            pipe.hgetall(self.stats_key(state, "ab", version, stage))
        return [ArmStats.from_hash(raw) for raw in pipe.execute()]

    def stats(self, state: RolloutState, phase: str, version: str) -> ArmStats:
        """An arm's counts over its phase (the A/B test: every stage so far)."""
        if phase == "ab":
            return sum(self.stage_stats(state, version), ArmStats())
        return ArmStats.from_hash(self.redis.hgetall(self.stats_key(state, phase, version)))

    def production(self) -> str | None:
        v = self.redis.get(production_key(self.app_id))
        return v.decode() if isinstance(v, bytes) else v

    def status(self) -> dict:
        """What `flywheel rollout status` shows: the state, the production version, the routing table
        and, while a rollout runs, each arm's counts and acceptance and the test's figures."""
        state = self.state()
        out: dict[str, Any] = {"state": json.loads(state.to_json()), "production": self.production()}
        raw = self.redis.get(routing_key(self.app_id))
        out["routing"] = json.loads(Routing.from_json(raw).to_json()) if raw else None
        if state.rollout_id:
            inc, cand = self.stats(state, "ab", state.incumbent), self.stats(state, "ab", state.candidate)
            after = self.stats(state, "watch", state.candidate)
            c = compare(inc, cand, self.policy)
            out["arms"] = {
                "incumbent": {**inc.to_dict(), "acceptance": inc.acceptance},
                "candidate": {**cand.to_dict(), "acceptance": cand.acceptance},
                "after": {**after.to_dict(), "acceptance": after.acceptance},
            }
            out["test"] = {**c.metrics(), "decides_at": 1 / self.policy.alpha, "significant": c.significant}
        return out

    # -- counting --------------------------------------------------------------------------------------
    def count(self, batch: Iterable[tuple[TrainingCandidate, str, int]]) -> int:
        """Add a batch of joined candidates (candidate, "topic/partition", offset) to the arms they
        belong to; what was counted before (a replay) is skipped. Returns the requests counted."""
        batch = list(batch)
        if not batch:
            return 0
        state = self.state()
        parts = sorted({p for _, p, _ in batch})
        done = dict(zip(parts, (int(v) if v is not None else -1 for v in self.redis.hmget(self.offsets_key, parts))))
        arms = {}
        if state.status in ("ramping", "paused"):
            arms = {state.incumbent: "ab", state.candidate: "ab"}
        elif state.status == "watching":
            arms = {state.candidate: "watch"}
        incr: dict[str, dict[str, int]] = {}
        per_user: dict[str, dict[str, list[int]]] = {}  # arm key -> user -> [requests, acceptances]
        last: dict[str, int] = {}
        counted = 0
        for c, part, offset in batch:
            if offset <= done[part]:
                continue
            last[part] = max(last.get(part, -1), offset)
            phase = arms.get(c.model_version or "")
            if phase is None:
                continue
            key = self.stats_key(state, phase, c.model_version, state.stage if phase == "ab" else None)
            into = incr.setdefault(key, {})
            counts = counts_of(c.actions or ([c.user_action] if c.user_action else []), c.response, c.latency_ms)
            for name, n in counts.items():
                into[name] = into.get(name, 0) + n
            sums = per_user.setdefault(key, {}).setdefault(c.user_id or "-", [0, 0])
            sums[0] += 1
            sums[1] += counts.get("accepted", 0)
            counted += 1
        if last:
            pipe = self.redis.pipeline(transaction=True)
            for key, fields_ in incr.items():
                for name, n in fields_.items():
                    pipe.hincrby(key, name, n)
            for key, users in per_user.items():
                args = [x for user, (n, a) in sorted(users.items()) for x in (user, n, a)]
                self._user_sums(keys=[key, f"{key}:users"], args=args, client=pipe)
            pipe.hset(self.offsets_key, mapping=last)
            pipe.execute()
        return counted

    # -- deciding --------------------------------------------------------------------------------------
    def _save(self, state: RolloutState, action: str, reason: str) -> RolloutState:
        t = now_ms()
        state = replace(state, reason=reason, updated_at=t, history=(state.history + [[t, action, reason]])[-50:])
        routing = Routing(production=state.incumbent, candidate=None)
        if state.status in ("ramping", "paused"):
            routing = Routing(
                state.incumbent, state.candidate, state.weight if state.status == "ramping" else 0.0, state.rollout_id
            )
        elif state.status in ("watching", "promoted"):
            routing = Routing(state.candidate)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.state_key, state.to_json())
        pipe.set(routing_key(self.app_id), routing.to_json())
        if routing.production:
            pipe.set(production_key(self.app_id), routing.production)
        pipe.execute()
        log.info(
            "rollout",
            extra={
                "action": action,
                "reason": reason,
                "candidate": state.candidate,
                "incumbent": state.incumbent,
                "status": state.status,
                "weight": state.weight,
            },
        )
        return state

    def _event(self, state: RolloutState, action: str, verdict: Verdict | None = None) -> ModelEvent:
        metrics: dict[str, float] = {"weight": state.weight, "stage": float(state.stage)}
        if state.rollout_id:
            arms = [
                ("incumbent", "ab", state.incumbent),
                ("candidate", "ab", state.candidate),
                ("after", "watch", state.candidate),
            ]
            for arm, phase, version in arms:
                s = self.stats(state, phase, version)
                if s.requests or phase == "ab":
                    metrics[f"{arm}.requests"] = float(s.requests)
                    metrics[f"{arm}.acceptance"] = s.acceptance
        if verdict is not None and verdict.comparison is not None:
            metrics.update(verdict.comparison.metrics())
        return ModelEvent(
            event_id=uuid.uuid4().hex,
            event_type=f"rollout_{action}",
            created_at=now_ms(),
            version=state.candidate,
            base_model=state.incumbent,
            gate_passed=state.status != "rolled_back",
            reasons=[state.reason],
            metrics=metrics,
        )

    def start(self, candidate: str, incumbent: str | None = None) -> ModelEvent | None:
        """A candidate the trainer's gate passed: test it against production (or wait its turn)."""
        state = self.state()
        if state.candidate == candidate or candidate in (state.pending, state.incumbent):
            return None  # a redelivered models event
        if state.active:
            self._save(replace(state, pending=candidate), "queued", f"waiting:{candidate}")
            return None
        incumbent = incumbent or self.production()
        if not incumbent:
            log.warning("rollout not started: no production model", extra={"candidate": candidate})
            return None
        fresh = RolloutState(
            rollout_id=f"{candidate}-{uuid.uuid4().hex[:6]}",
            incumbent=incumbent,
            candidate=candidate,
            status="ramping",
            stage=0,
            weight=self.policy.ramp[0],
            started_at=now_ms(),
        )
        state = self._save(fresh, "started", f"ab:{incumbent}->{candidate}:{self.policy.ramp[0]}")
        return self._event(state, "started")

    def apply(self, verdict: Verdict, state: RolloutState | None = None) -> ModelEvent | None:
        state = state or self.state()
        a = verdict.action
        if a == "hold":
            return None
        if a == "ramp":
            cand = self.stats(state, "ab", state.candidate)
            state = replace(
                state, stage=state.stage + 1, stage_start=cand.requests, weight=self.policy.ramp[state.stage + 1]
            )
        elif a == "promote":
            inc = self.stats(state, "ab", state.incumbent)
            state = replace(state, status="watching", weight=1.0, baseline=inc.acceptance, baseline_var=inc.variance())
        elif a == "rollback":
            state = replace(state, status="rolled_back", weight=0.0)
        elif a == "retire":
            state = replace(state, status="retired", weight=0.0)
        elif a == "watched":
            state = replace(state, status="promoted")
        elif a == "pause":
            state = replace(state, status="paused")
        elif a == "resume":
            state = replace(state, status="ramping")
        state = self._save(state, a, verdict.reason)
        return self._event(state, {"watched": "done"}.get(a, a), verdict)

    def tick(self) -> list[ModelEvent]:
        """Look at the counts and act: at most one worker at a time (a lock that expires on its own)."""
        lock = f"{self.prefix}:lock"
        if not self.redis.set(lock, "1", nx=True, px=int(max(1.0, self.policy.decide_interval_s) * 2000)):
            return []
        try:
            state = self.state()
            events = []
            if state.status == "ramping":
                stages = list(zip(self.stage_stats(state, state.incumbent), self.stage_stats(state, state.candidate)))
                inc, cand = sum((i for i, _ in stages), ArmStats()), sum((c for _, c in stages), ArmStats())
                verdict = decide(state.stage, cand.requests - state.stage_start, inc, cand, self.policy, stages)
                event = self.apply(verdict, state)
            elif state.status == "watching":
                event = self.apply(
                    watch(
                        state.baseline, self.stats(state, "watch", state.candidate), self.policy, state.baseline_var
                    ),
                    state,
                )
            else:
                event = None
            if event is not None:
                events.append(event)
            state = self.state()
            if not state.active and state.pending:
                pending = state.pending
                self._save(replace(state, pending=""), "dequeued", f"next:{pending}")
                started = self.start(pending)
                if started is not None:
                    events.append(started)
            return events
        finally:
            self.redis.delete(lock)

    def override(self, action: str, who: str = "cli", reason: str = "") -> ModelEvent:
        """`flywheel rollout promote | rollback | pause | resume`: a person's decision (or a guard's, with its
        reason), recorded like any other."""
        state = self.state()
        allowed = {
            "promote": ("ramping", "paused"),
            "rollback": ("ramping", "paused", "watching"),
            "pause": ("ramping",),
            "resume": ("paused",),
        }[action]
        if state.status not in allowed:
            raise ValueError(
                f"cannot {action}: the rollout is {state.status}"
                + (f" ({state.incumbent} -> {state.candidate})" if state.candidate else "")
            )
        event = self.apply(Verdict(action, reason or f"manual:{who}"), state)
        assert event is not None
        return event
