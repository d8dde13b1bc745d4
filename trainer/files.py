"""One reader for the record files people hand the trainer (labels, golden items), JSONL or CSV.

Both formats go through the same checks so that a mistake is reported the same way whichever format
was used: one line, `FILE:LINE: what is wrong`. Messages name fields, types and lengths but never the
text of a field, because these files hold prompts and answers that may contain personal data, and
errors end up in logs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

FORMATS = (".jsonl", ".csv")


class RecordFileError(ValueError):
    """A record file could not be read; the message is one line and holds no field values."""


def read_rows(
    path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> list[tuple[int, dict[str, str]]]:
    """The rows of a `.jsonl` or `.csv` file as (line number, {field: text}) pairs, checked.

    Every row has each `required` field as a non-blank string; optional fields appear only when the
    row has them. Raises RecordFileError on the first problem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise RecordFileError(
            f"{path}: unsupported file type {_name(suffix or '(none)')}; accepted: {', '.join(FORMATS)}"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise RecordFileError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise RecordFileError(f"{path}: cannot read ({type(e).__name__})") from None
    accepted = tuple(required) + tuple(f for f in optional if f not in required)
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, data, required, accepted)
    else:
        rows = _csv_rows(path, data, required, accepted)
    if not rows:
        raise RecordFileError(f"{path}: no rows")
    return rows


def _jsonl_rows(
    path: Path, data: bytes, required: tuple[str, ...], accepted: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    rows: list[tuple[int, dict[str, str]]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordFileError(f"{path}:{number}: not valid UTF-8 (byte {e.start + 1} of the line)") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_pairs)
        except _DuplicateKey as e:
            raise RecordFileError(f"{path}:{number}: field {_name(e.key)} appears twice") from None
        except json.JSONDecodeError as e:
            raise RecordFileError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise RecordFileError(f"{path}:{number}: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise RecordFileError(f"{path}:{number}: expected a JSON object, got {_json_type(obj)}")
        _check_fields(path, number, obj.keys(), accepted)
        for key, value in obj.items():
            if not isinstance(value, str):
                raise RecordFileError(f"{path}:{number}: field {_name(key)} must be a string, got {_json_type(value)}")
        _check_required(path, number, obj, required)
        rows.append((number, obj))
    return rows


def _csv_rows(
    path: Path, data: bytes, required: tuple[str, ...], accepted: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:start].count(b"\n") + 1
        raise RecordFileError(f"{path}:{line}: not valid UTF-8 (byte {start + 1} of the file)") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    last = 0  # reader.line_num after the previous record: a record starts on the next line
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise RecordFileError(f"{path}:{last + 1}: not valid CSV ({_csv_reason(e)})") from None
        number, last = last + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            seen: set[str] = set()
            for name in header:
                if not name:
                    raise RecordFileError(f"{path}:{number}: header has an empty column name")
                if name in seen:
                    raise RecordFileError(f"{path}:{number}: column {_name(name)} appears twice")
                seen.add(name)
            _check_fields(path, number, header, accepted)
            missing = [f for f in required if f not in seen]
            if missing:
                raise RecordFileError(
                    f"{path}:{number}: header lacks required column{'s' if len(missing) > 1 else ''} {_names(missing)}"
                )
            continue
        if len(cells) > len(header):
            raise RecordFileError(
                f"{path}:{number}: row has {len(cells)} cells but the header has {len(header)} columns"
            )
        row = dict(zip(header, cells))
        _check_required(path, number, row, required)
        rows.append((number, row))
    return rows


def _check_fields(path: Path, number: int, names, accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        raise RecordFileError(
            f"{path}:{number}: unknown field{'s' if len(unknown) > 1 else ''} "
            f"{_names(unknown)}; accepted: {', '.join(accepted)}"
        )


def _check_required(path: Path, number: int, row: dict[str, str], required: tuple[str, ...]) -> None:
    for field in required:
        if field not in row:
            raise RecordFileError(f"{path}:{number}: required field {_name(field)} is missing")
        if not row[field].strip():
            raise RecordFileError(f"{path}:{number}: required field {_name(field)} is empty")


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _name(name: str) -> str:
    """A field name for a message: quoted, and cut short, since it comes from the file."""
    return repr(name if len(name) <= 40 else name[:37] + "...")


def _names(names) -> str:
    return ", ".join(_name(n) for n in names)


def _csv_reason(e: csv.Error) -> str:
    # csv's messages describe structure ("unexpected end of data"), but keep only the first clause
    return str(e).split(":")[0].strip() or "malformed row"
