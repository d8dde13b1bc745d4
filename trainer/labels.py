"""Hand-labelled examples, for the cold start: before production traffic has produced training
data, a team can still fine-tune on examples it wrote itself.

`load_labels(path)` reads JSONL or CSV with `prompt` and `target` (required) and `task_type`:

    {"prompt": "Translate to French: good morning", "target": "Bonjour", "task_type": "translate"}
    {"prompt": "What is 2+2?", "target": "4"}

Any other field, or the same prompt and target twice, is a RecordFileError (one line, no texts).
Format and why: docs/concepts/trainer.md#hand-labelled-examples
"""

from __future__ import annotations

from pathlib import Path

from trainer.contamination import normalise
from trainer.examples import Example
from trainer.files import RecordFileError, read_rows

REQUIRED = ("prompt", "target")
OPTIONAL = ("task_type",)


def load_labels(path: str | Path) -> list[Example]:
    """The examples in a labels file, in file order; RecordFileError (one line, no texts) on a problem."""
    examples: list[Example] = []
    seen: dict[tuple[str, str], int] = {}
    for number, row in read_rows(path, REQUIRED, OPTIONAL):
        key = (normalise(row["prompt"]), normalise(row["target"]))
        first = seen.setdefault(key, number)
        if first != number:
            raise RecordFileError(
                f"{path}:{number}: same prompt and target as line {first} (after normalising case and whitespace)"
            )
        examples.append(Example(row["prompt"], row["target"], row.get("task_type", "").strip()))
    return examples
