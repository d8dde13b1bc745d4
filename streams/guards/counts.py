"""What one record adds to the monitors' counts (pure), with bounded field sets."""

from __future__ import annotations

from schemas.records import ACTIONS, TrainingCandidate
from streams.rollout.analysis import counts_of

OTHER = "other"
VERSION_FIELDS = ("requests", "accepted", "corrected", "regenerated", "abandoned", "thumbs_up", "thumbs_down", "empty")
# dead letters of users' timing: an action after its request settled, or whose request never came. Part of
# normal traffic (a user acting an hour later), counted apart; the dead-letter monitor judges only the rest,
# the input a producer or the pipeline broke (undecodable, invalid, oversized, future, unknown schema, ...)
USER_TIMING_REASONS = frozenset({"late_action", "orphan_action"})
MALFORMED = "deadletters"  # the field `deadletter_rate` counts
USER_TIMING = "late_actions"  # counted, never judged


class Cap:
    """At most `limit` distinct names; later ones are counted as `other`, so a stream of odd task
    types or versions cannot grow the counts (or the metric labels) without bound."""

    def __init__(self, limit: int):
        self.limit = limit
        self.names: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self.names:
            return name
        if len(self.names) < self.limit:
            self.names.add(name)
            return name
        return OTHER


def candidate_fields(c: TrainingCandidate, tasks: Cap, versions: Cap) -> dict[str, int]:
    """A joined request: its action, task type, and its model version's satisfaction counts."""
    action = c.user_action if c.user_action in ACTIONS else ("none" if not c.user_action else OTHER)
    version = versions(c.model_version or "-")
    out = {"requests": 1, f"action:{action}": 1, f"task:{tasks(c.task_type or '-')}": 1}
    for name, n in counts_of(c.actions or ([c.user_action] if c.user_action else []), c.response, None).items():
        if name in VERSION_FIELDS:
            out[f"v:{version}:{name}"] = n
    if out.get(f"v:{version}:empty"):
        out["empty"] = 1
    return out


def deadletter_kind(reason: object) -> str:
    """`late_actions` for users' timing (USER_TIMING_REASONS), `deadletters` for anything else, an
    unknown, missing or odd reason included: a dead letter is malformed input unless known otherwise."""
    return USER_TIMING if isinstance(reason, str) and reason in USER_TIMING_REASONS else MALFORMED


def deadletter_fields(codec, value: bytes | None, headers=None) -> dict[str, int]:
    """What one record of the dead-letter topic adds to the counts, by its reason. One that does not
    decode as a dead letter is itself broken input: `deadletters`."""
    try:
        record = codec.decode("deadletter", value or b"", headers)
        reason = record.get("reason") if isinstance(record, dict) else None
    except Exception:
        reason = None
    return {deadletter_kind(reason): 1}
