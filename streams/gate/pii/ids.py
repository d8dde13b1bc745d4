"""National identifiers, passports, tax numbers, driving licences, licence plates, dates of birth.

presidio's country recognizers (most with a checksum), called directly and case-sensitively, each
behind its context words (CONTEXT) but the three whose layout stands alone (IT fiscal code, UK
NINO, UK driving licence); what presidio lacks, by keyword (`_keyword_ids`: a keyword, up to 30
characters without a digit, then an identifier-shaped token), licence plates by plate words, and
dates of birth next to a word that says birth. Every recognizer here needs a digit, and all but
three a word: the redactor runs each only on texts holding both (trigger and keys, base.py).

What it finds: docs/concepts/gate.md#privacy; why so: docs/concepts/gate.md#pii-recognizers
"""

from __future__ import annotations

import re

from streams.gate.pii.base import ContextWords, PresidioRecognizer, RegexRecognizer, Rule, word_keys

__all__ = ["ID_ENTITIES", "id_recognizers"]

_PASSPORT = (
    "passport",
    "passport no",
    "passport number",
    "passeport",
    "pasaporte",
    "passaporto",
    "reisepass",
    "reisepassnummer",
    "passnummer",
    "paspoort",
    "paszport",
    "travel document",
)
_DRIVING = (
    "driver's license",
    "driver's licence",
    "drivers license",
    "drivers licence",
    "driver license",
    "driving licence",
    "driving license",
    "licence number",
    "license number",
    "licence no",
    "license no",
    "dl number",
    "dvla",
    "führerschein",
    "fuehrerschein",
    "permis de conduire",
    "carnet de conducir",
    "patente",
    "rijbewijs",
)
_PLATE = (
    "licence plate",
    "license plate",
    "number plate",
    "registration plate",
    "registration number",
    "vehicle registration",
    "car registration",
    "registration",
    "car reg",
    "reg no",
    "plate",
    "plates",
    "kennzeichen",
    "nummernschild",
    "immatriculation",
    "plaque",
    "matrícula",
    "matricula",
    "placa",
    "targa",
    "kenteken",
)

# presidio recognizer -> (context words required near a finding, or None: stands alone; entity to report as)
CONTEXT: dict[str, tuple[tuple[str, ...] | None, str | None]] = {
    "NhsRecognizer": (("nhs", "national health", "health service"), None),
    "UkNinoRecognizer": (None, None),
    "UkPassportRecognizer": (_PASSPORT, None),
    "UkDrivingLicenceRecognizer": (None, None),
    "UkVehicleRegistrationRecognizer": (_PLATE + ("reg", "vrn", "dvla", "v5c", "mot"), "LICENSE_PLATE"),
    "EsNifRecognizer": (
        ("dni", "nif", "documento nacional", "identidad", "identificación", "identificacion", "tax id"),
        None,
    ),
    "EsNieRecognizer": (("nie", "extranjero", "extranjería", "identidad", "identificación", "residencia"), None),
    "ItFiscalCodeRecognizer": (None, None),
    "ItIdentityCardRecognizer": (
        ("carta d'identità", "carta di identità", "carta identità", "identità", "cie", "documento"),
        None,
    ),
    "ItPassportRecognizer": (_PASSPORT, None),
    "ItDriverLicenseRecognizer": (_DRIVING, None),
    "SgFinRecognizer": (("nric", "fin", "ic number", "identity card", "identity number", "work pass"), None),
    "AuTfnRecognizer": (("tfn", "tax file"), None),
    "AuAbnRecognizer": (("abn", "australian business number"), None),
    "AuAcnRecognizer": (("acn", "australian company number"), None),
    "AuMedicareRecognizer": (("medicare",), None),
    "InPanRecognizer": (("pan", "pan card", "permanent account number", "income tax"), None),
    "InAadhaarRecognizer": (("aadhaar", "aadhar", "uidai", "uid"), None),
    "InPassportRecognizer": (_PASSPORT, None),
    "InVoterRecognizer": (("voter", "epic", "elector"), None),
    "UsPassportRecognizer": (_PASSPORT, None),
    "UsLicenseRecognizer": (_DRIVING, "US_DRIVER_LICENSE"),
    "UsItinRecognizer": (("itin", "taxpayer", "tax id", "tin", "w-7"), None),
    "DeTaxIdRecognizer": (
        (
            "steuer-id",
            "steuerid",
            "steueridentifikationsnummer",
            "identifikationsnummer",
            "idnr",
            "steuernummer",
            "tax id",
        ),
        None,
    ),
    "DePassportRecognizer": (_PASSPORT, None),
    "DeIdCardRecognizer": (("personalausweis", "ausweis", "ausweisnummer", "id card", "identity card"), None),
    "DeSocialSecurityRecognizer": (
        ("rentenversicherung", "sozialversicherung", "versicherungsnummer", "svnr", "rvnr"),
        None,
    ),
    "DeKfzRecognizer": (_PLATE, "LICENSE_PLATE"),
    "PlPeselRecognizer": (("pesel",), None),
    "SePersonnummerRecognizer": (("personnummer", "personal identity number", "samordningsnummer"), None),
    "FiPersonalIdentityCodeRecognizer": (("hetu", "henkilötunnus", "personal identity code"), None),
    "CaSinRecognizer": (("sin", "social insurance", "nas", "assurance sociale"), None),
    "KrRrnRecognizer": (("rrn", "resident registration"), None),
    "ThTninRecognizer": (("thai id", "national id", "tnin"), None),
}

# Keyword families of _keyword_ids: entity -> words.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "PASSPORT_NUMBER": _PASSPORT,
    "DRIVER_LICENSE": _DRIVING,
    "TAX_ID": (
        "tax id",
        "tax number",
        "tax identification",
        "taxpayer id",
        "tin",
        "ein",
        "utr",
        "steuernummer",
        "steuer-id",
        "numéro fiscal",
        "numero fiscal",
        "identifiant fiscal",
        "nif",
        "codice fiscale",
        "cpf",
        "fiscaal nummer",
    ),
    "ID_NUMBER": (
        "id card",
        "identity card",
        "id number",
        "id no",
        "identity number",
        "national id",
        "personalausweis",
        "personalausweisnummer",
        "ausweisnummer",
        "carte d'identité",
        "carte d’identité",
        "carta d'identità",
        "carta di identità",
        "documento de identidad",
        "dni",
        "cédula",
        "cedula",
        "identiteitskaart",
        "bsn",
        "burgerservicenummer",
        "sofinummer",
        "member id",
        "membership number",
        "employee id",
        "employee number",
        "staff id",
        "student id",
        "patient id",
        "mrn",
        "medical record number",
        "insurance number",
        "policy number",
        "sécurité sociale",
        "securite sociale",
        "nir",
        "insee",
        "sozialversicherungsnummer",
        "social security",
        "ssn",
        "nhs number",
        "nino",
        "national insurance",
        "pps number",
        "personnummer",
        "pesel",
        "nie",
        "nif",
    ),
}

_DIGIT = re.compile(r"\d")
# The three without context words: what each pattern starts with (presidio's regexes, loosened).
_STANDALONE_TRIGGERS = {
    "ItFiscalCodeRecognizer": re.compile(
        r"(?i)[a-z]{6}[\dlmnp-v]{2}[a-z][\dlmnp-v]{2}[a-z][\dlmnp-v]{3}[a-z]"
    ),  # (?i): its regex has it
    "UkNinoRecognizer": re.compile(r"[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]"),
    "UkDrivingLicenceRecognizer": re.compile(r"[A-Z9]{5}\d{6}"),
}


def _presidio_entities() -> dict[str, str]:
    """recognizer class name -> the entity it reports (without importing presidio)."""
    own = {
        "NhsRecognizer": "UK_NHS",
        "UkNinoRecognizer": "UK_NINO",
        "UkPassportRecognizer": "UK_PASSPORT",
        "UkDrivingLicenceRecognizer": "UK_DRIVING_LICENCE",
        "EsNifRecognizer": "ES_NIF",
        "EsNieRecognizer": "ES_NIE",
        "ItFiscalCodeRecognizer": "IT_FISCAL_CODE",
        "ItIdentityCardRecognizer": "IT_IDENTITY_CARD",
        "ItPassportRecognizer": "IT_PASSPORT",
        "ItDriverLicenseRecognizer": "IT_DRIVER_LICENSE",
        "SgFinRecognizer": "SG_NRIC_FIN",
        "AuTfnRecognizer": "AU_TFN",
        "AuAbnRecognizer": "AU_ABN",
        "AuAcnRecognizer": "AU_ACN",
        "AuMedicareRecognizer": "AU_MEDICARE",
        "InPanRecognizer": "IN_PAN",
        "InAadhaarRecognizer": "IN_AADHAAR",
        "InPassportRecognizer": "IN_PASSPORT",
        "InVoterRecognizer": "IN_VOTER",
        "UsPassportRecognizer": "US_PASSPORT",
        "UsItinRecognizer": "US_ITIN",
        "DeTaxIdRecognizer": "DE_TAX_ID",
        "DePassportRecognizer": "DE_PASSPORT",
        "DeIdCardRecognizer": "DE_ID_CARD",
        "DeSocialSecurityRecognizer": "DE_SOCIAL_SECURITY",
        "PlPeselRecognizer": "PL_PESEL",
        "SePersonnummerRecognizer": "SE_PERSONNUMMER",
        "FiPersonalIdentityCodeRecognizer": "FI_PERSONAL_IDENTITY_CODE",
        "CaSinRecognizer": "CA_SIN",
        "KrRrnRecognizer": "KR_RRN",
        "ThTninRecognizer": "TH_TNIN",
    }
    return {name: CONTEXT[name][1] or own[name] for name in CONTEXT}


ID_ENTITIES: tuple[str, ...] = tuple(
    dict.fromkeys(list(_presidio_entities().values()) + list(KEYWORDS) + ["DATE_OF_BIRTH"])
)


def id_recognizers(entities) -> list:
    import presidio_analyzer.predefined_recognizers as predefined

    wanted = set(entities)
    out = []
    for name, entity in _presidio_entities().items():
        if entity not in wanted:
            continue
        words, report_as = CONTEXT[name]
        recognizer = getattr(predefined, name)()
        context = ContextWords(words) if words else None
        # With context words, the recognizer's keys are theirs (no word anywhere, no finding):
        # most texts with a digit have none, and 30 recognizers do not run.
        out.append(
            PresidioRecognizer(recognizer, _STANDALONE_TRIGGERS.get(name, _DIGIT), context=context, entity=report_as)
        )
    if wanted & set(KEYWORDS):
        out.append(_keyword_ids(wanted))
    if "LICENSE_PLATE" in wanted:
        out.append(_plates())
    if "DATE_OF_BIRTH" in wanted:
        out += _dates_of_birth()
    return out


def _words_regex(words) -> str:
    ordered = sorted({w.lower() for w in words}, key=len, reverse=True)
    return r"(?<![^\W_])(?i:" + "|".join(re.escape(w) for w in ordered) + r")(?![^\W_])"


# An identifier: upper-case letters and digits, in groups joined by single spaces, hyphens or slashes; a
# first group of up to three letters ("AB 123456"), every other group with a digit (so no word
# after it is taken: "533380006 I think").
_ID_GROUP = r"(?=[A-Z0-9]{0,40}\d)[A-Z0-9]{1,40}"  # with a digit; one way to match a run (no backtracking blow-up)
_ID_TOKEN = (
    rf"(?<![\w-])(?P<id>(?:[A-Z]{{1,3}}[ -])?{_ID_GROUP}(?:[ /-]{_ID_GROUP}){{0,8}})"
    r"(?![\w/-]|[.,]\d)"
)


def _id_shaped(value: str) -> bool:
    alnum = re.sub(r"[ -]", "", value)
    return 6 <= len(alnum) <= 30


def _keyword_ids(wanted) -> RegexRecognizer:
    rules = []
    for entity, words in KEYWORDS.items():
        if entity in wanted:
            pattern = re.compile(rf"{_words_regex(words)}[^\d\n]{{0,30}}?{_ID_TOKEN}")
            # 0.45: above the default threshold, below every country recognizer (a number both
            # find is typed by the specific one: "SSN 536-22-1234" is <US_SSN>, not <ID_NUMBER>).
            rules.append(Rule(entity, pattern, 0.45, group="id", validate=_id_shaped))
    words = [w for entity, ws in KEYWORDS.items() if entity in wanted for w in ws]
    return RegexRecognizer("KeywordIdRecognizer", rules, _DIGIT, keys=word_keys(words))


def _plates() -> RegexRecognizer:
    """A plate-shaped token (4 to 9 letters and digits, both, in up to four groups) after a plate
    word: "kenteken 12-ABC-3", "plaque d'immatriculation AB-123-CD", "license plate 7ABC123"."""
    token = r"(?<![\w-])(?P<plate>[A-Z0-9]{1,8}(?:[ -][A-Z0-9]{1,4}){0,3})(?![\w-])"
    words = [w for w in _PLATE if w != "registration"]  # "registration for CS101": a course

    def plate_shaped(value: str) -> bool:
        alnum = re.sub(r"[ -]", "", value)
        return 4 <= len(alnum) <= 9 and any(c.isdigit() for c in alnum) and any(c.isalpha() for c in alnum)

    pattern = re.compile(rf"{_words_regex(words)}[^A-Z\d\n]{{0,30}}?{token}")
    return RegexRecognizer(
        "PlateRecognizer",
        [Rule("LICENSE_PLATE", pattern, 0.7, group="plate", validate=plate_shaped)],
        _DIGIT,
        keys=word_keys(words),
    )


_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|"
    "januar|jänner|februar|märz|maerz|mai|juni|juli|oktober|dezember|"
    "janvier|février|fevrier|mars|avril|juin|juillet|août|aout|septembre|octobre|novembre|décembre|decembre|"
    "enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre|diciembre|"
    "gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre|dicembre|"
    "januari|februari|maart|mei|augustus"
)
_DATE = (
    r"(?P<date>"
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 1990-07-04
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"  # 04/23/1979, 03.11.1988, 5/9/01
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?[ \t]+(?:de[ \t]+)?(?i:{_MONTHS})\.?(?:,?[ \t]+(?:de[ \t]+)?\d{{4}})?"  # 12 March 1985
    rf"|(?i:{_MONTHS})\.?[ \t]+\d{{1,2}}(?:st|nd|rd|th)?(?:,?[ \t]+\d{{4}})?"  # July 4th, 1992
    r")(?![\w/.-]*\d)"
)
_BIRTH_BEFORE = (
    "born",
    "birth",
    "date of birth",
    "birthdate",
    "birthday",
    "dob",
    "geboren",
    "geb.",
    "geburtsdatum",
    "geburtstag",
    "né",
    "née",
    "naissance",
    "anniversaire",
    "nacido",
    "nacida",
    "nací",
    "naci",
    "nacimiento",
    "cumpleaños",
    "nato",
    "nata",
    "nascita",
    "compleanno",
    "geboortedatum",
    "verjaardag",
)


def _dates_of_birth() -> list:
    words = "|".join(re.escape(w) for w in sorted(_BIRTH_BEFORE, key=len, reverse=True))
    before = re.compile(rf"(?<![^\W_])(?i:{words})(?![^\W_])[^\d\n]{{0,25}}?{_DATE}")
    after = re.compile(rf"{_DATE}[ \t]+(?i:geboren|born)\b")
    rules = [Rule("DATE_OF_BIRTH", before, 0.8, group="date"), Rule("DATE_OF_BIRTH", after, 0.8, group="date")]
    # "b. 1961-02-28", "D.O.B. 04/05/1990" (medical notes): on their own recognizer (a one-letter
    # word would let the big one run on every text).
    short = re.compile(rf"(?<![^\W_])(?:b\.|(?i:d\.o\.b\.?))[^\d\n]{{0,6}}?{_DATE}")
    return [
        RegexRecognizer("DateOfBirthRecognizer", rules, _DIGIT, keys=word_keys(_BIRTH_BEFORE)),
        RegexRecognizer(
            "BornShortRecognizer",
            [Rule("DATE_OF_BIRTH", short, 0.8, group="date")],
            re.compile(r"b\.[ \t]*\d|(?i:d\.o\.b)"),
        ),
    ]
