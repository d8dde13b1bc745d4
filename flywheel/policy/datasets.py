"""The datasets section: how sealed windows become training datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from flywheel.policy.loader import Check, at_least

__all__ = ["DatasetPolicy"]


@dataclass(frozen=True)
class DatasetPolicy:
    """How sealed windows become training datasets (the seed's Sections 05, 07 and 09)."""

    window_days: int = 7  # tumbling event-time windows of one to four weeks
    # a window is sealed only when the watermark passes its end plus this: never train on this week's data
    lag_days: int = 14
    validation_share: float = 0.10  # by hash of request_id: the same request is always on the same side
    dedupe: bool = True  # one record per normalised (prompt, target) in a window
    task_caps: Mapping[str, int] = field(default_factory=dict)  # most SFT records per task type (stratification)
    default_task_cap: int = 0  # for task types not in task_caps; 0: no cap
    top_k: int = 0  # keep only the K SFT records of highest active-learning priority; 0: all
    curriculum: bool = False  # order records easy first (by difficulty bucket) instead of by log order
    curriculum_buckets: int = 10
    pair_regenerations: bool = True  # pair a regenerated response with the accepted one that followed it
    regeneration_gap_minutes: int = 60
    shard_records: int = 50_000  # records per Avro / JSONL shard
    chat_context: str = "system"  # where chat records put retrieved passages: system (after the instructions), user (before the answered turn's text), turn (a user turn before it), none; see streams/datasets/chat.py
    chat_context_template: str = "Answer using only the documents below when they hold the answer.\n\n{passages}"
    chat_passage_template: str = "[{n}] {text}"  # {n}: the passage's 1-based position, {text}: the passage

    def check(self, bad: Check) -> None:
        if self.chat_context not in ("system", "user", "turn", "none"):
            bad("[datasets] chat_context", f"must be one of system, user, turn, none; got {self.chat_context!r}")
        if "{passages}" not in self.chat_context_template:
            bad("[datasets] chat_context_template", "must hold {passages}")
        if "{text}" not in self.chat_passage_template:
            bad("[datasets] chat_passage_template", "must hold {text}")
        if not 7 <= self.window_days <= 28:
            bad("[datasets] window_days", f"must be within 7..28 (one to four weeks), got {self.window_days}")
        if self.lag_days < 0 or self.lag_days > 56:
            bad("[datasets] lag_days", f"must be within 0..56, got {self.lag_days}")
        if not 0.0 <= self.validation_share < 1.0:
            bad("[datasets] validation_share", f"must be within 0..1 (exclusive of 1), got {self.validation_share}")
        at_least(
            bad,
            0,
            ("[datasets] default_task_cap", self.default_task_cap),
            ("[datasets] top_k", self.top_k),
            ("[datasets] regeneration_gap_minutes", self.regeneration_gap_minutes),
            *((f"[datasets.task_caps] {k}", v) for k, v in self.task_caps.items()),
        )
        if self.shard_records < 1:
            bad("[datasets] shard_records", f"must be >= 1, got {self.shard_records}")
        if not 1 <= self.curriculum_buckets <= 100:
            bad("[datasets] curriculum_buckets", f"must be within 1..100, got {self.curriculum_buckets}")
