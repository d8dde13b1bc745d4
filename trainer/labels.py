"""Hand-labelled examples, for the cold start: before production traffic has produced training
data, a team can still fine-tune on examples it wrote itself.

File format, JSONL (one object per line; blank lines are skipped):

    {"prompt": "Translate to French: good morning", "target": "Bonjour", "task_type": "translate"}
    {"prompt": "What is 2+2?", "target": "4"}

or CSV with a header row (UTF-8; quote cells that hold commas or line breaks):

    prompt,target,task_type
    "Translate to French: good morning",Bonjour,translate
    What is 2+2?,4,

Fields: `prompt` (required) is the model's input, `target` (required) the answer it should learn to
give, `task_type` (optional) the task it belongs to, as in the traffic's task types. Any other field
is an error, and so is the same prompt and target twice (compared after normalising case and
whitespace), since a repeated example silently weighs double.
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
