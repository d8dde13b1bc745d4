"""What the review queue holds: one sampled candidate, why it was chosen, and how likely that was."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# the order reviewers see items in (lower first); the first matching class is why an item was chosen
SAMPLE_CLASSES = ("correction", "uncertainty", "changed", "rare_task", "gate_audit", "random")
PRIORITY = {name: rank for rank, name in enumerate(SAMPLE_CLASSES)}


@dataclass
class ReviewItem:
    item_id: str  # the candidate's request_id: one item per candidate, ever
    candidate: dict[str, Any]  # TrainingCandidate.to_dict(), already redacted by the gate
    gate_passed: bool
    sampled_for: list[str]  # every class that matched, the choosing one first
    probability: float  # inclusion probability: weight 1/p in calibration
    window: int  # event-time window index (candidate.timestamp // window length)
    reviews_needed: int = 1  # 2 for overlap items (agreement between reviewers)
    source: str = ""  # topic/partition/offset
    enqueued_at: int = 0  # wall ms, set by the queue
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # bytes (the gate's duplicate keys) mean nothing to a reviewer and are no JSON
        self.candidate = {k: v for k, v in self.candidate.items() if not isinstance(v, (bytes, bytearray))}

    @property
    def priority(self) -> int:
        return PRIORITY[self.sampled_for[0]] if self.sampled_for else PRIORITY["random"]

    @property
    def task_type(self) -> str:
        return self.candidate.get("task_type") or ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "ReviewItem":
        return cls(**json.loads(raw))
