"""Contamination: golden prompts found in training prompts, exactly or as near duplicates, and the
index's answers equal to comparing against every golden item."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from trainer.contamination import ContaminationIndex, ContaminationReport, Hit, jaccard, normalise, scan, shingles
from trainer.examples import GoldenItem

TWELVE = "please summarise the attached quarterly sales report for the board meeting tomorrow"


def golden(*prompts: str) -> list[GoldenItem]:
    return [GoldenItem(f"g-{n}", p, "x") for n, p in enumerate(prompts, start=1)]


def test_normalise():
    assert normalise("  Hello\tWORLD \n again ") == "hello world again"
    assert normalise("Straße") == "strasse"
    assert normalise(" \n ") == ""


def test_shingles():
    assert shingles("A b  C d") == frozenset({"a b c", "b c d"})
    assert shingles("Two WORDS") == frozenset({"two words"})
    assert shingles("one") == frozenset({"one"})
    assert shingles("") == frozenset()
    assert shingles(" \t ") == frozenset()
    assert shingles("a b c d", k=2) == frozenset({"a b", "b c", "c d"})
    assert len(shingles(TWELVE)) == 10
    with pytest.raises(ValueError):
        shingles("a", k=0)


def test_exact_after_case_and_whitespace_changes():
    index = ContaminationIndex(golden("What is the capital of France?", TWELVE))
    assert index.check("  what IS the\tcapital of  france? ") == Hit("g-1", "exact", 1.0)
    assert index.check(TWELVE.upper()) == Hit("g-2", "exact", 1.0)
    assert index.check("What is the capital of Spain?") is None


def test_one_word_changed_at_the_end_of_a_twelve_word_prompt_is_a_near_hit():
    # 12 words -> 10 shingles; changing the last word changes 1 shingle: 9 shared of 11 -> 9/11
    index = ContaminationIndex(golden(TWELVE))
    hit = index.check(TWELVE.replace("tomorrow", "today"))
    assert hit == Hit("g-1", "near", 9 / 11)
    assert hit.similarity == pytest.approx(0.8182, abs=1e-4)


def test_one_word_changed_in_the_middle_changes_three_shingles():
    # changing word 6 of 12 touches the shingles starting at words 4, 5 and 6: 7 shared of 13
    prompt = TWELVE.replace("quarterly", "annual")
    assert jaccard(shingles(prompt), shingles(TWELVE)) == 7 / 13
    assert ContaminationIndex(golden(TWELVE)).check(prompt) is None  # 0.54 is below the default 0.8
    assert ContaminationIndex(golden(TWELVE), threshold=0.5).check(prompt) == Hit("g-1", "near", 7 / 13)


def test_different_prompt_sharing_a_few_shingles_is_not_a_hit():
    gold = "how do i reset my password on the mobile app"  # 10 words -> 8 shingles
    other = "how do i reset my router after a power cut"  # 10 words -> 8 shingles
    # shared: "how do i", "do i reset", "i reset my" -> 3 of 8 + 8 - 3 = 13
    assert jaccard(shingles(other), shingles(gold)) == 3 / 13
    assert ContaminationIndex(golden(gold)).check(other) is None
    assert ContaminationIndex(golden(gold), threshold=0.2).check(other) == Hit("g-1", "near", 3 / 13)


def test_short_prompts_match_only_exactly():
    index = ContaminationIndex(golden("Hi there", "ping"))
    assert index.check("HI   there") == Hit("g-1", "exact", 1.0)
    assert index.check("Ping ") == Hit("g-2", "exact", 1.0)
    assert index.check("hi there friend") is None
    assert index.check("hi") is None
    assert index.check("") is None
    assert index.check("   ") is None


def test_threshold_boundary_is_inclusive():
    gold = "one two three four five six seven"  # 5 shingles
    query = "one two three four five six"  # its first 4 shingles: 4 / 5 = 0.8
    assert ContaminationIndex(golden(gold), threshold=0.8).check(query) == Hit("g-1", "near", 0.8)
    assert ContaminationIndex(golden(gold), threshold=0.81).check(query) is None
    assert ContaminationIndex(golden(gold), threshold=0.79).check(query) == Hit("g-1", "near", 0.8)


def test_boundary_where_threshold_times_size_rounds_up_is_still_found():
    # 0.56 * 25 is 14.000000000000002 in floats: a probe cut from it would skip the one shared shingle
    words = [f"w{n}" for n in range(27)]
    query = " ".join(words)  # 25 shingles
    gold = " ".join(words[:16])  # 14 shingles, all shared: 14 / 25 = 0.56
    assert 0.56 * 25 > 14
    hit = ContaminationIndex(golden(gold), threshold=0.56).check(query)
    assert hit == Hit("g-1", "near", 14 / 25)


def test_best_near_hit_wins_and_ties_go_to_the_smaller_id():
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa"  # 10 words -> 8 shingles
    items = [
        GoldenItem("g-far", base + " lambda mu", "x"),  # 8 of 10 -> 0.8
        GoldenItem("g-near", base + " lambda", "x"),  # 8 of 9
        GoldenItem("g-aaa", "lambda " + base, "x"),
    ]  # 8 of 9 too, and the smaller id
    assert ContaminationIndex(items).check(base) == Hit("g-aaa", "near", 8 / 9)
    assert ContaminationIndex(items[:2]).check(base) == Hit("g-near", "near", 8 / 9)


def test_index_answers_equal_brute_force():
    rng = random.Random(7)
    vocab = [f"v{n}" for n in range(12)]
    prompts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(300)]
    items = golden(*dict.fromkeys(prompts[:150]))
    for threshold in (0.3, 0.5, 0.56, 0.7, 0.8, 1.0):
        index = ContaminationIndex(items, threshold=threshold)
        found = 0
        for prompt in prompts[100:]:
            q = shingles(prompt)
            exact = [g.id for g in items if normalise(g.prompt) == normalise(prompt)]
            scored = [(Fraction(len(q & shingles(g.prompt)), len(q | shingles(g.prompt))), g.id) for g in items if q]
            near = [(s, gid) for s, gid in scored if s >= Fraction(threshold) - Fraction(1, 10**12)]
            hit = index.check(prompt)
            if exact:
                assert hit == Hit(exact[0], "exact", 1.0)
            elif near:
                best = max(s for s, _ in near)
                assert hit == Hit(min(gid for s, gid in near if s == best), "near", float(best)), prompt
            else:
                assert hit is None, prompt
            found += hit is not None
        assert found > 50  # the comparison is not vacuous


def test_index_rejects_bad_settings():
    with pytest.raises(ValueError):
        ContaminationIndex([], threshold=0.0)
    with pytest.raises(ValueError):
        ContaminationIndex([], threshold=1.5)
    with pytest.raises(ValueError):
        ContaminationIndex([], k=0)
    assert ContaminationIndex([]).check("anything at all here") is None


def test_scan_report_and_reason():
    items = [GoldenItem("g-ab12", "What is the capital of France?", "Paris"), GoldenItem("g-cd34", TWELVE, "ok")]
    index = ContaminationIndex(items)
    prompts = [
        "what is the CAPITAL of france?",
        "unrelated question about cooking pasta",
        TWELVE.replace("tomorrow", "today"),
        "another unrelated prompt",
    ]
    report = scan(index, prompts)
    assert report == ContaminationReport(4, 2, [Hit("g-ab12", "exact", 1.0), Hit("g-cd34", "near", 9 / 11)])
    reason = report.reason()
    assert reason == "2 training prompts match golden items (first: g-ab12 exact, g-cd34 near 0.82)"
    assert "France" not in reason and "quarterly" not in reason


def test_scan_keeps_five_examples_and_counts_all():
    index = ContaminationIndex([GoldenItem("g-1", "one two three", "x")])
    report = scan(index, ["One two  three"] * 7 + ["nothing"])
    assert (report.checked, report.hits, len(report.examples)) == (8, 7, 5)
    assert report.reason() == (
        "7 training prompts match golden items (first: g-1 exact, g-1 exact, g-1 exact, g-1 exact, g-1 exact)"
    )


def test_reason_for_one_and_for_none():
    index = ContaminationIndex([GoldenItem("g-1", "one two three", "x")])
    assert (
        scan(index, ["one two three", "four"]).reason() == "1 training prompt matches golden items (first: g-1 exact)"
    )
    assert scan(index, ["four", "five"]).reason() == "no training prompt matches a golden item (2 checked)"
    assert scan(index, []) == ContaminationReport(0, 0, [])
