"""Grounding: how much of a response the retrieved context supports.

A cheap, explainable check rather than a model: the response is split into sentences, and a
sentence is a *checkable claim* when it names something (a number or a capitalised name not at
the start of the sentence). A claim is supported when one context sentence holds every number and
name of the claim and at least `min_overlap` of its content words. The score is the share of claims supported. "Canberra is the capital" against a context
that says so is supported; "Sydney is the capital" against the same context is not, even though
"Sydney" appears elsewhere in it. Sentences without names or numbers ("Let me know if you need
more") are not claims and cannot make a response ungrounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)*")
_STOP = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her his how i if in
into is it its just may might more most no not of on or our she should so some such than that the their them then there
these they this those to too was we were what when where which who why will with would you your about also very""".split()
)


@dataclass(frozen=True)
class Grounding:
    score: float | None  # None: nothing to check (no context, or no claims)
    claims: int
    supported: int


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _key_and_content(sentence: str) -> tuple[set[str], set[str]]:
    tokens = _TOKEN.findall(sentence)
    keys = set()
    for i, t in enumerate(tokens):
        if t[0].isdigit():
            keys.add(t.replace(",", ""))
        elif i > 0 and t[0].isupper() and t.lower() not in _STOP:
            keys.add(t.lower())
    content = {t.lower().replace(",", "") for t in tokens if t.lower() not in _STOP and len(t) > 1 or t[0].isdigit()}
    return keys, content


def _passages(context: Sequence[str]) -> list[set[str]]:
    """Token sets of each context sentence. Not of adjacent pairs: "the capital of Australia is
    Canberra. It was chosen over Sydney." would then support "the capital of Australia is Sydney"."""
    return [{t.lower().replace(",", "") for t in _TOKEN.findall(s)} for doc in context for s in _sentences(doc)]


def grounding(response: str, context: Sequence[str] | None, min_overlap: float = 0.5) -> Grounding:
    if not context or not any(c.strip() for c in context):
        return Grounding(None, 0, 0)
    passages = _passages(context)
    claims = supported = 0
    for sentence in _sentences(response):
        keys, content = _key_and_content(sentence)
        if not keys:
            continue
        claims += 1
        for passage in passages:
            if keys <= passage and len(content & passage) >= min_overlap * len(content):
                supported += 1
                break
    if not claims:
        return Grounding(None, 0, 0)
    return Grounding(supported / claims, claims, supported)
