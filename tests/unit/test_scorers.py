"""The golden set's scorers: what counts as the same answer, and what does not."""

from __future__ import annotations

import pytest

from trainer.evaluate import SCORERS, score_contains, score_exact, score_sql


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("SELECT COUNT(*) FROM users;", "select count(*) from users"),  # keywords glued to punctuation
        ("select  count( * )\n FROM users", "SELECT COUNT(*) FROM users"),
        ("SELECT id FROM t ;", "SELECT id FROM t"),
        ("SELECT name FROM t WHERE name = 'Bob  Smith'", "select name from t where name='Bob  Smith';"),
        ("SELECT a, b FROM t ORDER BY a LIMIT 3", "select a,b from t order by a limit 3"),
    ],
)
def test_sql_answers_that_differ_only_in_form_are_the_same(answer, expected):
    assert score_sql(answer, expected) == 1.0


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("SELECT name FROM t WHERE name = 'Bob'", "SELECT name FROM t WHERE name = 'bob'"),  # literals as written
        ("SELECT name FROM t WHERE name = 'Bob Smith'", "SELECT name FROM t WHERE name = 'Bob  Smith'"),
        ("SELECT * FROM Users", "SELECT * FROM users"),  # identifiers keep their case
        ("SELECT COUNT(*) FROM orders", "SELECT COUNT(*) FROM users"),
        ("SELECT COUNT(*) FROM users WHERE x = 'a;'", "SELECT COUNT(*) FROM users WHERE x = 'a'"),
        ("", "SELECT 1"),
    ],
)
def test_sql_answers_that_differ_in_meaning_are_not(answer, expected):
    assert score_sql(answer, expected) == 0.0


def test_exact_and_contains_normalise_case_and_whitespace():
    assert score_exact(" Paris\n", "paris") == 1.0 and score_exact("Paris, France", "paris") == 0.0
    assert score_contains("It is  PARIS.", "paris") == 1.0 and score_contains("Lyon", "paris") == 0.0
    assert score_contains("anything", "") == 0.0  # an empty reference matches nothing
    assert set(SCORERS) == {"exact", "contains", "sql", "f1", "numeric", "json", "regex"}  # and "judge", by endpoint
