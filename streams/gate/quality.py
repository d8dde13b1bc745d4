"""The quality score: one number in [0, 1] per candidate, from the signals the join collected.

    score = clamp(base[user_action]
                  + thumbs_weight * clamp(thumbs, -1, 1)
                  + rating_weight * (rating - 3) / 2                       (when rated)
                  - quick_action_penalty                                   (accepted/copied faster than quick_action_ms)
                  - rewrite_weight * max(0, 1 - 2 * kept)                  (corrected; kept = share of the response the correction keeps)
                  - format_weight * (1 - format_score(target))
                  - uncertainty_weight * uncertainty,                      (when the app sends it)
                  0, 1)

The base is what the user did (a correction is the strongest signal: the user wrote the answer
they wanted); explicit feedback moves it; the rest are reasons to trust it less. Weights live in
the policy, so the formula is tuned without code changes; every term is reported by `explain`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from flywheel.policy import QualityFilter

_REFUSALS = re.compile(
    r"\b(as an ai( language model)?|i('m| am) (just )?an ai|i cannot (help|assist) with|i can't (help|assist) with|"
    r"i('m| am) (not able|unable) to (help|assist|provide))\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+", re.UNICODE)
_ENDS_CLEAN = re.compile(r"""[.!?:;)\]}"'`»…。]\s*$|```\s*$|^\s*$""")


@dataclass(frozen=True)
class FormatCheck:
    repetition: float  # share of word trigrams that repeat an earlier one
    truncated: bool  # stops mid-sentence
    refusal: bool
    broken_fence: bool  # an odd number of ``` fences

    @property
    def score(self) -> float:
        s = 1.0 - min(1.0, 2.0 * max(0.0, self.repetition - 0.1))  # some repetition is normal
        if self.truncated:
            s -= 0.3
        if self.refusal:
            s -= 0.6
        if self.broken_fence:
            s -= 0.3
        return max(0.0, s)


def check_format(text: str) -> FormatCheck:
    words = _WORD.findall(text.lower())
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    repetition = 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    stripped = text.rstrip()
    code_like = "\n" in stripped and stripped.splitlines()[-1].startswith((" ", "\t"))
    return FormatCheck(
        repetition=repetition,
        truncated=bool(stripped) and not code_like and not _ENDS_CLEAN.search(stripped),
        refusal=bool(_REFUSALS.search(text)),
        broken_fence=text.count("```") % 2 == 1,
    )


def kept_share(response: str, correction: str) -> float:
    """Share of the response's words that survive into the correction (1.0: untouched)."""
    a, b = _WORD.findall(response.lower()), _WORD.findall(correction.lower())
    if not a:
        return 0.0
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(a)


def quality_terms(c, q: QualityFilter) -> dict[str, float]:
    """Each term of the formula for candidate `c` (a TrainingCandidate); their sum, clamped, is the score."""
    terms = {"base": q.action_base.get(c.user_action, 0.5)}
    if c.thumbs:
        terms["thumbs"] = q.thumbs_weight * max(-1, min(1, c.thumbs))
    if c.rating is not None:
        terms["rating"] = q.rating_weight * (float(c.rating) - 3.0) / 2.0
    if (
        c.user_action in ("accepted", "copied")
        and c.time_to_action_ms is not None
        and c.time_to_action_ms < q.quick_action_ms
    ):
        terms["quick_action"] = -q.quick_action_penalty
    if c.user_action == "corrected" and c.correction:
        terms["rewrite"] = -q.rewrite_weight * max(0.0, 1.0 - 2.0 * kept_share(c.response, c.correction))
    fmt = check_format(c.target or c.response)
    if fmt.score < 1.0:
        terms["format"] = -q.format_weight * (1.0 - fmt.score)
    if c.uncertainty is not None:
        terms["uncertainty"] = -q.uncertainty_weight * max(0.0, min(1.0, float(c.uncertainty)))
    return terms


def quality_score(terms: dict[str, float]) -> float:
    return round(max(0.0, min(1.0, sum(terms.values()))), 4)
