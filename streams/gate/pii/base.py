"""What every recognizer family shares: a recognizer with a trigger, regex findings, context words.

A recognizer finds entities in one text and returns presidio `RecognizerResult`s. Three cheap
tests, each optional (`None`), let the redactor skip it, in this order; each must hold wherever
the recognizer could find anything:
- `keys`: the first letters (at most four) of words one of which it needs ("passport" -> "pass"),
  compared with the text's (`text_keys`);
- `hints`: lower-case strings one of which is in the lower-cased text;
- `trigger`: a compiled regex that matches.
Context words match case-insensitively at a word start within a window of characters around a
finding (`ContextWords.near`). Design: docs/concepts/gate.md#pii-recognizers
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

__all__ = [
    "ContextWords",
    "PresidioRecognizer",
    "Recognizer",
    "RegexRecognizer",
    "Rule",
    "TextKeys",
    "fold",
    "result",
    "text_keys",
    "word_keys",
]

_LETTERS = re.compile(r"[^\W\d_]+")


def word_keys(phrases: Iterable[str]) -> frozenset[str] | None:
    """The keys of the words or phrases a recognizer needs (one of them, starting at a word
    start): for each, its longest run of letters, lower-cased, cut to four. Every run of letters
    of a phrase found in a text starts a run of letters of the text, so its key is among the
    text's keys. None if a phrase has no letter."""
    keys = set()
    for phrase in phrases:
        runs = _LETTERS.findall(phrase.lower())
        if not runs:
            return None
        keys.add(max(runs, key=len)[:4])
    return frozenset(keys)


def fold(text: str) -> str:
    """`text` lower-cased as the regexes' IGNORECASE sees it: str.lower() turns "İ" into two
    characters ("i" and a combining dot), which would split a word the regexes read whole."""
    return text.replace("İ", "I").lower()


class TextKeys(set):
    """A text's keys (a set), and `words`: its runs of letters themselves."""

    words: frozenset[str] = frozenset()


def text_keys(text: str) -> TextKeys:
    """Every prefix of one to four letters of every run of letters in `text`, lower-cased (runs
    split at digits, '_' and punctuation)."""
    runs = _LETTERS.findall(fold(text))
    out = TextKeys(runs)
    out.update([r[:4] for r in runs])
    out.update([r[:3] for r in runs])
    out.update([r[:2] for r in runs])
    out.update([r[:1] for r in runs])
    out.words = frozenset(runs)
    return out


def result(entity: str, start: int, end: int, score: float):
    from presidio_analyzer import RecognizerResult

    return RecognizerResult(entity_type=entity, start=start, end=end, score=score)


class Recognizer:
    """One recognizer: `entities` it can find, a `trigger` (or None), and `find(text)`."""

    name: str = ""
    entities: tuple[str, ...] = ()
    trigger: re.Pattern | None = None
    keys: frozenset[str] | None = None
    hints: tuple[str, ...] | None = None

    def wants(self, text: str, lower: str, keys: set[str]) -> bool:
        """Whether `text` passes this recognizer's keys, hints and trigger (`lower`: the text
        lower-cased, `keys`: its text_keys)."""
        if self.keys is not None and keys.isdisjoint(self.keys):
            return False
        if self.hints is not None and not any(h in lower for h in self.hints):
            return False
        return self.trigger is None or self.trigger.search(text) is not None

    def find(self, text: str, keys: set[str] | None = None) -> list:
        """The findings in `text`; `keys`: the text's keys, when the caller has them."""
        raise NotImplementedError


class ContextWords:
    """Words that must be near a finding. A word of six letters or more also matches as the start
    of a longer word (German compounds: "Personalausweisnummer"); a shorter one only whole, with an
    optional plural "s" ("nhs", "pan", "dni" are not prefixes of ordinary words this way)."""

    def __init__(self, words: Iterable[str], before: int = 50, after: int = 25):
        words = sorted({w.lower() for w in words}, key=len, reverse=True)
        if not words:
            raise ValueError("no context words")
        long = [re.escape(w) for w in words if len(w) >= 6]
        short = [re.escape(w) for w in words if len(w) < 6]
        parts = []
        if long:
            parts.append(rf"(?:{'|'.join(long)})")
        if short:
            parts.append(rf"(?:{'|'.join(short)})s?(?![^\W_])")
        self.words = tuple(words)
        self.before, self.after = before, after
        self.pattern = re.compile(rf"(?<![^\W_])(?:{'|'.join(parts)})", re.IGNORECASE)

    def near(self, text: str, start: int, end: int) -> bool:
        window = text[max(0, start - self.before) : start] + "\n" + text[end : end + self.after]
        return self.pattern.search(window) is not None


@dataclass(frozen=True)
class Rule:
    """One regex of a RegexRecognizer: the finding is `group` of each match (0: all of it)."""

    entity: str
    pattern: re.Pattern
    score: float = 0.9
    group: int | str = 0
    validate: Callable[[str], bool] | None = None  # False: not a finding
    context: ContextWords | None = None  # required near the finding when given


class RegexRecognizer(Recognizer):
    """Rules over the whole text, with Python's `re` (all ours)."""

    def __init__(
        self,
        name: str,
        rules: Sequence[Rule],
        trigger: re.Pattern | None,
        keys: frozenset[str] | None = None,
        hints: Sequence[str] | None = None,
    ):
        self.name = name
        self.rules = tuple(rules)
        self.entities = tuple(dict.fromkeys(r.entity for r in rules))
        self.trigger = trigger
        self.keys = keys
        self.hints = tuple(hints) if hints is not None else None

    def find(self, text: str, keys: set[str] | None = None) -> list:
        out = []
        for rule in self.rules:
            for m in rule.pattern.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                value = text[start:end]
                if rule.validate is not None and not rule.validate(value):
                    continue
                if rule.context is not None and not rule.context.near(text, start, end):
                    continue
                out.append(result(rule.entity, start, end, rule.score))
        return out


class PresidioRecognizer(Recognizer):
    """One of presidio's predefined recognizers, called directly (no AnalyzerEngine).

    `case_sensitive` (True) runs its patterns without IGNORECASE (presidio's default flags ignore case, so
    a licence-plate pattern reads "for a 20" as a plate; None: the recognizer's own flags). `context`: words required near a finding
    (then its score is raised to at least `score_with_context`); without `context`, findings keep
    presidio's score (validated checksums score 1.0)."""

    def __init__(
        self,
        recognizer,
        trigger: re.Pattern | None,
        *,
        context: ContextWords | None = None,
        case_sensitive: bool | None = True,
        score_with_context: float = 0.6,
        entity: str | None = None,
        hints: Sequence[str] | None = None,
    ):
        import regex

        self.recognizer = recognizer
        self.name = getattr(recognizer, "name", None) or type(recognizer).__name__
        self.entities = tuple(recognizer.supported_entities)
        self.trigger = trigger
        self.keys = word_keys(context.words) if context is not None else None
        self.hints = tuple(hints) if hints is not None else None
        self.context = context
        self.score_with_context = score_with_context
        # None: the recognizer's own flags
        self.flags = None if case_sensitive is None else regex.MULTILINE | (0 if case_sensitive else regex.IGNORECASE)
        self.entity = entity  # report findings as this type instead

    def find(self, text: str, keys: set[str] | None = None) -> list:
        from presidio_analyzer import PatternRecognizer

        if isinstance(self.recognizer, PatternRecognizer):
            found = self.recognizer.analyze(text, list(self.entities), None, regex_flags=self.flags)
        else:
            found = self.recognizer.analyze(text, list(self.entities), None)
        out = []
        for r in found:
            if self.context is not None:
                if not self.context.near(text, r.start, r.end):
                    continue
                r.score = max(r.score, self.score_with_context)
            if self.entity:
                r.entity_type = self.entity
            out.append(r)
        return out
