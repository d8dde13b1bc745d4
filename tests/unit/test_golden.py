"""Record files (JSONL and CSV), hand labels, golden items and the versioned golden store.

Every error must be one line, point at FILE:LINE, and never repeat a field's text."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from trainer.examples import Example, GoldenItem
from trainer.files import RecordFileError, read_rows
from trainer.golden import GoldenStore, default_id, load_items
from trainer.labels import load_labels

SECRET = "Zyxwv-Personal-4711"  # a distinctive value: it must never appear in an error message


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def error(call, path, line: int | None, *fragments: str) -> str:
    with pytest.raises(RecordFileError) as info:
        call(path)
    message = str(info.value)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), message
    assert "\n" not in message
    assert SECRET not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def rows(path):
    return read_rows(path, ("prompt", "target"), ("task_type",))


# --- read_rows -------------------------------------------------------------------------------------


def test_jsonl_rows_with_line_numbers_and_blank_lines(tmp_path):
    path = write(
        tmp_path,
        "a.jsonl",
        jsonl({"prompt": "p1", "target": "t1"})
        + "\n   \n"
        + jsonl({"prompt": "p2", "target": "t2", "task_type": "math"}),
    )
    assert rows(path) == [
        (1, {"prompt": "p1", "target": "t1"}),
        (4, {"prompt": "p2", "target": "t2", "task_type": "math"}),
    ]


def test_csv_rows_with_quoted_newlines_keep_the_starting_line(tmp_path):
    text = 'prompt,target,task_type\n"two\nlines",t1,chat\n\nsimple,"a, b",\n'
    path = write(tmp_path, "a.csv", text)
    assert rows(path) == [
        (2, {"prompt": "two\nlines", "target": "t1", "task_type": "chat"}),
        (5, {"prompt": "simple", "target": "a, b", "task_type": ""}),
    ]


def test_csv_with_a_byte_order_mark_and_crlf(tmp_path):
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbfprompt,target\r\np,t\r\n")
    assert rows(path) == [(2, {"prompt": "p", "target": "t"})]


def test_jsonl_with_a_byte_order_mark(tmp_path):
    path = write(tmp_path, "a.jsonl", b"\xef\xbb\xbf" + jsonl({"prompt": "p", "target": "t"}).encode())
    assert rows(path) == [(1, {"prompt": "p", "target": "t"})]


def test_missing_file(tmp_path):
    error(rows, tmp_path / "nope.jsonl", None, "file not found")


def test_unsupported_extension(tmp_path):
    path = write(tmp_path, "a.json", jsonl({"prompt": SECRET, "target": "t"}))
    error(rows, path, None, "'.json'", ".jsonl, .csv")


@pytest.mark.parametrize(
    "name, text",
    [
        ("a.jsonl", ""),
        ("b.jsonl", "\n  \n"),
        ("c.csv", ""),
        ("d.csv", "prompt,target\n"),
        ("e.csv", "prompt,target\n,\n\n"),
    ],
)
def test_empty_files(tmp_path, name, text):
    path = write(tmp_path, name, text)  # e.csv: a row of empty cells is skipped like a blank line
    error(rows, path, None, "no rows")


def test_invalid_json(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": "p", "target": "t"}, "", '{"prompt": "' + SECRET + '" "x"}'))
    error(rows, path, 3, "not valid JSON", "column")


def test_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": "p", "target": "t"}, [SECRET]))
    error(rows, path, 2, "expected a JSON object, got array")


def test_duplicate_json_key(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl('{"prompt": "p", "target": "t", "prompt": "' + SECRET + '"}'))
    error(rows, path, 1, "field 'prompt' appears twice")


@pytest.mark.parametrize(
    "value, kind", [(7, "number"), (None, "null"), (True, "boolean"), ([SECRET], "array"), ({"a": SECRET}, "object")]
)
def test_field_that_is_not_a_string(tmp_path, value, kind):
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": "p", "target": "t"}, {"prompt": SECRET, "target": value}))
    error(rows, path, 2, f"field 'target' must be a string, got {kind}")


def test_required_field_missing_jsonl(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": "p", "target": "t"}, {"prompt": SECRET}))
    error(rows, path, 2, "required field 'target' is missing")


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_required_field_empty_jsonl(tmp_path, blank):
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": SECRET, "target": "t"}, {"prompt": SECRET, "target": blank}))
    error(rows, path, 2, "required field 'target' is empty")


def test_required_field_empty_csv(tmp_path):
    path = write(tmp_path, "a.csv", f"prompt,target\n{SECRET},t\n\n{SECRET},  \n")
    error(rows, path, 4, "required field 'target' is empty")


def test_short_csv_row_lacks_the_required_field(tmp_path):
    path = write(tmp_path, "a.csv", f"prompt,target\n{SECRET},t\n{SECRET}\n")
    error(rows, path, 3, "required field 'target' is missing")


def test_csv_row_with_too_many_cells(tmp_path):
    path = write(tmp_path, "a.csv", f"prompt,target\n{SECRET},t,{SECRET}\n")
    error(rows, path, 2, "3 cells", "2 columns")


def test_unknown_fields_jsonl_are_named_sorted_with_the_accepted_ones(tmp_path):
    path = write(
        tmp_path,
        "a.jsonl",
        jsonl({"prompt": "p", "target": "t"}, {"prompt": "p2", "target": "t", "zeta": SECRET, "alpha": SECRET}),
    )
    message = error(rows, path, 2, "unknown fields 'alpha', 'zeta'", "accepted: prompt, target, task_type")
    assert message.index("alpha") < message.index("zeta")


def test_unknown_column_csv(tmp_path):
    path = write(tmp_path, "a.csv", f"\nprompt,target,answer\n{SECRET},t,{SECRET}\n")
    error(rows, path, 2, "unknown field 'answer'", "accepted: prompt, target, task_type")


def test_csv_header_lacking_a_required_column(tmp_path):
    path = write(tmp_path, "a.csv", f"prompt,task_type\n{SECRET},chat\n")
    error(rows, path, 1, "header lacks required column 'target'")


def test_csv_header_with_a_repeated_column(tmp_path):
    path = write(tmp_path, "a.csv", f"prompt,target,prompt\n{SECRET},t,{SECRET}\n")
    error(rows, path, 1, "column 'prompt' appears twice")


def test_malformed_csv_quoting(tmp_path):
    path = write(tmp_path, "a.csv", f'prompt,target\np,t\n"{SECRET}"x,t\n')
    error(rows, path, 3, "not valid CSV")


def test_invalid_utf8_jsonl(tmp_path):
    data = (
        jsonl({"prompt": "p", "target": "t"}).encode() + b'{"prompt": "' + SECRET.encode() + b'\xff", "target": "t"}\n'
    )
    path = write(tmp_path, "a.jsonl", data)
    error(rows, path, 2, "not valid UTF-8")


def test_invalid_utf8_csv(tmp_path):
    data = b"prompt,target\np,t\n\n" + SECRET.encode() + b"\xc3\x28,t\n"
    path = write(tmp_path, "a.csv", data)
    error(rows, path, 4, "not valid UTF-8")


def test_long_unknown_field_names_are_cut_short(tmp_path):
    name = "x" * 200
    path = write(tmp_path, "a.jsonl", jsonl({"prompt": "p", "target": "t", name: "v"}))
    message = error(rows, path, 1, "unknown field")
    assert name not in message and len(message) < 200 + len(str(path))


# --- labels ----------------------------------------------------------------------------------------


def test_load_labels_jsonl_and_csv_agree(tmp_path):
    a = write(
        tmp_path,
        "l.jsonl",
        jsonl({"prompt": "What is 2+2?", "target": "4", "task_type": " math "}, {"prompt": "Say hi", "target": "hi"}),
    )
    b = write(tmp_path, "l.csv", "prompt,target,task_type\nWhat is 2+2?,4, math \nSay hi,hi,\n")
    expected = [Example("What is 2+2?", "4", "math"), Example("Say hi", "hi", "")]
    assert load_labels(a) == expected
    assert load_labels(b) == expected


def test_labels_same_prompt_with_different_targets_is_fine(tmp_path):
    path = write(
        tmp_path, "l.jsonl", jsonl({"prompt": "Greet", "target": "hi"}, {"prompt": "Greet", "target": "hello"})
    )
    assert [e.target for e in load_labels(path)] == ["hi", "hello"]


def test_labels_duplicate_pair_names_both_lines(tmp_path):
    path = write(
        tmp_path,
        "l.jsonl",
        jsonl(
            {"prompt": SECRET, "target": "Four"},
            {"prompt": "other", "target": "x"},
            "",
            {"prompt": "  " + SECRET.upper() + " ", "target": "four\n"},
        ),
    )
    error(load_labels, path, 4, "same prompt and target as line 1")


def test_labels_duplicate_pair_csv(tmp_path):
    path = write(tmp_path, "l.csv", f"prompt,target\n{SECRET},4\nx,y\n{SECRET.lower()},4\n")
    error(load_labels, path, 4, "same prompt and target as line 2")


def test_labels_reject_golden_fields(tmp_path):
    path = write(tmp_path, "l.jsonl", jsonl({"prompt": SECRET, "target": "t", "expected": SECRET}))
    error(load_labels, path, 1, "unknown field 'expected'", "accepted: prompt, target, task_type")


# --- golden items ----------------------------------------------------------------------------------


def test_default_id_is_a_hash_of_the_normalised_prompt():
    want = "g-" + hashlib.blake2b(b"what is 2+2?").hexdigest()[:12]
    assert default_id("  What IS\t2+2? ") == want
    assert len(want) == 14


def test_load_items_jsonl_and_csv_agree(tmp_path):
    a = write(
        tmp_path,
        "g.jsonl",
        jsonl(
            {"prompt": "What is 2+2?", "expected": "4", "task_type": "math"},
            {"prompt": "Count users", "expected": "SELECT 1", "scorer": "sql", "id": "sql-1"},
        ),
    )
    b = write(
        tmp_path,
        "g.csv",
        "prompt,expected,task_type,scorer,id\nWhat is 2+2?,4,math,,\nCount users,SELECT 1,,sql,sql-1\n",
    )
    expected = [
        GoldenItem(default_id("what is 2+2?"), "What is 2+2?", "4", "math", "exact"),
        GoldenItem("sql-1", "Count users", "SELECT 1", "", "sql"),
    ]
    assert load_items(a) == expected
    assert load_items(b) == expected


def test_golden_unknown_scorer_lists_the_scorers(tmp_path):
    path = write(
        tmp_path,
        "g.jsonl",
        jsonl({"prompt": "p", "expected": "e"}, {"prompt": "q", "expected": "e", "scorer": SECRET}),
    )
    error(load_items, path, 2, "field 'scorer' must be one of exact, contains, sql")


def test_golden_same_prompt_after_normalising_names_both_lines(tmp_path):
    path = write(tmp_path, "g.csv", f'prompt,expected\n{SECRET} now,a\nother,b\n"{SECRET.upper()}\n now",c\n')
    error(load_items, path, 4, "same prompt as line 2")


def test_golden_duplicate_ids_name_both_lines(tmp_path):
    path = write(
        tmp_path,
        "g.jsonl",
        jsonl({"prompt": "p", "expected": "e", "id": "a-1"}, {"prompt": SECRET, "expected": "e", "id": "a-1"}),
    )
    error(load_items, path, 2, "same id as line 1")


def test_golden_explicit_id_clashing_with_a_default_id(tmp_path):
    path = write(
        tmp_path,
        "g.jsonl",
        jsonl({"prompt": "p", "expected": "e"}, {"prompt": SECRET, "expected": "e", "id": default_id("p")}),
    )
    error(load_items, path, 2, "same id as line 1")


def test_golden_bad_id_says_its_length_not_its_text(tmp_path):
    path = write(tmp_path, "g.jsonl", jsonl({"prompt": "p", "expected": "e", "id": SECRET + " x"}))
    error(load_items, path, 1, "field 'id'", f"got {len(SECRET) + 2} characters")


def test_golden_missing_expected(tmp_path):
    path = write(tmp_path, "g.jsonl", jsonl({"prompt": SECRET, "target": "e"}))
    error(load_items, path, 1, "unknown field 'target'", "accepted: prompt, expected, task_type, id, scorer")


# --- the store -------------------------------------------------------------------------------------


def item(prompt: str, expected: str = "e", task: str = "", scorer: str = "exact", id: str = "") -> GoldenItem:
    return GoldenItem(id or default_id(prompt), prompt, expected, task, scorer)


def test_empty_store(tmp_path):
    store = GoldenStore(tmp_path / "golden")
    assert store.current() == (None, [])
    assert store.versions() == []
    with pytest.raises(ValueError, match="nothing to add"):
        store.add([])
    assert not (tmp_path / "golden").exists()


def test_add_writes_canonical_sorted_lines(tmp_path):
    store = GoldenStore(tmp_path)
    b, a = item("b prompt", id="b"), item("a prompt ü", task="t", id="a")
    assert store.add([b, a]) == "v0001"
    text = (tmp_path / "v0001.jsonl").read_text(encoding="utf-8")
    assert text == (
        '{"expected": "e", "id": "a", "prompt": "a prompt ü", "scorer": "exact", "task_type": "t"}\n'
        '{"expected": "e", "id": "b", "prompt": "b prompt", "scorer": "exact", "task_type": ""}\n'
    )
    assert store.current() == ("v0001", [a, b])
    assert [p.name for p in tmp_path.iterdir()] == ["v0001.jsonl"]  # no temp file left behind


def test_add_twice_keeps_old_items_and_old_versions(tmp_path):
    store = GoldenStore(tmp_path)
    first = [item("one", task="math"), item("two", task="math")]
    assert store.add(first) == "v0001"
    v1_bytes = (tmp_path / "v0001.jsonl").read_bytes()
    v1_digest = store.digest("v0001")
    assert v1_digest == hashlib.sha256(v1_bytes).hexdigest()
    assert store.add([item("three", task="sql")]) == "v0002"
    assert (tmp_path / "v0001.jsonl").read_bytes() == v1_bytes  # immutable
    assert store.digest("v0001") == v1_digest
    assert store.digest("v0002") != v1_digest
    assert not os.stat(tmp_path / "v0001.jsonl").st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert sorted(i.prompt for i in store.load("v0002")) == ["one", "three", "two"]
    assert sorted(i.prompt for i in store.load("v0001")) == ["one", "two"]
    assert store.versions() == [
        {"version": "v0001", "items": 2, "sha256": v1_digest, "task_types": {"math": 2}},
        {"version": "v0002", "items": 3, "sha256": store.digest("v0002"), "task_types": {"math": 2, "sql": 1}},
    ]


def test_added_item_replaces_one_with_the_same_normalised_prompt(tmp_path):
    store = GoldenStore(tmp_path)
    store.add([item("What is 2+2?", "4"), item("keep me")])
    new = GoldenItem("new-id", "  WHAT is  2+2? ", "four", "math", "contains")
    assert store.add([new]) == "v0002"
    version, items = store.current()
    assert version == "v0002"
    assert sorted(items, key=lambda i: i.prompt) == sorted([new, item("keep me")], key=lambda i: i.prompt)


def test_added_item_replaces_one_with_the_same_id(tmp_path):
    store = GoldenStore(tmp_path)
    store.add([item("old question", id="q1"), item("other", id="q2")])
    store.add([item("reworded question", id="q1")])
    assert [(i.id, i.prompt) for i in store.current()[1]] == [("q1", "reworded question"), ("q2", "other")]


def test_adding_nothing_new_returns_the_current_version(tmp_path):
    store = GoldenStore(tmp_path)
    items = [item("one"), item("two")]
    assert store.add(items) == "v0001"
    assert store.add(list(reversed(items))) == "v0001"
    assert store.add([items[0]]) == "v0001"
    assert store.add([]) == "v0001"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v0001.jsonl"]
    assert store.add([item("two", expected="changed")]) == "v0002"


def test_add_rejects_duplicates_within_the_batch_and_bad_scorers(tmp_path):
    store = GoldenStore(tmp_path)
    with pytest.raises(ValueError, match="share"):
        store.add([item("Same"), item("same ", id="other")])
    with pytest.raises(ValueError, match="exact, contains, sql"):
        store.add([item("x", scorer="fuzzy")])
    assert store.current() == (None, [])


def test_load_unknown_version(tmp_path):
    store = GoldenStore(tmp_path)
    store.add([item("one")])
    for bad in ("v0002", "v1", "../v0001", "latest"):
        with pytest.raises(KeyError) as info:
            store.load(bad)
        assert "unknown golden version" in str(info.value) and "have: v0001" in str(info.value)
    with pytest.raises(KeyError):
        store.digest("v0009")


def test_versions_are_ordered_numerically_and_other_files_ignored(tmp_path):
    store = GoldenStore(tmp_path)
    for n in range(1, 12):
        assert store.add([item(f"question {n}")]) == f"v{n:04d}"
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "v0099.json").write_text("x")
    assert [v["version"] for v in store.versions()][-3:] == ["v0009", "v0010", "v0011"]
    assert store.current()[0] == "v0011" and len(store.current()[1]) == 11


def test_loaded_file_round_trips_through_the_store(tmp_path):
    path = write(
        tmp_path, "g.csv", "prompt,expected,task_type,scorer\nCapital of France?,Paris,geo,contains\n2+2?,4,math,\n"
    )
    store = GoldenStore(tmp_path / "store")
    loaded = load_items(path)
    store.add(loaded)
    assert sorted(store.current()[1], key=lambda i: i.id) == sorted(loaded, key=lambda i: i.id)
