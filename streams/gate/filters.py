"""The gate's filters: small named stages, each adding scores, notes and reason codes to a batch.

A stage never drops a candidate; it says why the candidate should not pass (a reason code) and
the pipeline decides. Stages run on whole batches so that the model stages (PII, toxicity) and
the Redis-backed duplicate index pay their fixed costs once per batch.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Protocol, Sequence

from schemas.conversation import conversation_texts
from schemas.records import TrainingCandidate
from streams.gate import grounding as grounding_check
from streams.gate.toxicity import ToxicityScorer
from flywheel.policy import GatePolicy
from streams.gate.quality import quality_score, quality_terms

# reason codes (a rejection) by stage; notes say something without rejecting
REASONS = {
    "pii": ("pii_detected", "secret_found"),
    "action": ("action_excluded",),
    "length": ("too_short", "too_few_tokens"),
    "quality": ("low_quality",),
    "toxicity": ("toxic",),
    "grounding": ("ungrounded",),
    "contract": ("format_mismatch", "literal_not_in_prompt"),
}
NOTES = ("pii_redacted", "id_pseudonymised", "grounding_skipped", "grounding_no_claims")
FILTER_ERROR = "filter_error"
REDACTION_FAILED = "<REDACTION_FAILED>"


@dataclass
class Item:
    """A candidate on its way through the gate."""

    candidate: TrainingCandidate
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (stage, code) in pipeline order
    notes: list[str] = field(default_factory=list)
    redactions: Counter = field(default_factory=Counter)

    @property
    def rejected(self) -> bool:
        return bool(self.reasons)

    def reject(self, stage: str, code: str) -> None:
        self.reasons.append((stage, code))

    @property
    def target(self) -> str:
        """What a model would be trained to say: the correction when there is one, else the response."""
        c = self.candidate
        return c.target or (c.correction if c.user_action == "corrected" and c.correction else c.response)


class Stage(ABC):
    """One named filter of the gate. Required: `name` and `run`. Optional, with defaults: where the
    stage runs (`content`, `sees_rejected`) and what happens to candidates it could not check
    (`on_unchecked`). The gate calls these hooks and never asks which stage it holds."""

    name: ClassVar[str]
    # False: runs only on candidates every content stage passed (duplicates, keep rate)
    content: ClassVar[bool] = True
    # True: runs on every candidate even when the policy stops at the first rejection
    sees_rejected: ClassVar[bool] = False

    @abstractmethod
    def run(self, items: Sequence[Item]) -> None:
        """Check the items in one batch: reject (`item.reject`), note, or rewrite them in place."""

    def on_unchecked(self, items: Sequence[Item]) -> None:
        """The stage failed on these items, alone as in a batch: they are rejected `filter_error`;
        a stage whose failure leaves something unsafe in them cleans it here."""


# -- the components stages are given (built by streams.gate.pipeline; tests pass their own) --------------


class Redacted(Protocol):
    text: str
    counts: Mapping[str, int]  # entity type -> placeholders put in


class TextRedactor(Protocol):
    """What the PII stage needs of a redactor (streams.gate.pii.Redactor)."""

    def redact(self, texts: Sequence[str]) -> Sequence[Redacted]:
        """One result per text, in order; raises rather than return a text it could not check."""
        ...


class NearKeyIndex(Protocol):
    """What the duplicate stage needs of an index (streams.gate.dedup.DuplicateIndex)."""

    def near_keys(self, text: str) -> bytes: ...


class Tokenizer(Protocol):
    """A transformers tokenizer, as the length stage calls it."""

    def __call__(self, texts: list[str], *, add_special_tokens: bool) -> Mapping[str, list[list[int]]]: ...


# -- privacy ---------------------------------------------------------------------------------------


class PiiStage(Stage):
    """Redacts every text field of the candidate, whatever else happens to it: rejected candidates
    are written out too, so they must be as clean as the ones that pass.

    reject: any finding also rejects (pii_detected). reject_secrets: a credential rejects
    (secret_found): a prompt with a live key is no training example, and the value is already
    replaced in every field before the candidate goes anywhere."""

    name = "pii"
    sees_rejected = True  # rejected candidates are written out too: they must be as clean

    def __init__(self, redactor: TextRedactor, reject: bool = False, reject_secrets: bool = True):
        self.redactor = redactor
        self.reject = reject
        self.reject_secrets = reject_secrets

    def run(self, items: Sequence[Item]) -> None:
        slots: list[tuple[Item, list[Callable[[str], None]]]] = []
        texts: list[str] = []
        for item in items:
            # a turn of the conversation that repeats a text met before in this candidate (the prompt is
            # also its last user turn) is redacted with it, and neither scanned nor counted again
            seen: dict[str, list] = {}
            for text, put, echo in _text_slots(item.candidate, with_echoes=True):
                if text:
                    puts = seen.get(text) if echo else None
                    if puts is None:
                        puts = [put]
                        seen.setdefault(text, puts)
                        texts.append(text)
                        slots.append((item, puts))
                    else:
                        puts.append(put)
        for (item, puts), red in zip(slots, self.redactor.redact(texts), strict=True):
            if red.counts:
                for put in puts:
                    put(red.text)
                item.redactions.update(red.counts)
        from streams.gate.pii import has_secret

        for item in items:
            self._pseudonymise_ids(item)
            if item.redactions:
                item.notes.append("pii_redacted")
                if self.reject:
                    item.reject(self.name, "pii_detected")
                if self.reject_secrets and has_secret(item.redactions):
                    item.reject(self.name, "secret_found")

    def _pseudonymise_ids(self, item: Item) -> None:
        """Ids are opaque by contract; one that holds personal data (an email as user id) is
        replaced by a stable hash, so joins and erasure by the same id still work."""
        c = item.candidate
        for name in ("user_id", "session_id"):
            value = getattr(c, name)
            if value and ("@" in value or sum(ch.isdigit() for ch in value) >= 7):
                if self.redactor.redact([value])[0].counts:
                    setattr(c, name, pseudonymous_id(value))
                    item.notes.append("id_pseudonymised")

    def on_unchecked(self, items: Sequence[Item]) -> None:
        self.scrub(items)

    @staticmethod
    def scrub(items: Sequence[Item]) -> None:
        """When redaction itself failed: no text leaves the gate at all."""
        for item in items:
            for text, put in _text_slots(item.candidate):
                if text:
                    put(REDACTION_FAILED)


def pseudonymous_id(value: str, key: bytes | None = None) -> str:
    """The stable stand-in for an id that held personal data (erasure by the raw id finds it): keyed,
    HMAC-SHA256 with the flywheel's pseudonym key (FLYWHEEL_PSEUDONYM_KEY; None: this process's)."""
    from flywheel.pseudonyms import current_key, keyed

    return "pii-" + keyed(current_key() if key is None else key, value)[:24]


def _text_slots(c: TrainingCandidate, with_echoes: bool = False):
    """(text, setter) for every free-text field of a candidate, the conversation's included;
    with_echoes: (text, setter, whether it is a conversation text that may repeat an earlier one)."""

    def setter(name):
        return lambda v: setattr(c, name, v)

    def slot(text, put, echo=False):
        return (text, put, echo) if with_echoes else (text, put)

    for name in ("prompt", "response", "correction", "target", "pair_chosen", "pair_rejected"):
        yield slot(getattr(c, name), setter(name))
    for i, passage in enumerate(c.retrieved_context or ()):
        yield slot(passage, (lambda v, i=i: c.retrieved_context.__setitem__(i, v)))
    for key, value in c.metadata.items():
        yield slot(value, (lambda v, key=key: c.metadata.__setitem__(key, v)))
    for text, put in conversation_texts(c):  # system, every turn, tool calls and tools (schemas/conversation.py)
        yield slot(text, put, True)


# -- content ---------------------------------------------------------------------------------------


class ActionStage(Stage):
    name = "action"

    def __init__(self, allowed: Sequence[str]):
        self.allowed = frozenset(allowed)

    def run(self, items):
        for item in items:
            if item.candidate.user_action not in self.allowed:
                item.reject(self.name, "action_excluded")


class LengthStage(Stage):
    name = "length"

    def __init__(self, min_words: int, min_tokens: int = 0, tokenizer: Tokenizer | None = None):
        self.min_words = min_words
        self.min_tokens = min_tokens
        self.tokenizer = tokenizer

    def run(self, items):
        targets = [item.target for item in items]
        tokens = None
        if self.tokenizer is not None and self.min_tokens:
            tokens = [len(ids) for ids in self.tokenizer(targets, add_special_tokens=False)["input_ids"]]
        for i, item in enumerate(items):
            words = len(targets[i].split())
            item.candidate.scores["words"] = float(words)
            if words < self.min_words:
                item.reject(self.name, "too_short")
            if tokens is not None:
                item.candidate.scores["tokens"] = float(tokens[i])
                if tokens[i] < self.min_tokens:
                    item.reject(self.name, "too_few_tokens")


class QualityStage(Stage):
    name = "quality"

    def __init__(self, policy, reject: bool = True):
        self.q = policy
        self.reject = reject

    def run(self, items):
        for item in items:
            c = item.candidate
            terms = quality_terms(c, self.q)
            c.quality_score = quality_score(terms)
            c.scores["quality"] = c.quality_score
            for term, value in terms.items():
                c.scores[f"quality.{term}"] = round(value, 4)
            if self.reject and c.quality_score < self.q.threshold:
                item.reject(self.name, "low_quality")


class ToxicityStage(Stage):
    name = "toxicity"

    def __init__(self, scorer: ToxicityScorer, threshold: float, fields: Sequence[str]):
        self.scorer = scorer
        self.threshold = threshold
        self.fields = tuple(fields)

    def run(self, items):
        texts, owners = [], []
        for k, item in enumerate(items):
            seen = set()
            for text in self._texts(item):
                if text and text not in seen:  # the target is usually the response: score it once
                    seen.add(text)
                    texts.append(text)
                    owners.append(k)
        worst = [0.0] * len(items)
        for k, score in zip(owners, self.scorer.score(texts), strict=True):
            worst[k] = max(worst[k], float(score))
        for item, score in zip(items, worst):
            item.candidate.scores["toxicity"] = round(score, 4)
            if score > self.threshold:  # the seed: toxicity_classifier(...) > 0.1 fails
                item.reject(self.name, "toxic")

    def _texts(self, item):
        """The fields' texts; with "prompt", every user turn of the conversation too (the prompt is its
        last), with "response", every earlier assistant turn: a conversation is trained on whole."""
        c = item.candidate
        for f in self.fields:
            yield item.target if f == "target" else getattr(c, f) or ""
        roles = {"user"} if "prompt" in self.fields else set()
        if "response" in self.fields:
            roles.add("assistant")
        for m in c.messages if roles else ():
            if m.get("role") in roles:
                yield m.get("content") or ""


class GroundingStage(Stage):
    name = "grounding"

    def __init__(self, threshold: float, min_overlap: float):
        self.threshold = threshold
        self.min_overlap = min_overlap

    def run(self, items):
        for item in items:
            c = item.candidate
            g = grounding_check.grounding(item.target, c.retrieved_context, self.min_overlap)
            if g.score is None:
                item.notes.append("grounding_skipped" if not c.retrieved_context else "grounding_no_claims")
                continue
            c.scores["grounding"] = round(g.score, 4)
            if g.score < self.threshold:
                item.reject(self.name, "ungrounded")


# -- against what passed before ------------------------------------------------------------------


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def literals(text: str) -> tuple[set[str], list[str]]:
    """The numbers (without leading zeros) and the quoted strings of a text."""
    numbers = {n.lstrip("0") or "0" for n in _NUMBER.findall(text)}
    return numbers, [a or b for a, b in _QUOTED.findall(text)]


def contract_breach(target: str, prompt: str, contract) -> str | None:
    """The reason code of the first rule of `contract` the target breaks, or None."""
    flags = re.IGNORECASE if contract.ignore_case else 0
    if contract.pattern and re.fullmatch(contract.pattern, target.strip(), flags) is None:
        return "format_mismatch"
    if contract.literals_from_prompt:
        numbers, quoted = literals(target)
        said, _ = literals(prompt)
        low = prompt.lower()
        if not numbers <= said or any(q.strip().lower() not in low for q in quoted):
            return "literal_not_in_prompt"
    return None


class ContractStage(Stage):
    """The app's output contract for the candidate's task type (`[contract.tasks.<task>]`)."""

    name = "contract"

    def __init__(self, contracts):
        self.contracts = dict(contracts)

    def run(self, items):
        for item in items:
            c = item.candidate
            contract = self.contracts.get(c.task_type or "")
            if contract is None:
                continue
            code = contract_breach(item.target, c.prompt, contract)
            if code:
                item.reject(self.name, code)


def dedup_text(item: Item) -> str:
    return item.candidate.prompt + "\n" + item.target


class DuplicateStage(Stage):
    """Near-duplicate keys for the dataset builder: the LSH band keys of the text's MinHash.

    The gate no longer decides duplicates: which copy "came first" would be whichever one this
    process saw first. The builder decides over a sealed window, earliest event time first
    (`streams.datasets.content.Selection`); exact copies it finds by their own key."""

    name = "duplicates"
    content = False

    def __init__(self, index: NearKeyIndex):
        self.index = index

    def run(self, items):
        for item in items:
            item.candidate.dedup_keys = self.index.near_keys(dedup_text(item))


def build_stages(
    policy: GatePolicy,
    *,
    redactor: TextRedactor | None = None,
    scorer: ToxicityScorer | None = None,
    index: NearKeyIndex | None = None,
    tokenizer: Tokenizer | None = None,
) -> list[Stage]:
    """The enabled stages in pipeline order. Components are passed in (built by streams.gate.pipeline); a stage
    the policy enables without its component is a ValueError here, not an AttributeError in the first batch."""
    p = policy

    def given(component, section: str):
        if component is None:
            raise ValueError(f"[{section}] is enabled but no component was given for it")
        return component

    stages: list[Stage] = []
    if p.pii.enabled:
        stages.append(
            PiiStage(given(redactor, "pii"), reject=p.pii.mode == "reject", reject_secrets=p.pii.secrets == "reject")
        )
    if p.action.enabled:
        stages.append(ActionStage(p.action.allowed))
    if p.length.enabled:
        stages.append(LengthStage(p.length.min_words, p.length.min_tokens, tokenizer))
    stages.append(
        QualityStage(p.quality, reject=p.quality.enabled)
    )  # always scored (datasets and review sort by it); rejects only when enabled
    if p.toxicity.enabled:
        stages.append(ToxicityStage(given(scorer, "toxicity"), p.toxicity.threshold, p.toxicity.fields))
    if p.grounding.enabled:
        stages.append(GroundingStage(p.grounding.threshold, p.grounding.min_overlap))
    if p.contract.enabled and p.contract.tasks:
        stages.append(ContractStage(p.contract.tasks))
    if p.duplicates.enabled:
        stages.append(DuplicateStage(given(index, "duplicates")))
    return stages
