"""Which candidates people review: a prioritised, stratified, deterministic sample (pure policy).

`ReviewSampler.decide(candidate, gate_passed)` returns a `SampleDecision`: whether it is sampled,
every class that matched (the choosing one first: correction, uncertainty, changed, rare_task,
gate_audit, random), the inclusion probability the draw used, and why it was skipped (disabled,
excluded, budget). About `share` of each task type's passed candidates is sampled, priority classes
first; `audit_share` of rejected ones, never those a stage in `audit_exclude` stopped. The draw is
a hash of the seed and the request id, so every worker and every replay draws the same number.
`ReviewPolicy` holds every number.

Design (the allocation, the statistics, the budget): docs/concepts/review.md#the-samplers-arithmetic
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Mapping, Sequence

from schemas.records import TrainingCandidate
from streams.gate.filters import FILTER_ERROR, REASONS
from flywheel.policy import ReviewPolicy
from streams.review.items import ReviewItem

DAY_MS = 86_400_000
OTHER = "other"  # where task types and versions beyond the tracking cap are counted
PASSED_CLASSES = ("correction", "uncertainty", "changed", "rare_task", "random")  # allocation order
ACCEPTED_ACTIONS = ("accepted", "copied")
RARE_MIN_TRAFFIC = 100.0  # decayed candidates before any task type is called rare
KEPT_WINDOWS = 4
SHARE_CEILING = 0.10  # the seed's upper bound on the review share: rare minimums never push a window past it  # window counts kept locally (late events may still land in the previous ones)
_STAGE_OF = {code: stage for stage, codes in REASONS.items() for code in codes}


def unit_draw(seed: str, key: str) -> float:
    """A uniform number in [0, 1) that depends only on the seed and the key."""
    return int.from_bytes(blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big") / 2**64


def reason_stages(reasons: Sequence[str]) -> set[str]:
    """The gate stages behind reason codes; "filter_error:<stage>" counts for both."""
    stages: set[str] = set()
    for code in reasons:
        if code.startswith(FILTER_ERROR):
            stages.add(FILTER_ERROR)
            _, _, stage = code.partition(":")
            if stage:
                stages.add(stage)
        elif code in _STAGE_OF:
            stages.add(_STAGE_OF[code])
    return stages


@dataclass
class SampleDecision:
    sampled: bool
    classes: list[str]  # every class that matched, the choosing one first ("random" when none matched)
    probability: float  # inclusion probability the draw used (0 when excluded/disabled)
    item: ReviewItem | None  # set when sampled
    skipped: str = ""  # "" | "disabled" | "excluded" | "budget"


@dataclass
class _Version:
    n: float = 0.0  # decayed outcomes, as of `tick`
    accepted: float = 0.0  # decayed accepted/copied outcomes, as of `tick`
    tick: int = 0  # the task type's candidate count at the last update
    raw: int = 0  # outcomes, not decayed (for changed_min_samples)


@dataclass
class _Task:
    traffic: float = 0.0  # decayed count in all traffic, as of `traffic_tick` (the global tick)
    traffic_tick: int = 0
    seen: int = 0  # candidates of this task type: the clock its versions decay on
    classes: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PASSED_CLASSES, 0.0))
    versions: dict[str, _Version] = field(default_factory=dict)


class ReviewSampler:
    """Decides, candidate by candidate, what goes before people; docs/concepts/review.md#the-samplers-arithmetic."""

    def __init__(
        self,
        policy: ReviewPolicy,
        seed: str = "flywheel",
        half_life: int = 500,
        max_tracked: int = 1000,
        window_days: int = 7,
    ):
        if half_life < 1:
            raise ValueError(f"half_life must be >= 1, got {half_life}")
        self.policy = policy
        self.window_ms = window_days * DAY_MS  # the dataset window: the budget and the rare minimums are per window
        self.seed = seed
        self.half_life = half_life
        self.max_tracked = max_tracked  # task types, and versions per task type, before folding into OTHER
        self._decay = 0.5 ** (1.0 / half_life)
        self._tick = 0  # candidates seen, all task types
        self._total = 0.0  # decayed traffic, all task types (kept current)
        self._tasks: dict[str, _Task] = {}
        self._windows: dict[int, dict[str, int]] = {}  # window -> task type -> items sampled
        self._share: dict[int, list[int]] = {}  # window -> [passed candidates seen, passed ones sampled] (this worker)

    # -- windows and the budget --------------------------------------------------------------------

    def window_of(self, event_time_ms: int) -> int:
        return event_time_ms // self.window_ms

    def sync_window(self, window: int, sampled_by_task: Mapping[str, int]) -> None:
        """Replace the local counts for `window` with the shared ones, so rare minimums and the budget hold
        across workers; decide() adds to this copy as it samples."""
        self._window(window).clear()
        self._window(window).update({t: int(n) for t, n in sampled_by_task.items()})

    def _window(self, window: int) -> dict[str, int]:
        counts = self._windows.get(window)
        if counts is None:
            counts = self._windows[window] = {}
            for old in sorted(self._windows)[:-KEPT_WINDOWS]:
                if old != window:
                    del self._windows[old]
        return counts

    # -- decisions ---------------------------------------------------------------------------------

    def decide(self, candidate: TrainingCandidate, gate_passed: bool, source: str = "") -> SampleDecision:
        r = self.policy
        if not r.enabled:
            return SampleDecision(False, [], 0.0, None, "disabled")
        c = candidate
        task = self._observe(c)
        matched = []
        if c.user_action == "corrected" or c.label == "sft_correction":
            matched.append("correction")
        if c.uncertainty is not None and c.uncertainty >= r.uncertainty_threshold:
            matched.append("uncertainty")
        if self._changed(task, self._version_key(task, c.model_version)):
            matched.append("changed")
        rare = self._rare(task)
        if rare:
            matched.append("rare_task")
        window = self.window_of(c.timestamp)
        counts = self._window(window)

        if gate_passed:
            classes = matched or ["random"]
            self._count_class(task, classes[0])
            p = self._passed_probability(task, classes[0])
            seen_sampled = self._share.setdefault(window, [0, 0])
            for old in sorted(self._share)[:-KEPT_WINDOWS]:
                del self._share[old]
            seen_sampled[0] += 1
            # the rare minimum adds to the share, but never past the seed's 10 % ceiling for the window
            if (
                rare
                and counts.get(c.task_type, 0) < r.rare_min_per_window
                and seen_sampled[1] + 1 <= SHARE_CEILING * seen_sampled[0]
            ):
                p = 1.0
        else:
            classes = ["gate_audit", *matched]
            if reason_stages(c.reasons) & set(r.audit_exclude):
                return SampleDecision(False, classes, 0.0, None, "excluded")
            p = r.audit_share
        p = min(1.0, max(0.0, p))

        if not unit_draw(self.seed, c.request_id) < p:
            return SampleDecision(False, classes, p, None)
        if r.budget_per_window and sum(counts.values()) >= r.budget_per_window:
            return SampleDecision(False, classes, p, None, "budget")
        counts[c.task_type] = counts.get(c.task_type, 0) + 1
        if gate_passed and window in self._share:
            self._share[window][1] += 1
        overlap = unit_draw(self.seed, f"overlap:{c.request_id}") < r.overlap_share
        item = ReviewItem(
            item_id=c.request_id,
            candidate=c.to_dict(),
            gate_passed=gate_passed,
            sampled_for=list(classes),
            probability=p,
            window=window,
            reviews_needed=2 if overlap else 1,
            source=source,
        )
        return SampleDecision(True, classes, p, item)

    def decide_batch(self, batch: Sequence[tuple[TrainingCandidate, bool, str]]) -> list[SampleDecision]:
        """In order: each decision sees the statistics of the candidates before it."""
        return [self.decide(c, passed, source) for c, passed, source in batch]

    # -- rolling statistics ------------------------------------------------------------------------

    def _task_key(self, task_type: str) -> str:
        if task_type in self._tasks or len(self._tasks) < self.max_tracked:
            return task_type
        return OTHER

    def _version_key(self, task: _Task, version: str) -> str:
        if version in task.versions or len(task.versions) < self.max_tracked:
            return version
        return OTHER

    def _observe(self, c: TrainingCandidate) -> _Task:
        """Add the candidate to the traffic and acceptance statistics (passed or not)."""
        d = self._decay
        key = self._task_key(c.task_type)
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = _Task()
        self._tick += 1
        self._total = self._total * d + 1.0
        task.traffic = task.traffic * d ** (self._tick - task.traffic_tick) + 1.0
        task.traffic_tick = self._tick
        task.seen += 1
        vkey = self._version_key(task, c.model_version)
        v = task.versions.get(vkey)
        if v is None:
            v = task.versions[vkey] = _Version(tick=task.seen)
        k = d ** (task.seen - v.tick)
        v.n = v.n * k + 1.0
        v.accepted = v.accepted * k + (1.0 if c.user_action in ACCEPTED_ACTIONS else 0.0)
        v.tick = task.seen
        v.raw += 1
        return task

    def _count_class(self, task: _Task, first: str) -> None:
        """Decayed fractions of passed candidates by first class (half-life in passed candidates)."""
        for k in task.classes:
            task.classes[k] *= self._decay
        task.classes[first] += 1.0

    def _rare(self, task: _Task) -> bool:
        return self._total >= RARE_MIN_TRAFFIC and task.traffic / self._total < self.policy.rare_share

    def _baseline(self, task: _Task) -> str:
        if self.policy.baseline_model:
            return self.policy.baseline_model
        # every version decays on the task's clock: compare counts brought to the same tick
        return max(
            task.versions,
            key=lambda name: task.versions[name].n * self._decay ** (task.seen - task.versions[name].tick),
        )

    def _changed(self, task: _Task, version: str) -> bool:
        r = self.policy
        base = self._baseline(task)
        if version == base or base not in task.versions:
            return False
        a, b = task.versions[version], task.versions[base]
        if min(a.raw, b.raw) < r.changed_min_samples or a.n <= 0 or b.n <= 0:
            return False
        return abs(a.accepted / a.n - b.accepted / b.n) >= r.changed_delta - 1e-12

    def _passed_probability(self, task: _Task, first: str) -> float:
        r = self.policy
        b = r.share * r.random_share
        if b >= 1.0:
            return 1.0
        remaining = (r.share - b) / (1.0 - b)
        total = sum(task.classes.values())
        p_first = 0.0
        for k in PASSED_CLASSES:
            f = task.classes[k] / total if total > 0 else 0.0
            p_k = 1.0 if f == 0 else min(1.0, remaining / f)
            remaining = max(0.0, remaining - p_k * f)
            if k == first:
                p_first = p_k
                break
        return b + (1.0 - b) * p_first

    # -- snapshots ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "tick": self._tick,
                "total": self._total,
                "tasks": {
                    name: {
                        "traffic": t.traffic,
                        "traffic_tick": t.traffic_tick,
                        "seen": t.seen,
                        "classes": t.classes,
                        "versions": {v: [s.n, s.accepted, s.tick, s.raw] for v, s in t.versions.items()},
                    }
                    for name, t in self._tasks.items()
                },
                "windows": {str(w): counts for w, counts in self._windows.items()},
                "share": {str(w): f for w, f in self._share.items()},
            }
        )

    def restore(self, raw: str | bytes) -> None:
        """Replace the statistics with a snapshot's, so a restarted worker decides as before."""
        saved = json.loads(raw)
        self._tick = int(saved.get("tick", 0))
        self._share = {int(w): [int(f[0]), int(f[1])] for w, f in saved.get("share", {}).items()}
        self._total = float(saved.get("total", 0.0))
        self._tasks = {}
        for name, t in saved.get("tasks", {}).items():
            classes = dict.fromkeys(PASSED_CLASSES, 0.0)
            classes.update({k: float(v) for k, v in t.get("classes", {}).items() if k in classes})
            self._tasks[name] = _Task(
                traffic=float(t["traffic"]),
                traffic_tick=int(t["traffic_tick"]),
                seen=int(t["seen"]),
                classes=classes,
                versions={
                    v: _Version(float(n), float(acc), int(tick), int(rawn))
                    for v, (n, acc, tick, rawn) in t["versions"].items()
                },
            )
        self._windows = {
            int(w): {k: int(n) for k, n in counts.items()} for w, counts in saved.get("windows", {}).items()
        }
