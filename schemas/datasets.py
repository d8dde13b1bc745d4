"""Typed records of a sealed dataset: its manifest and its rows.

Why here, at the bottom: the builder (streams/) writes them, and the dataset store (the ground), the
trainer and `flywheel datasets show/verify` read them; schemas/ is the one layer all of those may
import.

`Manifest` is `manifest.json` as a frozen dataclass. `Manifest.from_dict(d).to_dict() == d` for
every manifest a builder writes: the manifest's bytes (and so a dataset's card, which is derived from
it) stay what they were, and a dataset id never depends on this class. Keys a builder version did not
write come back absent (the field is None); keys this class does not know (a re-seal's `supersedes`
and `resealed`, or a later builder's) travel in `extra`, untouched. A known key stored as an explicit
null would come back absent: no builder writes one.

`SftRow` and `PreferenceRow` are the Avro shards' records (`sft_record`, `preference_record` v2) as
the builder builds them and the trainer reads them. They are TypedDicts, not classes: a seal builds
a million of them, fastavro writes and reads plain dicts, and a dict costs nothing to convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypedDict

__all__ = ["Manifest", "SftRow", "PreferenceRow", "Turn", "ToolCall", "Tool"]


class ToolCall(TypedDict):
    """One function call an assistant turn asked for."""

    id: str
    name: str
    arguments: str  # as the model wrote them (JSON text)


class Turn(TypedDict):
    """One stored chat turn (schemas/conversation.py's Message); name and tool_call_id None when absent."""

    role: str
    content: str
    name: str | None
    tool_calls: list[ToolCall]
    tool_call_id: str | None


class Tool(TypedDict):
    """One tool the model was offered; its JSON Schema as text."""

    name: str
    description: str
    parameters: str


class _Row(TypedDict):
    """What every dataset record carries, SFT or preference: where it came from and how it was chosen."""

    request_id: str
    prompt: str
    task_type: str
    model_version: str
    priority: float
    priority_reasons: list[str]
    split: str
    event_time: int
    policy_version: str
    messages: list[Turn]
    context: list[str]
    tools: list[Tool]


class SftRow(_Row):
    """One record of an `sft/*.avro` shard (sft_record v2): answer `prompt` (laid out as `messages`)
    with `target`."""

    target: str
    user_action: str
    label: str
    quality_score: float
    difficulty: float
    target_tool_calls: list[ToolCall]


class PreferenceRow(_Row):
    """One record of a `preference/*.avro` shard (preference_record v2): for `prompt`, `chosen` is
    the better answer; `source` says where the pair came from (a correction, a regeneration)."""

    chosen: str
    rejected: str
    source: str


@dataclass(frozen=True)
class Manifest:
    """`manifest.json` of a sealed dataset (see the module's doc for the round trip)."""

    dataset_id: str
    # what was read: a re-run from the same offsets finds the dataset by it
    inputs_id: str | None = None
    builder_version: str | None = None
    # every file's sha256 but the card's and the manifest's: the content id is taken over them
    files: dict[str, str] | None = None
    # index, start_ms, end_ms, days; decisions (the gate's in the window) and passed
    window: dict[str, int] | None = None
    lag_ms: int | None = None
    policy_version: str | None = None
    source_offsets: dict[str, dict[str, int]] | None = None  # "topic/partition" -> {"first", "stop"}
    verdict_offsets: dict[str, int] | None = None
    review_required: bool | None = None
    erasure: dict[str, Any] | None = None  # {"digest", "ids"}
    # {"records": n, "split": {...}, "task_type": {...}, "user_action": {...}, "label": {...}}
    counts: dict[str, Any] | None = None
    dropped: dict[str, int] | None = None
    late_events: int | None = None
    first_event_time: int | None = None
    users: int | None = None
    shards: list[dict[str, Any]] | None = None  # path, records, bytes, sha256, kind, split, partition
    schemas: dict[str, str] | None = None  # record schema -> fingerprint (hex)
    curriculum: bool | None = None
    pseudonym_key: str | None = None  # the fingerprint of the key users.txt and record-users.bin are under
    extra: dict[str, Any] = field(default_factory=dict)  # keys this class does not name, as they are

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """From a manifest.json's object. Raises ValueError when it is no manifest (no dataset id)."""
        if not isinstance(d, Mapping) or not isinstance(d.get("dataset_id"), str):
            raise ValueError("not a dataset manifest: no dataset_id")
        known = _known()
        return cls(
            **{k: v for k, v in d.items() if k in known},
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The object manifest.json holds (`flywheel.datastore.manifest_json` writes it)."""
        out = {k: getattr(self, k) for k in _known() if getattr(self, k) is not None}  # in the builder's order
        out.update(self.extra)
        return out

    @property
    def records(self) -> int:
        return int((self.counts or {}).get("records", 0) or 0)

    @property
    def window_start_ms(self) -> int | None:
        return None if self.window is None else self.window.get("start_ms")

    @property
    def window_end_ms(self) -> int | None:
        return None if self.window is None else self.window.get("end_ms")

    def shards_of(self, kind: str, fmt: str = "avro") -> list[dict[str, Any]]:
        """The shards of one kind of record (sft, preference) in one format, in manifest order."""
        return [
            sh for sh in self.shards or () if sh.get("kind") == kind and str(sh.get("path", "")).endswith("." + fmt)
        ]


_KNOWN: tuple[str, ...] = ()


def _known() -> tuple[str, ...]:
    """The named keys, in the order the builder writes them (a dict printed unsorted reads the same)."""
    global _KNOWN
    if not _KNOWN:
        _KNOWN = tuple(f.name for f in fields(Manifest) if f.name != "extra")
    return _KNOWN
