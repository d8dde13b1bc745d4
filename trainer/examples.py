"""The trainer's own records: a training example and a golden item, as plain typed values."""

from __future__ import annotations

from dataclasses import dataclass

SCORERS = ("exact", "contains", "sql", "f1", "numeric", "json", "regex", "judge")  # how a golden item's answer is judged (trainer/evaluate.py)


@dataclass(frozen=True, slots=True)
class Example:
    """One supervised example: the model should answer `prompt` with `target`."""

    prompt: str
    target: str
    task_type: str = ""


@dataclass(frozen=True, slots=True)
class GoldenItem:
    """One held-out test question. `expected` is the reference answer; `scorer` says how an answer
    is compared with it (exact match after normalising case and whitespace, by default)."""

    id: str
    prompt: str
    expected: str
    task_type: str = ""
    scorer: str = "exact"
    options: str = ""  # a JSON object: generation (max_new_tokens) and scorer settings (tolerance, rel_tolerance, flags)


@dataclass(frozen=True, slots=True)
class Pair:
    """One preference: for `prompt`, `chosen` is the better answer and `rejected` the one users did not keep."""

    prompt: str
    chosen: str
    rejected: str
    task_type: str = ""
