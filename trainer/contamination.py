"""Keep the golden test set out of training data, exactly and as near duplicates.

A model trained on a golden prompt (or on the same prompt with a word changed) scores well on the
golden set without being better, so every training dataset is checked against the golden prompts
before it is used. Exact copies are found by the normalised text; near copies by the Jaccard
similarity of word 3-shingles. The index answers in tens of microseconds for a golden set of
thousands: it only looks at golden items that share a shingle with the checked prompt, and among
those only the ones that could still reach the threshold (prefix filtering), and it computes the
true Jaccard for each of them, so the answer is the same as comparing against every golden item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from trainer.examples import GoldenItem

MAX_EXAMPLES = 5  # hits a report keeps, to say which golden items leaked without listing them all


def normalise(text: str) -> str:
    """Casefolded, with runs of whitespace collapsed to one space and none at the ends."""
    return " ".join(text.casefold().split())


def shingles(text: str, k: int = 3) -> frozenset[str]:
    """The word k-shingles of the normalised text; a text of fewer than k words is its own single
    shingle, and an empty text has none."""
    if k < 1:
        raise ValueError(f"shingle size must be at least 1, got {k}")
    words = normalise(text).split(" ")
    if words == [""]:
        return frozenset()
    if len(words) < k:
        return frozenset((" ".join(words),))
    return frozenset(" ".join(words[i : i + k]) for i in range(len(words) - k + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|; 0.0 for two empty sets."""
    if not a and not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


@dataclass(frozen=True, slots=True)
class Hit:
    """A checked prompt matched golden item `golden_id`, exactly or as a near duplicate."""

    golden_id: str
    kind: str  # "exact" | "near"
    similarity: float


class ContaminationIndex:
    """The golden prompts, indexed for exact and near-duplicate lookup of many training prompts."""

    def __init__(self, items: Iterable[GoldenItem], threshold: float = 0.8, k: int = 3) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if k < 1:
            raise ValueError(f"shingle size must be at least 1, got {k}")
        self.threshold = threshold
        self.k = k
        self._exact: dict[str, str] = {}
        self._ids: list[str] = []
        self._sets: list[frozenset[str]] = []
        self._postings: dict[str, list[int]] = {}
        for item in items:
            self._exact.setdefault(normalise(item.prompt), item.id)
            grams = shingles(item.prompt, k)
            if not grams:
                continue
            number = len(self._ids)
            self._ids.append(item.id)
            self._sets.append(grams)
            for gram in grams:
                self._postings.setdefault(gram, []).append(number)

    def __len__(self) -> int:
        return len(self._ids)

    def check(self, prompt: str) -> Hit | None:
        """The golden item `prompt` copies: an exact match first, else the most similar near
        duplicate at or above the threshold (ties go to the smaller id); None when there is none."""
        golden_id = self._exact.get(normalise(prompt))
        if golden_id is not None:
            return Hit(golden_id, "exact", 1.0)
        grams = shingles(prompt, self.k)
        if not grams:
            return None
        # A golden set g with J(q, g) >= t shares at least ceil(t * |q|) shingles with q, so it shares
        # one with any |q| - ceil(t * |q|) + 1 of q's shingles: probe only that many, rarest first
        # (shingles no golden prompt has cost nothing). The epsilon keeps float error from
        # shortening the probe, which would lose hits; a longer probe is only slower.
        postings = self._postings
        need = max(1, math.ceil(self.threshold * len(grams) - 1e-9))
        probe = sorted(grams, key=lambda g: len(postings.get(g, ())))[: len(grams) - need + 1]
        candidates: set[int] = set()
        for gram in probe:
            candidates.update(postings.get(gram, ()))
        best: Hit | None = None
        for number in candidates:
            similarity = jaccard(grams, self._sets[number])
            if similarity < self.threshold:
                continue
            golden_id = self._ids[number]
            if (
                best is None
                or similarity > best.similarity
                or (similarity == best.similarity and golden_id < best.golden_id)
            ):
                best = Hit(golden_id, "near", similarity)
        return best


@dataclass
class ContaminationReport:
    """How many training prompts copy a golden item, with the first few hits as evidence."""

    checked: int = 0
    hits: int = 0
    examples: list[Hit] = field(default_factory=list)  # at most MAX_EXAMPLES, in scan order

    def reason(self) -> str:
        """One line for logs and refusals: counts and golden ids, never prompt text."""
        if not self.hits:
            return f"no training prompt matches a golden item ({self.checked} checked)"
        shown = ", ".join(
            f"{h.golden_id} exact" if h.kind == "exact" else f"{h.golden_id} near {h.similarity:.2f}"
            for h in self.examples
        )
        noun = "training prompt matches" if self.hits == 1 else "training prompts match"
        return f"{self.hits} {noun} golden items (first: {shown})"


def scan(index: ContaminationIndex, prompts: Iterable[str]) -> ContaminationReport:
    """Check every prompt against the index."""
    report = ContaminationReport()
    for prompt in prompts:
        report.checked += 1
        hit = index.check(prompt)
        if hit is not None:
            report.hits += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(hit)
    return report


class TooContaminated(ValueError):
    """More of a dataset's records copy golden items than the policy lets the trainer drop."""


def drop(
    index: ContaminationIndex, groups: Sequence[Sequence], max_share: float
) -> tuple[list[list], ContaminationReport]:
    """Each group of records (anything with a `.prompt`: examples, pairs) less the ones whose
    prompt copies a golden item, and the report of what was dropped. Raises TooContaminated when
    the share dropped (of all records in all groups) passes `max_share`: a dataset that is mostly
    golden questions says something is wrong upstream, not that a user asked one."""
    report = ContaminationReport()
    kept: list[list] = []
    for group in groups:
        out = []
        for record in group:
            report.checked += 1
            hit = index.check(record.prompt)
            if hit is None:
                out.append(record)
                continue
            report.hits += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(hit)
        kept.append(out)
    share = report.hits / report.checked if report.checked else 0.0
    if share > max_share:
        raise TooContaminated(
            f"{share:.1%} of the records dropped, above contamination_max_share {max_share:.0%}: {report.reason()}"
        )
    return kept, report
