"""Typed records for the flywheel's events, and the rules an event must meet beyond its Avro schema."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from schemas.conversation import check_conversation, message

ACTIONS = ("accepted", "copied", "corrected", "regenerated", "abandoned", "thumbs_up", "thumbs_down", "rated")
MAX_ID_CHARS = 256


class InvalidEvent(ValueError):
    """An event that decodes but breaks a rule of the flywheel (empty id, unknown action, ...)."""


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


class _Record:
    """Plain dict in and out, so the codec stays the only thing that knows bytes."""

    schema_name: ClassVar[str]
    __slots__ = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        try:
            return cls(**d)  # a decoded record of the current schema has exactly these fields
        except TypeError:
            return cls(**{k: d[k] for k in _field_names(cls) if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _field_names(type(self))}


def _require_id(kind: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{kind}.{name} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"{kind}.{name} is longer than {MAX_ID_CHARS} characters")


MIN_EVENT_TIME_MS = 10**11  # 1973-03-03: anything smaller is seconds, not milliseconds


def _shown(value: Any) -> str:
    """A value for an error message: short, so that no free text (personal data) reaches a log."""
    text = repr(value)
    return text if len(text) <= 32 else f"a {type(value).__name__} of {len(text)} characters"


MAX_EVENT_TIME_MS = 32503680000000  # 3000-01-01: past it a value is no time at all, whatever the bound


class FutureEvent(InvalidEvent):
    """Event time further ahead of the wall clock than the flywheel allows: one producer's clock
    (or a hostile one) must not move a watermark or a window clock for everyone."""

    reason = "future_event"


def _require_time(kind: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(
            f"{kind}.event_time must be an integer of milliseconds since the epoch, got {type(value).__name__}"
        )
    if value < MIN_EVENT_TIME_MS:
        raise InvalidEvent(f"{kind}.event_time must be milliseconds since the epoch, got {value} (seconds?)")
    if value >= MAX_EVENT_TIME_MS:
        raise FutureEvent(f"{kind}.event_time {value} is after the year 3000")


def reference_time(record_timestamp_ms: int | None, now_ms: int) -> int:
    """The wall-clock time an event's time is judged against: the Kafka record's timestamp when it
    is not ahead of now, else now. A replay judges a record as it was judged live (the timestamp
    is in the log), and a producer that forges a future timestamp gains nothing."""
    if record_timestamp_ms is None or record_timestamp_ms <= 0:
        return now_ms
    return min(record_timestamp_ms, now_ms)


def check_event_time_ahead(kind: str, event_time: int, reference_ms: int, max_ahead_ms: int) -> None:
    """Raise FutureEvent when `event_time` lies more than `max_ahead_ms` after `reference_ms`
    (see `reference_time`); a bound below 0 turns the check off."""
    if max_ahead_ms >= 0 and event_time > reference_ms + max_ahead_ms:
        ahead_s = (event_time - reference_ms) // 1000
        raise FutureEvent(f"{kind} event time is {ahead_s} s ahead of the wall clock (bound {max_ahead_ms // 1000} s)")


@dataclass(slots=True)
class Interaction(_Record):
    schema_name: ClassVar[str] = "interaction"
    request_id: str
    session_id: str
    user_id: str
    event_time: int
    model_version: str
    prompt: str
    response: str
    variant: str = ""
    task_type: str = ""
    retrieved_context: list[str] | None = None
    latency_ms: float | None = None
    uncertainty: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # the conversation (schema v3; schemas/conversation.py): a decoded event always has `messages`
    system: str = ""
    messages: list[dict] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)
    response_tool_calls: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.messages and self.prompt and isinstance(self.prompt, str):  # as the codec's upgrade does
            self.messages = [message("user", self.prompt)]

    def check(self) -> "Interaction":
        _require_id("interaction", "request_id", self.request_id)
        _require_id("interaction", "user_id", self.user_id)
        _require_time("interaction", self.event_time)
        if not isinstance(self.model_version, str) or not self.model_version:
            raise InvalidEvent("interaction.model_version must be a non-empty string")
        for name in ("prompt", "response"):
            if not isinstance(getattr(self, name), str):
                raise InvalidEvent(f"interaction.{name} must be a string")
        check_conversation("interaction", self, InvalidEvent)
        return self


@dataclass(slots=True)
class UserAction(_Record):
    schema_name: ClassVar[str] = "action"
    request_id: str
    user_id: str
    event_time: int
    action: str
    correction: str | None = None
    rating: float | None = None
    session_id: str = ""

    def check(self) -> "UserAction":
        _require_id("action", "request_id", self.request_id)
        _require_id("action", "user_id", self.user_id)
        _require_time("action", self.event_time)
        if self.action not in ACTIONS:
            raise InvalidEvent(f"action.action must be one of {', '.join(ACTIONS)}, got {_shown(self.action)}")
        if self.action == "corrected" and not (isinstance(self.correction, str) and self.correction.strip()):
            raise InvalidEvent("action.correction must hold the corrected text when action is 'corrected'")
        if self.action == "rated":
            if isinstance(self.rating, bool) or not isinstance(self.rating, (int, float)) or not 1 <= self.rating <= 5:
                raise InvalidEvent(
                    f"action.rating must be a number from 1 to 5 when action is 'rated', got {_shown(self.rating)}"
                )
        return self


@dataclass(slots=True)
class TrainingCandidate(_Record):
    """The seed's TrainingCandidate, plus what the join, the gate and the datasets need."""

    schema_name: ClassVar[str] = "candidate"
    request_id: str
    timestamp: int
    user_id: str
    session_id: str
    prompt: str
    response: str
    user_action: str
    correction: str = ""
    task_type: str = ""
    quality_score: float = 0.0
    included_in_training: bool = False
    model_version: str = ""
    variant: str = ""
    label: str = ""
    target: str | None = None
    pair_chosen: str | None = None
    pair_rejected: str | None = None
    pair_key: str = ""
    actions: list[str] = field(default_factory=list)
    thumbs: int = 0
    rating: float | None = None
    time_to_action_ms: int | None = None
    retrieved_context: list[str] | None = None
    uncertainty: float | None = None
    latency_ms: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    policy_version: str = ""
    settled_at: int = 0
    notes: list[str] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    dedup_keys: bytes = b""
    system: str = ""
    messages: list[dict] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)
    response_tool_calls: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.messages and self.prompt and isinstance(self.prompt, str):  # as the codec's upgrade does
            self.messages = [message("user", self.prompt)]


@dataclass(slots=True)
class DeadLetter(_Record):
    schema_name: ClassVar[str] = "deadletter"
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    value: bytes
    failed_at: int
    detail: str = ""
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)


REVIEW_SCORES = ("accuracy", "helpfulness", "safety")


@dataclass(slots=True)
class ReviewVerdict(_Record):
    """One person's verdict on one sampled candidate (the seed's Section 04)."""

    schema_name: ClassVar[str] = "verdict"
    verdict_id: str
    request_id: str
    reviewer: str
    accuracy: int
    helpfulness: int
    safety: int
    passed: bool
    reviewed_at: int
    event_time: int
    gate_passed: bool
    task_type: str = ""
    model_version: str = ""
    quality_score: float = 0.0
    gate_scores: dict[str, float] = field(default_factory=dict)
    gate_reasons: list[str] = field(default_factory=list)
    policy_version: str = ""
    sampled_for: list[str] = field(default_factory=list)
    sample_probability: float = 1.0
    review_round: int = 1
    seconds_spent: float = 0.0
    source: str = ""

    def check(self) -> "ReviewVerdict":
        _require_id("verdict", "request_id", self.request_id)
        _require_id("verdict", "reviewer", self.reviewer)
        for name in REVIEW_SCORES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                raise InvalidEvent(f"verdict.{name} must be an integer from 1 to 5, got {_shown(value)}")
        if not isinstance(self.passed, bool):
            raise InvalidEvent("verdict.passed must be true or false")
        if not 0.0 < self.sample_probability <= 1.0:
            raise InvalidEvent(
                f"verdict.sample_probability must be within (0, 1], got {_shown(self.sample_probability)}"
            )
        return self


@dataclass(slots=True)
class DatasetReady(_Record):
    schema_name: ClassVar[str] = "dataset_ready"
    dataset_id: str
    uri: str
    window_start: int
    window_end: int
    lag_ms: int
    policy_version: str
    counts: dict[str, int]
    first_event_time: int
    sealed_at: int


@dataclass(slots=True)
class ModelEvent(_Record):
    """What the trainer did with a dataset or a cold start (schemas/avro/model_event.v2.avsc)."""

    schema_name: ClassVar[str] = "model_event"
    event_id: str
    event_type: str
    created_at: int
    version: str = ""
    dataset_id: str = ""
    base_model: str = ""
    gate_passed: bool = False
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    incumbent_metrics: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, str] = field(default_factory=dict)
    file_hashes: dict[str, str] = field(default_factory=dict)
    golden_version: str = ""
    examples: int = 0
    train_seconds: float = 0.0
    first_event_time: int = 0
    time_to_improvement_ms: int | None = None
    datasets: list[str] = field(default_factory=list)  # lineage: every dataset version the model learned from
    tainted_by_erasure: list[str] = field(default_factory=list)  # of those, the ones an erasure has since replaced


@dataclass(slots=True)
class ErasureRequest(_Record):
    schema_name: ClassVar[str] = "erasure"
    user_id: str
    requested_at: int
    reason: str = ""

    def check(self) -> "ErasureRequest":
        _require_id("erasure", "user_id", self.user_id)
        return self
