"""What one record adds to the monitors' counts (pure), with bounded field sets."""

from __future__ import annotations

from schemas.records import ACTIONS, TrainingCandidate
from streams.rollout.analysis import counts_of

OTHER = "other"
VERSION_FIELDS = ("requests", "accepted", "corrected", "regenerated", "abandoned", "thumbs_up", "thumbs_down", "empty")


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

