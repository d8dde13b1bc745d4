"""The guards section: monitors against a negative flywheel, their bounds and actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from flywheel.policy.loader import Check, at_least

__all__ = ["MONITORS", "GUARD_ACTIONS", "GuardPolicy"]

MONITORS = (
    "deadletter_rate",
    "empty_rate",
    "pass_rate_shift",
    "action_mix_shift",
    "task_mix_shift",
    "acceptance_drop",
)
GUARD_ACTIONS = ("pause_rollout", "hold_datasets")


@dataclass(frozen=True)
class GuardPolicy:
    """Monitors against a negative flywheel (the seed's 08): each has a bound, and actions when it fires."""

    enabled: bool = True
    bucket_s: int = 60  # counts are kept per bucket of wall-clock time
    recent_buckets: int = 5  # the window a monitor judges: the last complete buckets
    baseline_buckets: int = 60  # the buckets before it, that a sudden shift is measured against
    min_recent: int = 200  # joined requests (gate decisions for the pass rate) in the recent window before judging
    min_baseline: int = 1000  # and in the baseline, for the shift monitors
    alpha: float = 0.001  # a firing monitor must also be significant at this level (it looks often: kept small)
    max_deadletter_rate: float = 0.02  # dead letters per joined request
    max_empty_rate: float = 0.05  # empty or degenerate responses per joined request
    max_pass_rate_shift: float = 0.15  # the gate's pass rate, recent against baseline (absolute)
    max_action_mix_shift: float = 0.15  # total variation distance of the users' actions
    max_task_mix_shift: float = 0.20  # total variation distance of the task types
    max_acceptance_drop: float = 0.10  # a model version's acceptance, recent against its own baseline
    evaluate_interval_s: float = 10.0
    actions: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "deadletter_rate": ("hold_datasets",),
            "empty_rate": ("pause_rollout",),
            "pass_rate_shift": ("hold_datasets",),
            "action_mix_shift": ("pause_rollout",),
            "task_mix_shift": (),
            "acceptance_drop": ("pause_rollout", "hold_datasets"),
        }
    )

    def bound(self, monitor: str) -> float:
        return getattr(self, f"max_{monitor}")

    def check(self, bad: Check) -> None:
        at_least(
            bad,
            1,
            ("[guards] bucket_s", self.bucket_s),
            ("[guards] recent_buckets", self.recent_buckets),
            ("[guards] baseline_buckets", self.baseline_buckets),
            ("[guards] min_recent", self.min_recent),
            ("[guards] min_baseline", self.min_baseline),
        )
        for m in MONITORS:
            if not 0.0 < self.bound(m) < 1.0:
                bad(f"[guards] max_{m}", f"must be within 0..1 (exclusive), got {self.bound(m)}")
        if not 0.0 < self.alpha < 1.0:
            bad("[guards] alpha", f"must be within 0..1 (exclusive), got {self.alpha}")
        if self.evaluate_interval_s <= 0:
            bad("[guards] evaluate_interval_s", f"must be > 0, got {self.evaluate_interval_s}")
        for m, acts in self.actions.items():
            if m not in MONITORS:
                bad(f"[guards.actions] {m}", f"unknown monitor; known: {', '.join(MONITORS)}")
            if set(acts) - set(GUARD_ACTIONS):
                bad(
                    f"[guards.actions] {m}",
                    f"unknown actions {sorted(set(acts) - set(GUARD_ACTIONS))}; known: {', '.join(GUARD_ACTIONS)}",
                )
