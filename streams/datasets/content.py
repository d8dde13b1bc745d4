"""What a sealed window's records are: splits, dedupe, difficulty, priority, selection, formats (pure).

No I/O in here. The builder reads a window's candidates once: pass 1 feeds `WindowStats.add` and
`Selection.offer` (a few small numbers per record) and builds each record without the window's
part of its priority (`sft_base_record`, `preference_base_record`); pass 2, once the statistics
are complete, adds that part (`with_context`), asks `Selection.keep`, and writes the records. Every function
is deterministic: the same candidates in the same log order give the same records.

Records carry no user ids and no session ids: the builder keeps a separate index of hashed user
ids per dataset, which is what erasure looks up.

Split: a keyed blake2b of the request id, read as a uniform number u in [0, 1); u < validation_share
is "validation". The same request is always on the same side, in every window and every rebuild.

Dedupe key: 64 bits of blake2b over the casefolded, whitespace-collapsed prompt and target.

Difficulty, in [0, 1] (used for curriculum order):

    difficulty = 0.35 * L + 0.25 * C + 0.25 * U + 0.15 * Q
    L = min(1, words(target) / 300)      longer targets are harder, saturating at 300 words
    C = 1 when the user corrected the response (the model got it wrong), else 0
    U = the model's uncertainty clamped to [0, 1], 0 when the app did not send it
    Q = 1 - quality_score (clamped to [0, 1]): a lower quality score is harder

Active-learning priority (higher first when caps or top_k must choose), with its reasons:

    + 1.0          "correction"   the user corrected the response (or it is labelled sft_correction)
    + uncertainty  "uncertainty"  the model's uncertainty in [0, 1] is always added when present;
                                  the reason is listed when it is >= 0.5
    + 0.5          "changed"      the record's model version accepts differently from the task type's
                                  baseline version: |acceptance difference| >= 0.15 with >= 30
                                  outcomes each (baseline: the version with most traffic in the
                                  task type; acceptance: share of accepted/copied outcomes)
    + 0.5          "rare_task"    the task type is < 5 % of the window's candidates

The first two depend on the record alone (`base_priority`), the last two on the window's complete
statistics (`context_priority`); `priority` is their sum.
"""

from __future__ import annotations

import heapq
import math
from array import array
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Mapping, TypedDict, TypeVar, cast

from schemas.conversation import message
from schemas.datasets import PreferenceRow, SftRow, Tool, Turn
from schemas.records import TrainingCandidate
from streams.datasets import chat
from streams.datasets.chat import DEFAULT_LAYOUT, ChatLayout, prompt_messages
from flywheel.policy import DatasetPolicy

SFT_LABELS = ("sft_positive", "sft_correction")
ACCEPTED_ACTIONS = ("accepted", "copied")
OTHER = "other"  # where task types and versions beyond the tracking cap are counted
MAX_TRACKED = 1000

# difficulty
LENGTH_SATURATION_WORDS = 300
DIFFICULTY_WEIGHTS = {"length": 0.35, "correction": 0.25, "uncertainty": 0.25, "quality": 0.15}

# priority
CORRECTION_BONUS = 1.0
UNCERTAINTY_REASON_AT = 0.5
CHANGED_BONUS = 0.5
RARE_BONUS = 0.5
CHANGED_DELTA = 0.15
CHANGED_MIN_SAMPLES = 30
RARE_SHARE = 0.05

DROP_REASONS = ("duplicate", "task_cap", "top_k")  # and, when on, keep_band and duplicate_near


# -- small pure functions --------------------------------------------------------------------------


def _h64(text: str, person: bytes) -> int:
    return int.from_bytes(blake2b(text.encode("utf-8"), digest_size=8, person=person).digest(), "big")


def split_of(request_id: str, validation_share: float) -> str:
    """'validation' for about `validation_share` of request ids, 'train' for the rest; stable."""
    u = _h64(request_id, b"flywheel-split") / 2**64
    return "validation" if u < validation_share else "train"


def normalise_text(text: str) -> str:
    return " ".join((text or "").casefold().split())


def dedupe_key(prompt: str, target: str) -> int:
    """64-bit key of the normalised (casefolded, whitespace collapsed) prompt and target."""
    return _h64(normalise_text(prompt) + "\x00" + normalise_text(target), b"flywheel-dedupe")


def tie_hash(request_id: str) -> int:
    """The tie-break among equal priorities: the lower hash wins."""
    return _h64(request_id, b"flywheel-tie")


def _corrected(c: TrainingCandidate) -> bool:
    return c.user_action == "corrected" or c.label == "sft_correction"


def _unit(x: float | None) -> float:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, float(x)))


def sft_target(c: TrainingCandidate) -> str | None:
    """The SFT target of an sft_positive / sft_correction candidate (its `target`; failing that the
    correction when corrected, else the response), or None when it has none or is not SFT-labelled."""
    if c.label not in SFT_LABELS:
        return None
    text = c.target
    if not (isinstance(text, str) and text.strip()):
        text = c.correction if _corrected(c) else c.response
    return text if isinstance(text, str) and text.strip() else None


def difficulty(c: TrainingCandidate) -> float:
    """In [0, 1]; the formula is in the module docstring."""
    target = sft_target(c)
    if target is None:
        target = c.target or (c.correction if _corrected(c) else c.response) or ""
    w = DIFFICULTY_WEIGHTS
    length = min(1.0, len(target.split()) / LENGTH_SATURATION_WORDS)
    value = (
        w["length"] * length
        + w["correction"] * (1.0 if _corrected(c) else 0.0)
        + w["uncertainty"] * _unit(c.uncertainty)
        + w["quality"] * (1.0 - _unit(c.quality_score))
    )
    return round(min(1.0, max(0.0, value)), 6)


def curriculum_bucket(difficulty: float, buckets: int) -> int:
    """0 (easiest) .. buckets - 1 (hardest): equal-width bins over [0, 1]."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    d = _unit(difficulty)
    return min(buckets - 1, int(d * buckets))


# -- window statistics -----------------------------------------------------------------------------


class WindowStats:
    """Pass-1 accumulator: traffic per task type and acceptance per (task type, model version).

    Bounded: at most `max_tracked` task types, and versions per task type; later ones are counted
    under "other". Every candidate is an outcome; accepted/copied ones count as accepted.
    """

    def __init__(
        self,
        changed_delta: float = CHANGED_DELTA,
        changed_min_samples: int = CHANGED_MIN_SAMPLES,
        rare_share: float = RARE_SHARE,
        max_tracked: int = MAX_TRACKED,
        baseline_model: str = "",
    ):
        self.changed_delta = changed_delta
        self.changed_min_samples = changed_min_samples
        self.rare_share = rare_share
        self.max_tracked = max_tracked
        self.baseline_model = baseline_model
        self.total = 0
        self.tasks: dict[str, int] = {}
        self.versions: dict[str, dict[str, list[int]]] = {}  # task -> version -> [outcomes, accepted]
        self._baselines: dict[str, str | None] = {}

    def task_key(self, task_type: str) -> str:
        if task_type in self.tasks or len(self.tasks) < self.max_tracked:
            return task_type
        return OTHER

    def _version_key(self, task: str, version: str) -> str:
        versions = self.versions.get(task, {})
        if version in versions or len(versions) < self.max_tracked:
            return version
        return OTHER

    def add(self, c: TrainingCandidate) -> None:
        self.add_counts(c.task_type, c.model_version, 1, 1 if c.user_action in ACCEPTED_ACTIONS else 0)

    def add_counts(self, task_type: str, model_version: str, outcomes: int, accepted: int) -> None:
        task = self.task_key(task_type)
        self.total += outcomes
        self.tasks[task] = self.tasks.get(task, 0) + outcomes
        versions = self.versions.setdefault(task, {})
        v = versions.setdefault(self._version_key(task, model_version), [0, 0])
        v[0] += outcomes
        v[1] += accepted
        self._baselines.pop(task, None)

    def merge(self, other: "WindowStats") -> None:
        """Add another part of the window (the statistics of one partition), in its first-seen order."""
        for task, versions in other.versions.items():
            for version, (outcomes, accepted) in versions.items():
                self.add_counts(task, version, outcomes, accepted)

    def share(self, task_type: str) -> float:
        return self.tasks.get(self.task_key(task_type), 0) / self.total if self.total else 0.0

    def rare(self, task_type: str) -> bool:
        return self.total > 0 and self.share(task_type) < self.rare_share

    def acceptance(self, task_type: str, model_version: str) -> float | None:
        task = self.task_key(task_type)
        v = self.versions.get(task, {}).get(self._version_key(task, model_version))
        return v[1] / v[0] if v and v[0] else None

    def baseline(self, task_type: str) -> str | None:
        """The version with the most outcomes in the task type (ties: the smallest name)."""
        if self.baseline_model:
            return self.baseline_model
        task = self.task_key(task_type)
        if task not in self._baselines:
            versions = self.versions.get(task, {})
            self._baselines[task] = min(versions, key=lambda name: (-versions[name][0], name)) if versions else None
        return self._baselines[task]

    def changed(self, task_type: str, model_version: str) -> bool:
        task = self.task_key(task_type)
        versions = self.versions.get(task, {})
        base = self.baseline(task_type)
        version = self._version_key(task, model_version)
        if base is None or version == base or base not in versions or version not in versions:
            return False
        a, b = versions[version], versions[base]
        if min(a[0], b[0]) < self.changed_min_samples:
            return False
        return abs(a[1] / a[0] - b[1] / b[0]) >= self.changed_delta - 1e-12

    def to_dict(self) -> dict[str, Any]:
        """A summary for the manifest."""
        return {
            "total": self.total,
            "task_types": dict(sorted(self.tasks.items())),
            "changed": sorted(f"{t}/{v}" for t, vs in self.versions.items() for v in vs if self.changed(t, v)),
            "rare": sorted(t for t in self.tasks if self.rare(t)),
        }


# -- priority --------------------------------------------------------------------------------------


def base_priority(c: TrainingCandidate) -> tuple[float, list[str]]:
    """The part of the priority that depends on the record alone: correction and uncertainty."""
    value, reasons = 0.0, []
    if _corrected(c):
        value += CORRECTION_BONUS
        reasons.append("correction")
    if c.uncertainty is not None:
        u = _unit(c.uncertainty)
        value += u
        if u >= UNCERTAINTY_REASON_AT:
            reasons.append("uncertainty")
    return value, reasons


def context_priority(task_type: str, model_version: str, stats: WindowStats) -> tuple[float, list[str]]:
    """The part that depends on the window: changed behaviour and rare task type."""
    value, reasons = 0.0, []
    if stats.changed(task_type, model_version):
        value += CHANGED_BONUS
        reasons.append("changed")
    if stats.rare(task_type):
        value += RARE_BONUS
        reasons.append("rare_task")
    return value, reasons


def priority(c: TrainingCandidate, stats: WindowStats) -> tuple[float, list[str]]:
    """The active-learning priority carried on each record, and why (module docstring)."""
    b, br = base_priority(c)
    x, xr = context_priority(c.task_type, c.model_version, stats)
    return b + x, br + xr


# -- records ---------------------------------------------------------------------------------------


def _policy(c: TrainingCandidate, policy_version: str | None) -> str:
    return c.policy_version if policy_version is None else policy_version


def sft_record(
    c: TrainingCandidate,
    stats: WindowStats,
    validation_share: float,
    policy_version: str | None = None,
    layout: ChatLayout | None = None,
) -> SftRow | None:
    """The SftRecord (schemas/avro/sft_record.v2.avsc) of an SFT-labelled candidate, or None.

    `policy_version` defaults to the stamp the gate left on the candidate; `layout` (streams/datasets/
    chat.py) places the system prompt, history and retrieved context in the record's `messages`."""
    record = sft_base_record(c, validation_share, policy_version, layout)
    return None if record is None else with_context(record, stats)


def sft_base_record(
    c: TrainingCandidate, validation_share: float, policy_version: str | None = None, layout: ChatLayout | None = None
) -> SftRow | None:
    """`sft_record` with only the record's own part of the priority: what can be built before the
    window's statistics are complete (`with_context` adds the rest)."""
    target = sft_target(c)
    if target is None:
        return None
    p, reasons = base_priority(c)
    row = {
        "request_id": c.request_id,
        "prompt": c.prompt,
        "target": target,
        "task_type": c.task_type,
        "user_action": c.user_action,
        "label": c.label,
        "model_version": c.model_version,
        "quality_score": float(c.quality_score),
        "difficulty": difficulty(c),
        "priority": float(p),
        "priority_reasons": reasons,
        "split": split_of(c.request_id, validation_share),
        "event_time": int(c.timestamp),
        "policy_version": _policy(c, policy_version),
        **_conversation(c, layout),
        "target_tool_calls": [dict(t) for t in c.response_tool_calls]
        if target == c.response and not _corrected(c)
        else [],
    }
    return cast(SftRow, row)  # the ** of the chat parts: a TypedDict literal mypy cannot follow


class _Conversation(TypedDict):
    messages: list[Turn]
    context: list[str]
    tools: list[Tool]


def _conversation(c: TrainingCandidate, layout: ChatLayout | None) -> _Conversation:
    """The chat-form parts of a record: what the model saw, laid out (streams/datasets/chat.py)."""
    messages = c.messages or ([message("user", c.prompt)] if c.prompt else [])
    return {
        "messages": cast(
            list[Turn], prompt_messages(c.system, messages, c.retrieved_context, layout or DEFAULT_LAYOUT)
        ),
        "context": [p for p in (c.retrieved_context or ()) if isinstance(p, str)],
        "tools": cast(list[Tool], [dict(t) for t in c.tools]),
    }


Row = TypeVar("Row", SftRow, PreferenceRow)


def with_context(record: Row, stats: WindowStats, cache: dict | None = None) -> Row:
    """A base record (`sft_base_record`, `preference_base_record`) with the window's part of its
    priority added: the same as building it with `priority`. `cache` keeps that part per (task
    type, model version) across calls with the same complete statistics."""
    key = (record["task_type"], record["model_version"])
    context = None if cache is None else cache.get(key)
    if context is None:
        context = context_priority(key[0], key[1], stats)
        if cache is not None:
            cache[key] = context
    x, reasons = context
    record["priority"] = float(record["priority"] + x)
    record["priority_reasons"] = record["priority_reasons"] + reasons
    return record


def _pair_ok(prompt: Any, chosen: Any, rejected: Any) -> bool:
    return all(isinstance(t, str) and t.strip() for t in (prompt, chosen, rejected)) and normalise_text(
        chosen
    ) != normalise_text(rejected)


def preference_record(
    c: TrainingCandidate,
    stats: WindowStats,
    validation_share: float,
    policy_version: str | None = None,
    layout: ChatLayout | None = None,
) -> PreferenceRow | None:
    """The PreferenceRecord of a candidate that carries a pair (a correction: chosen = the correction,
    rejected = the response), or None: no pair, an empty side, or both sides the same text."""
    record = preference_base_record(c, validation_share, policy_version, layout)
    return None if record is None else with_context(record, stats)


def preference_base_record(
    c: TrainingCandidate, validation_share: float, policy_version: str | None = None, layout: ChatLayout | None = None
) -> PreferenceRow | None:
    """`preference_record` with only the record's own part of the priority (see `sft_base_record`)."""
    if not _pair_ok(c.prompt, c.pair_chosen, c.pair_rejected):
        return None
    p, reasons = base_priority(c)
    row = {
        "request_id": c.request_id,
        "prompt": c.prompt,
        "chosen": c.pair_chosen,
        "rejected": c.pair_rejected,
        "source": "correction" if _corrected(c) else "pair",
        "task_type": c.task_type,
        "model_version": c.model_version,
        "priority": float(p),
        "priority_reasons": reasons,
        "split": split_of(c.request_id, validation_share),
        "event_time": int(c.timestamp),
        "policy_version": _policy(c, policy_version),
        **_conversation(c, layout),
    }
    return cast(PreferenceRow, row)  # the ** of the chat parts: a TypedDict literal mypy cannot follow


def regeneration_pair_record(
    regenerated: TrainingCandidate | str,
    successor: TrainingCandidate,
    stats: WindowStats,
    validation_share: float,
    policy_version: str | None = None,
    layout: ChatLayout | None = None,
) -> PreferenceRow | None:
    """The pair a regeneration makes: prompt of the successor, chosen = the successor's SFT target,
    rejected = the regenerated response (a candidate, or its response text). None when the successor
    has no target or both sides are the same text.

    Keyed, split and prioritised by the successor's request (so it lands on the same side as the
    successor's SFT record); model_version is the regenerated candidate's (the model that wrote the
    rejected side), or the successor's when only the text is given."""
    if isinstance(regenerated, TrainingCandidate):
        rejected, model_version = regenerated.response, regenerated.model_version or successor.model_version
    else:
        rejected, model_version = regenerated, successor.model_version
    chosen = sft_target(successor)
    if chosen is None and successor.user_action in ("accepted", "copied", "corrected"):
        chosen = successor.correction if _corrected(successor) and successor.correction else successor.response
    if not _pair_ok(successor.prompt, chosen, rejected):
        return None
    p, reasons = priority(successor, stats)
    row = {
        "request_id": successor.request_id,
        "prompt": successor.prompt,
        "chosen": chosen,
        "rejected": rejected,
        "source": "regeneration",
        "task_type": successor.task_type,
        "model_version": model_version,
        "priority": float(p),
        "priority_reasons": reasons,
        "split": split_of(successor.request_id, validation_share),
        "event_time": int(successor.timestamp),
        "policy_version": _policy(successor, policy_version),
        **_conversation(successor, layout),
    }
    return cast(PreferenceRow, row)  # the ** of the chat parts: a TypedDict literal mypy cannot follow


# -- selection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeepBand:
    """The seed's "keep the top 20-30 % of logged examples", decided over a whole window: per task
    type, the `high` share of the window's candidates (passed and rejected) with the best quality
    score, ties by the lowest `tie_hash`; a task type with fewer than `min_samples` candidates in
    the window is not cut. Only what the gate passed and makes an SFT record can be kept."""

    high: float
    min_samples: int = 0


class Selection:
    """Which SFT records a window keeps: the keep band, dedupe, per-task caps, top K.

    Pass 1: `offer_log` (or `offer`) every SFT record and `log_scores` every other candidate of the
    window, in any order; then `finish`; pass 2: `keep(request_id)`. Every decision is a function
    of the window's records alone, whatever their order or how they were split into parts:

    - the keep band (`KeepBand`) first;
    - then duplicates: a record is a duplicate when a record of the window that comes earlier by
      (event time, tie hash) and survived the band has the same dedupe key (exact) or shares one of
      its near-duplicate keys (the gate's LSH bands), or when an earlier window's dataset kept one
      (`prior_keys`);
    - caps and top K keep the highest priority, ties by the lowest `tie_hash`; caps apply first,
      top K to what the caps left.

    Memory: about 40 bytes per offered record plus 8 per near-duplicate key (numpy arrays at
    `finish`); after it, the set of kept tie hashes.

    One pass can do both statistics and selection: offer `base_priority(c)` with the record's
    `model_version`, and call `finish(stats)` with the complete statistics, which adds
    `context_priority` per (task type, model version); the result equals `priority(c, stats)`.
    Without `stats` (or for offers made without a model_version), the offered priorities are final.
    """

    def __init__(
        self,
        policy: DatasetPolicy,
        *,
        keep_band: KeepBand | None = None,
        near_duplicates: bool = False,
        prior_keys: Any = None,
    ):
        self.policy = policy
        self.keep_band = keep_band
        self.near_duplicates = near_duplicates
        self.prior_keys = prior_keys  # sorted uint64 numpy array of earlier windows' kept keys, or None
        self.log = OfferLog()
        self._kept: set[int] | None = None
        self._kept_keys: bytes = b""
        self._dropped = dict.fromkeys(DROP_REASONS, 0)

    @property
    def offered(self) -> int:
        return len(self.log)

    def offer(
        self,
        request_id: str,
        task_type: str,
        dedupe_key: int,
        priority: float,
        model_version: str | None = None,
        *,
        event_time: int = 0,
        score: float = 0.0,
        near: bytes = b"",
    ) -> None:
        self._accepting()
        self.log.append(tie_hash(request_id), task_type, dedupe_key, priority, model_version, event_time, score, near)

    def offer_candidate(self, c: TrainingCandidate) -> None:
        """Offer an SFT candidate with its base priority (finish with `stats`); log the others' scores."""
        self._accepting()
        self.log.add(c)

    def offer_log(self, offers: "OfferLog") -> None:
        """Offer what one part of the window (a partition, read elsewhere) recorded."""
        self._accepting()
        self.log.extend(offers)

    def log_scores(self, task_type: str, scores: Any, ties: Any) -> None:
        """Candidates of the window that make no SFT record (rejected ones too): they count toward
        the keep band's share."""
        self._accepting()
        self.log.log_scores(task_type, scores, ties)

    def _accepting(self) -> None:
        if self._kept is not None:
            raise RuntimeError("Selection.offer after finish()")

    def finish(self, stats: WindowStats | None = None) -> None:
        import numpy as np

        if self._kept is not None:
            return
        log = self.log
        groups = log.groups
        n = len(log)
        tie = np.frombuffer(log.ties, dtype=np.uint64) if n else np.zeros(0, np.uint64)
        prio = np.array(log.priorities, dtype=np.float64)
        group = np.frombuffer(log.group_index, dtype=np.uint32) if n else np.zeros(0, np.uint32)
        if stats is not None and n:
            bonus = np.array([context_priority(t, v or "", stats)[0] if v is not None else 0.0 for t, v in groups])
            prio = prio + bonus[group]
        alive = np.ones(n, dtype=bool)
        if self.keep_band is not None and n:
            alive &= self._in_band(np, tie, group)
            self._dropped["keep_band"] = int(n - alive.sum())
        if n:
            self._dedupe(np, tie, alive)
        p = self.policy
        caps = {t: p.task_caps.get(t, p.default_task_cap) for t in {t for t, _ in groups}}
        capped = [caps[t] > 0 for t, _ in groups]
        alive_b = bytearray(alive.astype(np.uint8).tobytes())
        before = alive_b.count(0)
        heaps: dict[str, list] = {}
        prio_l, tie_l, group_l = prio.tolist(), tie.tolist(), group.tolist()
        for i in range(n):
            if not alive_b[i]:
                continue
            g = group_l[i]
            if capped[g]:
                t = groups[g][0]
                _push_bounded(heaps.setdefault(t, []), caps[t], prio_l[i], tie_l[i], i, alive_b)
        self._dropped["task_cap"] = alive_b.count(0) - before
        if p.top_k > 0:
            top: list = []
            before = alive_b.count(0)
            for i in range(n):
                if alive_b[i]:
                    _push_bounded(top, p.top_k, prio_l[i], tie_l[i], i, alive_b)
            self._dropped["top_k"] = alive_b.count(0) - before
        kept = np.frombuffer(bytes(alive_b), dtype=np.uint8).astype(bool) if n else alive
        self._kept = set(tie[kept].tolist())
        keys = [log.dedupe_array(np)[kept]]
        if self.near_duplicates:
            near = log.near_matrix(np)[kept]
            keys.append(near[near != 0])
        self._kept_keys = np.unique(np.concatenate(keys)).astype("<u8").tobytes()
        self.log = OfferLog()

    def _in_band(self, np, tie, group) -> Any:
        """Whether each offer is among its task type's best `high` share of the window's candidates."""
        band, log = self.keep_band, self.log
        assert band is not None  # called only with a keep band
        task_of_group = np.array([log.task_index(t) for t, _ in log.groups], dtype=np.int64)
        offer_task = task_of_group[group]
        scores = np.concatenate([np.array(log.scores, dtype=np.float64), np.array(log.other_scores, dtype=np.float64)])
        ties = np.concatenate(
            [tie, np.frombuffer(log.other_ties, dtype=np.uint64) if len(log.other_ties) else np.zeros(0, np.uint64)]
        )
        tasks = np.concatenate([offer_task, np.array(log.other_tasks, dtype=np.int64)])
        inside = np.zeros(len(ties), dtype=bool)
        for t in np.unique(tasks):
            members = np.flatnonzero(tasks == t)
            if len(members) < max(1, band.min_samples):
                inside[members] = True
                continue
            k = max(1, math.ceil(band.high * len(members) - 1e-9))
            order = np.lexsort((ties[members], -scores[members]))  # best score first, then lowest tie
            inside[members[order[:k]]] = True
        return inside[: len(tie)]

    def _dedupe(self, np, tie, alive) -> None:
        """Mark duplicates not alive: earliest (event time, tie) wins, whatever the arrival order."""
        p, log = self.policy, self.log
        idx = np.flatnonzero(alive)
        if not len(idx):
            return
        times = np.frombuffer(log.event_times, dtype=np.int64)[idx]
        order = idx[np.lexsort((tie[idx], times))]
        prior = self.prior_keys if self.prior_keys is not None and len(self.prior_keys) else None
        columns = []
        if p.dedupe:
            columns.append(("duplicate", log.dedupe_array(np)[order][:, None]))
        if self.near_duplicates:
            columns.append(("duplicate_near", log.near_matrix(np)[order]))
        dup = np.zeros(len(order), dtype=bool)
        for reason, matrix in columns:
            hit = np.zeros(len(order), dtype=bool)
            for j in range(matrix.shape[1]):
                col = matrix[:, j]
                _, first = np.unique(col, return_index=True)
                earlier = np.ones(len(col), dtype=bool)
                earlier[first] = False  # the first of each key is no duplicate of this window's
                if prior is not None:
                    earlier |= np.isin(col, prior, assume_unique=False)
                hit |= earlier & (col != 0)
            new = hit & ~dup
            self._dropped[reason] = self._dropped.get(reason, 0) + int(new.sum())
            dup |= hit
        alive[order[dup]] = False

    def keep(self, request_id: str) -> bool:
        if self._kept is None:
            raise RuntimeError("Selection.keep before finish()")
        return tie_hash(request_id) in self._kept

    def kept_among(self, ties) -> set[int]:
        """The kept ones among some tie hashes (one partition's): what a partition's writer asks `in`."""
        if self._kept is None:
            raise RuntimeError("Selection.kept_among before finish()")
        return {t for t in ties if t in self._kept}

    def kept_keys(self) -> bytes:
        """The kept records' dedupe and near-duplicate keys, sorted little-endian uint64: what later
        windows treat as seen (`prior_keys`)."""
        if self._kept is None:
            raise RuntimeError("Selection.kept_keys before finish()")
        return self._kept_keys

    @property
    def kept(self) -> int:
        if self._kept is None:
            raise RuntimeError("Selection.kept before finish()")
        return len(self._kept)

    def counts(self) -> dict[str, int]:
        """Dropped records by reason: keep_band, duplicate, duplicate_near, task_cap, top_k."""
        return dict(self._dropped)


def offer_facts(c: TrainingCandidate, tie: int | None = None) -> tuple[int, str, int, float, str] | None:
    """What `Selection` needs of an SFT candidate: tie hash (`tie`, when the caller has it), task
    type, dedupe key, base priority, model version; None for a candidate that makes no SFT record."""
    target = sft_target(c)
    if target is None:
        return None
    return (
        tie_hash(c.request_id) if tie is None else tie,
        c.task_type,
        dedupe_key(c.prompt, target),
        base_priority(c)[0],
        c.model_version,
    )


NEAR_KEY_BYTES = 8


class OfferLog:
    """The offers of one part of a window in compact arrays (about 40 bytes a record plus its
    near-duplicate keys), and the quality scores of its other candidates, to be merged into one
    `Selection`: partitions are read in parallel, selection is one."""

    def __init__(self) -> None:
        self.ties = array("Q")
        self.dedupe_keys = array("Q")
        self.priorities = array("d")
        self.group_index = array("I")
        self.event_times = array("q")
        self.scores = array("d")
        self.near = bytearray()  # per offer `bands` keys of 8 bytes (zeros when the candidate has none)
        self.bands = 0
        self.groups: list[tuple[str, str | None]] = []
        self.tasks: list[str] = []
        self.other_tasks = array("q")  # candidates that make no SFT record: task index, score, tie
        self.other_scores = array("d")
        self.other_ties = array("Q")
        self._group_of: dict[tuple[str, str | None], int] = {}
        self._task_of: dict[str, int] = {}

    def task_index(self, task_type: str) -> int:
        i = self._task_of.get(task_type)
        if i is None:
            i = self._task_of[task_type] = len(self.tasks)
            self.tasks.append(task_type)
        return i

    def add(self, c: TrainingCandidate, tie: int | None = None) -> None:
        """`c`'s offer; `tie` is its tie hash when the caller has it already."""
        facts = offer_facts(c, tie)
        if facts is None:
            self.other_tasks.append(self.task_index(c.task_type))
            self.other_scores.append(float(c.quality_score))
            self.other_ties.append(tie_hash(c.request_id) if tie is None else tie)
            return
        tie, task_type, key, prio, version = facts
        self.append(tie, task_type, key, prio, version, c.timestamp, c.quality_score, c.dedup_keys)

    def append(
        self,
        tie: int,
        task_type: str,
        key: int,
        prio: float,
        version: str | None,
        event_time: int,
        score: float,
        near: bytes,
    ) -> None:
        g = self._group_of.get((task_type, version))
        if g is None:
            g = self._group_of[(task_type, version)] = len(self.groups)
            self.groups.append((task_type, version))
            self.task_index(task_type)
        if not self.bands and near:
            self.bands = len(near) // NEAR_KEY_BYTES
            self.near.extend(bytes(len(self.ties) * self.bands * NEAR_KEY_BYTES))  # earlier offers had none
        width = self.bands * NEAR_KEY_BYTES
        self.near.extend(near[:width].ljust(width, b"\0"))
        self.ties.append(tie)
        self.dedupe_keys.append(key)
        self.priorities.append(float(prio))
        self.group_index.append(g)
        self.event_times.append(int(event_time))
        self.scores.append(float(score))

    def log_scores(self, task_type: str, scores, ties) -> None:
        t = self.task_index(task_type)
        for score, tie in zip(scores, ties):
            self.other_tasks.append(t)
            self.other_scores.append(float(score))
            self.other_ties.append(int(tie))

    def extend(self, other: "OfferLog") -> None:
        """Append another part's offers (group and task indices renumbered into this log's)."""
        if other.bands and not self.bands:
            self.bands = other.bands
            self.near.extend(bytes(len(self.ties) * self.bands * NEAR_KEY_BYTES))
        width = self.bands * NEAR_KEY_BYTES
        regroup = []
        for task_type, version in other.groups:
            g = self._group_of.get((task_type, version))
            if g is None:
                g = self._group_of[(task_type, version)] = len(self.groups)
                self.groups.append((task_type, version))
                self.task_index(task_type)
            regroup.append(g)
        self.group_index.extend(regroup[g] for g in other.group_index)
        self.ties.extend(other.ties)
        self.dedupe_keys.extend(other.dedupe_keys)
        self.priorities.extend(other.priorities)
        self.event_times.extend(other.event_times)
        self.scores.extend(other.scores)
        if other.bands == self.bands:
            self.near.extend(other.near)
        else:  # a part written with another band count: its keys are padded or cut to this one's
            ow = other.bands * NEAR_KEY_BYTES
            for i in range(len(other)):
                self.near.extend(bytes(other.near[i * ow : (i + 1) * ow])[:width].ljust(width, b"\0"))
        retask = [self.task_index(t) for t in other.tasks]
        self.other_tasks.extend(retask[t] for t in other.other_tasks)
        self.other_scores.extend(other.other_scores)
        self.other_ties.extend(other.other_ties)

    def dedupe_array(self, np):
        return np.frombuffer(self.dedupe_keys, dtype=np.uint64) if len(self.dedupe_keys) else np.zeros(0, np.uint64)

    def near_matrix(self, np):
        if not self.bands or not len(self):
            return np.zeros((len(self), 0), dtype=np.uint64)
        return np.frombuffer(bytes(self.near), dtype="<u8").reshape(len(self), self.bands)

    def __len__(self) -> int:
        return len(self.ties)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_group_of", "_task_of")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._group_of = {key: i for i, key in enumerate(self.groups)}
        self._task_of = {t: i for i, t in enumerate(self.tasks)}


def _push_bounded(heap: list, limit: int, prio: float, tie: int, index: int, alive: bytearray) -> None:
    """Keep the `limit` best (highest priority, then lowest tie) in a min-heap of the worst first;
    mark what falls out as not alive."""
    entry = (prio, -tie, index)
    if len(heap) < limit:
        heapq.heappush(heap, entry)
        return
    if entry > heap[0]:
        _, _, out = heapq.heapreplace(heap, entry)
    else:
        out = index
    alive[out] = 0


# -- chat formats ----------------------------------------------------------------------------------


def _prompt_turns(record: Mapping[str, Any]) -> list[dict]:
    """A record's prompt side as JSONL chat turns: its laid-out `messages` (v2), else the prompt (v1)."""
    if record.get("messages"):
        return chat.plain(record["messages"])
    return [{"role": "user", "content": record["prompt"]}]


def chat_sft(record: Mapping[str, Any]) -> dict:
    """An SftRecord in the chat "messages" format (system prompt, history and retrieved context as
    laid out in the record, then the target), with its metadata."""
    return {
        "messages": _prompt_turns(record)
        + [chat.answer_turn(record["target"], record.get("target_tool_calls") or ())],
        "metadata": {
            k: record[k] for k in ("request_id", "task_type", "split", "difficulty", "priority", "priority_reasons")
        },
        **chat.tools_key(record),
    }


def chat_preference(record: Mapping[str, Any]) -> dict:
    """A PreferenceRecord in TRL's conversational preference format (prompt / chosen / rejected)."""
    return {
        "prompt": _prompt_turns(record),
        "chosen": [{"role": "assistant", "content": record["chosen"]}],
        "rejected": [{"role": "assistant", "content": record["rejected"]}],
        "metadata": {
            k: record[k] for k in ("request_id", "task_type", "split", "source", "priority", "priority_reasons")
        },
        **chat.tools_key(record),
    }
