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
from hashlib import blake2b
from typing import Any, Mapping

from schemas.records import TrainingCandidate
from streams.gate.policy import DatasetPolicy

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

DROP_REASONS = ("duplicate", "task_cap", "top_k")


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
    value = (w["length"] * length + w["correction"] * (1.0 if _corrected(c) else 0.0)
             + w["uncertainty"] * _unit(c.uncertainty) + w["quality"] * (1.0 - _unit(c.quality_score)))
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

    def __init__(self, changed_delta: float = CHANGED_DELTA, changed_min_samples: int = CHANGED_MIN_SAMPLES,
                 rare_share: float = RARE_SHARE, max_tracked: int = MAX_TRACKED, baseline_model: str = ""):
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
        return {"total": self.total, "task_types": dict(sorted(self.tasks.items())),
                "changed": sorted(f"{t}/{v}" for t, vs in self.versions.items() for v in vs if self.changed(t, v)),
                "rare": sorted(t for t in self.tasks if self.rare(t))}


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


def sft_record(c: TrainingCandidate, stats: WindowStats, validation_share: float,
               policy_version: str | None = None) -> dict | None:
    """The SftRecord (schemas/avro/sft_record.v1.avsc) of an SFT-labelled candidate, or None.

    `policy_version` defaults to the stamp the gate left on the candidate."""
    record = sft_base_record(c, validation_share, policy_version)
    return None if record is None else with_context(record, stats)


def sft_base_record(c: TrainingCandidate, validation_share: float, policy_version: str | None = None) -> dict | None:
    """`sft_record` with only the record's own part of the priority: what can be built before the
    window's statistics are complete (`with_context` adds the rest)."""
    target = sft_target(c)
    if target is None:
        return None
    p, reasons = base_priority(c)
    return {
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
    }


def with_context(record: dict, stats: WindowStats, cache: dict | None = None) -> dict:
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
    return (all(isinstance(t, str) and t.strip() for t in (prompt, chosen, rejected))
            and normalise_text(chosen) != normalise_text(rejected))


def preference_record(c: TrainingCandidate, stats: WindowStats, validation_share: float,
                      policy_version: str | None = None) -> dict | None:
    """The PreferenceRecord of a candidate that carries a pair (a correction: chosen = the correction,
    rejected = the response), or None: no pair, an empty side, or both sides the same text."""
    record = preference_base_record(c, validation_share, policy_version)
    return None if record is None else with_context(record, stats)


def preference_base_record(c: TrainingCandidate, validation_share: float, policy_version: str | None = None) -> dict | None:
    """`preference_record` with only the record's own part of the priority (see `sft_base_record`)."""
    if not _pair_ok(c.prompt, c.pair_chosen, c.pair_rejected):
        return None
    p, reasons = base_priority(c)
    return {
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
    }


def regeneration_pair_record(regenerated: TrainingCandidate | str, successor: TrainingCandidate, stats: WindowStats,
                             validation_share: float, policy_version: str | None = None) -> dict | None:
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
    return {
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
    }


# -- selection -------------------------------------------------------------------------------------

class Selection:
    """Which SFT records a window keeps: dedupe (first in offer order), per-task caps, top K.

    Pass 1: `offer` every SFT record in log order; then `finish`; pass 2: `keep(request_id)`.
    Caps and top K keep the highest priority, ties by the lowest `tie_hash` of the request id; caps
    apply first, top K to what the caps left. Memory: per offered record an 8-byte tie hash, an
    8-byte priority and a 4-byte group index (plus the set of dedupe keys when dedupe is on); after
    `finish`, the set of kept tie hashes. The heaps are bounded by the cap and by K.

    One pass can do both statistics and selection: offer `base_priority(c)` with the record's
    `model_version`, and call `finish(stats)` with the complete statistics, which adds
    `context_priority` per (task type, model version); the result equals `priority(c, stats)`.
    Without `stats` (or for offers made without a model_version), the offered priorities are final.
    """

    def __init__(self, policy: DatasetPolicy):
        self.policy = policy
        self._seen: set[int] = set()
        self._tie = array("Q")
        self._prio = array("d")
        self._group = array("I")
        self._groups: dict[tuple[str, str | None], int] = {}
        self._kept: set[int] | None = None
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self.offered = 0

    def offer(self, request_id: str, task_type: str, dedupe_key: int, priority: float,
              model_version: str | None = None) -> None:
        self.offer_hashed(tie_hash(request_id), task_type, dedupe_key, priority, model_version)

    def offer_hashed(self, tie: int, task_type: str, dedupe_key: int, priority: float,
                     model_version: str | None = None) -> None:
        """`offer` with the request id's `tie_hash` already taken (by whoever read the record)."""
        if self._kept is not None:
            raise RuntimeError("Selection.offer after finish()")
        self.offered += 1
        if self.policy.dedupe:
            if dedupe_key in self._seen:
                self._dropped["duplicate"] += 1
                return
            self._seen.add(dedupe_key)
        group = self._groups.setdefault((task_type, model_version), len(self._groups))
        self._tie.append(tie)
        self._prio.append(float(priority))
        self._group.append(group)

    def offer_candidate(self, c: TrainingCandidate) -> None:
        """Offer an SFT candidate with its base priority (finish with `stats`); others are ignored."""
        facts = offer_facts(c)
        if facts is not None:
            self.offer_hashed(*facts)

    def offer_log(self, offers: "OfferLog") -> None:
        """Offer what one part of the window (a partition, read elsewhere) recorded, in its order."""
        groups = offers.groups
        for tie, key, prio, g in zip(offers.ties, offers.dedupe_keys, offers.priorities, offers.group_index):
            task_type, model_version = groups[g]
            self.offer_hashed(tie, task_type, key, prio, model_version)

    def finish(self, stats: WindowStats | None = None) -> None:
        if self._kept is not None:
            return
        groups = [None] * len(self._groups)
        for key, i in self._groups.items():
            groups[i] = key
        prio = self._prio
        if stats is not None:
            bonus = [context_priority(t, v or "", stats)[0] if v is not None else 0.0 for t, v in groups]
            for i in range(len(prio)):
                prio[i] = prio[i] + bonus[self._group[i]]
        p = self.policy
        caps = {t: p.task_caps.get(t, p.default_task_cap) for t in {t for t, _ in groups}}
        heaps: dict[str, list] = {}
        capped = [caps[t] > 0 for t, _ in groups]
        alive = bytearray(b"\x01") * len(prio)
        for i in range(len(prio)):
            g = self._group[i]
            if not capped[g]:
                continue
            t = groups[g][0]
            _push_bounded(heaps.setdefault(t, []), caps[t], prio[i], self._tie[i], i, alive)
        self._dropped["task_cap"] = alive.count(0)
        if p.top_k > 0:
            top: list = []
            before = alive.count(0)
            for i in range(len(prio)):
                if alive[i]:
                    _push_bounded(top, p.top_k, prio[i], self._tie[i], i, alive)
            self._dropped["top_k"] = alive.count(0) - before
        self._kept = {self._tie[i] for i in range(len(prio)) if alive[i]}
        self._seen = set()
        self._tie, self._prio, self._group = array("Q"), array("d"), array("I")

    def keep(self, request_id: str) -> bool:
        if self._kept is None:
            raise RuntimeError("Selection.keep before finish()")
        return tie_hash(request_id) in self._kept

    def kept_among(self, ties) -> set[int]:
        """The kept ones among some tie hashes (one partition's): what a partition's writer asks `in`."""
        if self._kept is None:
            raise RuntimeError("Selection.kept_among before finish()")
        return {t for t in ties if t in self._kept}

    @property
    def kept(self) -> int:
        if self._kept is None:
            raise RuntimeError("Selection.kept before finish()")
        return len(self._kept)

    def counts(self) -> dict[str, int]:
        """Dropped records by reason: duplicate, task_cap, top_k."""
        return dict(self._dropped)


def offer_facts(c: TrainingCandidate) -> tuple[int, str, int, float, str] | None:
    """What `Selection` needs of an SFT candidate: tie hash, task type, dedupe key, base priority,
    model version; None for a candidate that makes no SFT record."""
    target = sft_target(c)
    if target is None:
        return None
    return tie_hash(c.request_id), c.task_type, dedupe_key(c.prompt, target), base_priority(c)[0], c.model_version


class OfferLog:
    """The offers of one part of a window in compact arrays (20 bytes a record), to be handed to
    `Selection.offer_log` in the window's order: partitions are read in parallel, selection is one."""

    def __init__(self) -> None:
        self.ties = array("Q")
        self.dedupe_keys = array("Q")
        self.priorities = array("d")
        self.group_index = array("I")
        self.groups: list[tuple[str, str]] = []
        self._group_of: dict[tuple[str, str], int] = {}

    def add(self, c: TrainingCandidate) -> None:
        facts = offer_facts(c)
        if facts is None:
            return
        tie, task_type, key, prio, version = facts
        g = self._group_of.get((task_type, version))
        if g is None:
            g = self._group_of[(task_type, version)] = len(self.groups)
            self.groups.append((task_type, version))
        self.ties.append(tie)
        self.dedupe_keys.append(key)
        self.priorities.append(prio)
        self.group_index.append(g)

    def __len__(self) -> int:
        return len(self.ties)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_group_of"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._group_of = {key: i for i, key in enumerate(self.groups)}


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

def chat_sft(record: Mapping[str, Any]) -> dict:
    """An SftRecord in the chat "messages" format, with its metadata."""
    return {
        "messages": [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["target"]}],
        "metadata": {k: record[k] for k in ("request_id", "task_type", "split", "difficulty", "priority", "priority_reasons")},
    }


def chat_preference(record: Mapping[str, Any]) -> dict:
    """A PreferenceRecord in TRL's conversational preference format (prompt / chosen / rejected)."""
    return {
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "chosen": [{"role": "assistant", "content": record["chosen"]}],
        "rejected": [{"role": "assistant", "content": record["rejected"]}],
        "metadata": {k: record[k] for k in ("request_id", "task_type", "split", "source", "priority", "priority_reasons")},
    }
