"""The golden test set: held-out questions with reference answers, versioned so that every evaluation
names exactly the questions it was scored on.

`load_items(path)` reads a JSONL or CSV file (`prompt`, `expected`; optional `task_type`, `scorer`,
`options`, `id`), one item a line:

    {"prompt": "SQL: count the users", "expected": "SELECT count(*) FROM users", "scorer": "sql", "task_type": "sql"}
    {"prompt": "Capital of France?", "expected": "Paris", "scorer": "contains"}

Two items with the same normalised prompt, or the same id, are an error. `GoldenStore.add` writes a
new immutable version (`v0001.jsonl`, ...): the previous items plus the new ones, a new item
replacing an old one with the same prompt or id, one canonical JSON object a line sorted by id.

Fields, scorers and versions: docs/concepts/trainer.md#golden-set-files
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from trainer.contamination import normalise
from trainer.examples import SCORERS, GoldenItem
from trainer.files import RecordFileError, read_rows

REQUIRED = ("prompt", "expected")
OPTIONAL = ("task_type", "id", "scorer", "options")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
VERSION_PATTERN = re.compile(r"v(\d{4,})\.jsonl")


def default_id(prompt: str) -> str:
    """The id of an item that names none: stable for the same normalised prompt."""
    return "g-" + hashlib.blake2b(normalise(prompt).encode("utf-8")).hexdigest()[:12]


def load_items(path: str | Path) -> list[GoldenItem]:
    """The golden items in a JSONL or CSV file, in file order; RecordFileError (one line, no texts)
    on a problem."""
    items: list[GoldenItem] = []
    prompts: dict[str, int] = {}
    ids: dict[str, int] = {}
    for number, row in read_rows(path, REQUIRED, OPTIONAL):
        scorer = row.get("scorer", "").strip() or "exact"
        if scorer not in SCORERS:
            raise RecordFileError(f"{path}:{number}: field 'scorer' must be one of {', '.join(SCORERS)}")
        item_id = row.get("id", "").strip()
        if item_id and not ID_PATTERN.fullmatch(item_id):
            raise RecordFileError(
                f"{path}:{number}: field 'id' must be 1-64 letters, digits, '.', '_', ':' "
                f"or '-' (got {len(item_id)} characters)"
            )
        first = prompts.setdefault(normalise(row["prompt"]), number)
        if first != number:
            raise RecordFileError(
                f"{path}:{number}: same prompt as line {first} (after normalising case and whitespace)"
            )
        item_id = item_id or default_id(row["prompt"])
        first = ids.setdefault(item_id, number)
        if first != number:
            raise RecordFileError(f"{path}:{number}: same id as line {first}")
        options = row.get("options", "").strip()
        if options:
            try:
                parsed = json.loads(options)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise RecordFileError(f"{path}:{number}: field 'options' must be a JSON object")
            options = json.dumps(parsed, sort_keys=True)
        items.append(
            GoldenItem(item_id, row["prompt"], row["expected"], row.get("task_type", "").strip(), scorer, options)
        )
    return items


class GoldenStore:
    """Versions of the golden set in one directory; a version, once written, never changes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, version: str) -> Path:
        return self.directory / f"{version}.jsonl"

    def _names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        found = [
            (int(m.group(1)), m.group(0)[: -len(".jsonl")])
            for m in (VERSION_PATTERN.fullmatch(p.name) for p in self.directory.iterdir())
            if m
        ]
        return [name for _, name in sorted(found)]

    def _known(self, version: str) -> Path:
        names = self._names()
        if version not in names:
            have = ", ".join(names) if names else "none"
            raise KeyError(f"unknown golden version {version!r} in {self.directory} (have: {have})")
        return self._path(version)

    def current(self) -> tuple[str | None, list[GoldenItem]]:
        """The newest version and its items; (None, []) before the first `add`."""
        names = self._names()
        if not names:
            return None, []
        return names[-1], self.load(names[-1])

    def load(self, version: str) -> list[GoldenItem]:
        """The items of `version` (like "v0002"), sorted by id; KeyError for an unknown version."""
        path = self._known(version)
        items: list[GoldenItem] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                items.append(GoldenItem(**json.loads(line)))
            except (ValueError, TypeError) as e:
                raise ValueError(f"{path}:{number}: not a golden item ({type(e).__name__})") from None
        return items

    def add(self, items: Iterable[GoldenItem]) -> str:
        """Write a new version: the current items plus `items`, where an added item replaces a current
        one with the same normalised prompt or the same id. Returns the new version's name, or the
        current one when nothing changes."""
        added = list(items)
        prompts: set[str] = set()
        ids: set[str] = set()
        for item in added:
            if item.scorer not in SCORERS:
                raise ValueError(f"golden item {item.id}: scorer must be one of {', '.join(SCORERS)}")
            prompt = normalise(item.prompt)
            if prompt in prompts or item.id in ids:
                raise ValueError(f"golden item {item.id}: two added items share this id or prompt")
            prompts.add(prompt)
            ids.add(item.id)
        version, existing = self.current()
        if version is None and not added:
            raise ValueError(f"nothing to add and no golden version in {self.directory} yet")
        kept = [i for i in existing if i.id not in ids and normalise(i.prompt) not in prompts]
        content = _serialise(kept + added)
        if version is not None and self._path(version).read_bytes() == content:
            return version
        number = int(version[1:]) + 1 if version is not None else 1
        name = f"v{number:04d}"
        _write_new(self._path(name), content)
        return name

    def versions(self) -> list[dict]:
        """Every version, oldest first: {"version", "items", "sha256", "task_types": {task: count}}."""
        out = []
        for name in self._names():
            items = self.load(name)
            out.append(
                {
                    "version": name,
                    "items": len(items),
                    "sha256": self.digest(name),
                    "task_types": dict(sorted(Counter(i.task_type for i in items).items())),
                }
            )
        return out

    def digest(self, version: str) -> str:
        """The sha256 (hex) of the version's file: what an evaluation records to name its test set."""
        return hashlib.sha256(self._known(version).read_bytes()).hexdigest()


def _serialise(items: list[GoldenItem]) -> bytes:
    # an item without options is written as before options existed, so an unchanged set keeps its bytes
    lines = (
        json.dumps({k: v for k, v in asdict(i).items() if k != "options" or v}, sort_keys=True, ensure_ascii=False)
        + "\n"
        for i in sorted(items, key=lambda i: i.id)
    )
    return "".join(lines).encode("utf-8")


def _write_new(path: Path, content: bytes) -> None:
    """Write `path` whole or not at all (temp file + os.replace); refuse to overwrite a version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"golden version {path} already exists; versions are never rewritten")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
