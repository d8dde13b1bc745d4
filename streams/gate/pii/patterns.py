"""Contact, network and address patterns: e-mail (also spelled out), phone, card, IBAN, IP, MAC,
US SSN, BTC address, URLs with personal parts, street addresses (US/UK and five European styles),
and user names in home-directory paths.

presidio's predefined recognizers where they are good (e-mail with a domain check, phone numbers by
python-phonenumbers, card Luhn, IBAN and BTC checksums, IP, SSN, MAC), called directly; our own
regexes for the rest. Each recognizer has a trigger (see base.py): every one here but the
spelled-out e-mail and the home paths needs digits in some shape, an '@', '::', hex on both sides
of a ':'/'-', or '://'.

What is deliberately not here (see DEFAULT_ENTITIES in __init__): presidio's URL recognizer (it
matches every bare domain-like word: "setup.py", "README.md"); UK_NHS, US_BANK_NUMBER, US_PASSPORT,
US_DRIVER_LICENSE without a context word (they fire on plain numbers; ids.py requires context);
DATE_TIME (dates are not personal on their own; dates of birth are, ids.py).
"""

from __future__ import annotations

import re

from streams.gate.pii.base import ContextWords, PresidioRecognizer, RegexRecognizer, Rule, word_keys

__all__ = ["PATTERN_ENTITIES", "PHONE_MIN_DIGITS", "PHONE_REGIONS", "pattern_recognizers", "phone_gate"]

PATTERN_ENTITIES: tuple[str, ...] = (
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
)

# Regions whose national formats python-phonenumbers recognizes ("020 7946 0958"); numbers written
# with '+' or '00' and a country code are recognized whatever the region. Each region is one more
# full pass (~0.3 ms per 100 words with numbers in them), so the list is short: US (all of NANP)
# and GB. National formats of other countries ("030 12345678", "06 12 34 56 78") are found next to
# a phone word instead (_contextual_phone). Unassignable NANP numbers in the usual shapes
# ("555-123-4567") come from _nanp_phone.
PHONE_REGIONS: tuple[str, ...] = ("US", "GB")

# The fewest digits a phone number python-phonenumbers calls valid can have: a '+' number with a
# 2-digit country code and a 4-digit national number (+49 1640); national formats in PHONE_REGIONS
# need 7 (GB) or 10 (US). A test recomputes it from the metadata.
PHONE_MIN_DIGITS = 6

# Numbers every programmer writes that python-phonenumbers reads as valid NANP numbers (2^31 is a
# Dallas number, 2^33 a San Diego one): never redacted, whatever recognizer finds them.
ALLOW_LIST = frozenset({"2147483647", "2147483648", "8589934591", "8589934592", "17179869183", "17179869184"})

_DIGIT = re.compile(r"\d")


def pattern_recognizers(entities) -> list:
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        IbanRecognizer,
        MacAddressRecognizer,
        UsSsnRecognizer,
    )

    wanted = set(entities)
    factories = {
        "EMAIL_ADDRESS": lambda: [
            PresidioRecognizer(_email_recognizer(), re.compile("@"), case_sensitive=None),
            _spelled_email(),
        ],
        "PHONE_NUMBER": lambda: [
            PresidioRecognizer(_phone_recognizer(), phone_gate()),
            _nanp_phone(),
            _contextual_phone(),
        ],
        "CREDIT_CARD": lambda: [
            PresidioRecognizer(CreditCardRecognizer(), re.compile(r"\d(?:[- ]?\d){12}"), case_sensitive=None)
        ],
        "IBAN_CODE": lambda: [PresidioRecognizer(IbanRecognizer(), re.compile(r"[A-Z]{2}\d{2}"), case_sensitive=None)],
        "IP_ADDRESS": lambda: [
            PresidioRecognizer(
                _ip_recognizer(), re.compile(r"\d\.\d{1,3}\.\d|::|[0-9A-Fa-f]:[0-9A-Fa-f]"), case_sensitive=None
            )
        ],
        "MAC_ADDRESS": lambda: [
            PresidioRecognizer(
                MacAddressRecognizer(),
                re.compile(r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\."),
                case_sensitive=None,
                hints=(":", "-", "."),
            )
        ],
        "US_SSN": lambda: [
            PresidioRecognizer(UsSsnRecognizer(), re.compile(r"\d(?:[- .]?\d){8}"), case_sensitive=None)
        ],
        "CRYPTO": lambda: [
            PresidioRecognizer(CryptoRecognizer(), re.compile(r"(?i)(?:bc1|[13])[a-z0-9]{25}"), case_sensitive=None)
        ],
        "URL": lambda: [PresidioRecognizer(_url_recognizer(), re.compile("://"), case_sensitive=None)],
        "STREET_ADDRESS": lambda: [
            PresidioRecognizer(
                _street_address_recognizer(),
                re.compile(r"\d[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?[ \t]+\w|(?i:box)[ \t]+\d"),
                case_sensitive=None,
            ),
            _european_street(),
        ],
        "USERNAME": lambda: [_home_path_user()],
    }
    out = []
    for entity in PATTERN_ENTITIES:
        if entity in wanted:
            out += factories[entity]()
    return out


# -- e-mail ----------------------------------------------------------------------------------------


def _email_recognizer():
    """presidio's EmailRecognizer, validating domains with an offline tldextract (the module-level
    one fetches the public suffix list on first use: a traceback in the log when offline), or an
    alphabetic ending of two letters or more."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            # A public suffix, or any alphabetic ending: company-internal domains (".internal",
            # ".corp", ".local") carry people's addresses too.
            if extractor(pattern_text).fqdn != "":
                return True
            return re.search(r"\.[A-Za-z]{2,24}$", pattern_text) is not None

    return OfflineEmailRecognizer()


_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|co|me|dev|app|ai|eu|uk|de|fr|es|it|nl|be|ch|at|dk|se|no|fi|pl|pt|ie|"
    "bg|ro|cz|sk|hu|gr|ru|ua|tr|jp|cn|kr|in|au|nz|ca|us|mx|br|ar|cl|za|ng|ke|sg|hk|tw|il|ae|lu|li|is|ee|lv|lt|hr|si|rs"
)
# Mail providers: "mike at gmail.com" (an ordinary dot) is an address, "look at example.com" is not.
_PROVIDERS = (
    "gmail|googlemail|yahoo|ymail|hotmail|outlook|live|msn|icloud|me|mac|aol|gmx|web|protonmail|proton|pm|"
    "mail|yandex|zoho|fastmail|hey|tutanota|posteo|t-online|freenet|orange|free|laposte|sfr|wanadoo|libero|"
    "virgilio|tiscali|alice|ziggo|kpnmail|hetnet|telenet|skynet|bluewin|seznam|wp|onet|interia|qq|163|126|naver|rediffmail"
)
_AT_WORD = r"[ \t]+(?:at|AT|At)[ \t]+"
_AT_BRACKET = r"[ \t]*[\[({<][ \t]*(?i:at)[ \t]*[\])}>][ \t]*"
_DOT_WORD = r"[ \t]+(?:dot|DOT|Dot|point|punto|punkt|punt)[ \t]+"
_DOT_BRACKET = r"[ \t]*[\[({<][ \t]*(?i:dot|point|punto|punkt)[ \t]*[\])}>][ \t]*"
_LOCAL_SEP = rf"(?:{_DOT_BRACKET}|{_DOT_WORD}|[ \t]+(?:underscore|dash|hyphen)[ \t]+|[._+-])"
# Bounded repetitions everywhere in this family: a 200,000-character text (the codec's limit) must
# not make any pattern backtrack quadratically (tests/unit/test_pii_patterns.py times them).
_WORDISH = r"[A-Za-z0-9]{1,64}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Words that read "<word> at <provider>" in prose: "log in at gmail.com", "look at outlook.com".
_NOT_LOCAL = frozenset(
    "a an the in on up out back me us you him her them it this that there here look looking looked sign signed log "
    "logged work works worked working arrive arrived stay stayed meet available found located hosted found online "
    "account accounts inbox email mail address login page site".split()
)


def _spelled_email() -> RegexRecognizer:
    """E-mail addresses written so that no pattern sees an '@': "jane dot doe at gmail dot com",
    "jane [at] example [dot] org", "peter(at)meier-bau(dot)de", "mike at gmail.com".

    With '[at]', '(at)', '{at}' or '<at>' any domain counts; with a plain " at " the domain needs a
    spelled-out dot ("example dot org") or a mail provider's name before its ending ("gmail.com"),
    and the word before " at " must not be a word of prose ("look at outlook.com")."""
    local = rf"(?P<local>{_WORDISH}(?:{_LOCAL_SEP}{_WORDISH}){{0,6}})"
    dot_any = rf"(?:{_DOT_BRACKET}|{_DOT_WORD}|\.)"
    bracketed = re.compile(
        rf"(?<![\w.@+-]){local}{_AT_BRACKET}{_LABEL}(?:{dot_any}{_LABEL}){{0,5}}?{dot_any}(?i:{_TLDS})(?![\w-])"
    )
    spelled = re.compile(
        rf"(?<![\w.@+-]){local}{_AT_WORD}{_LABEL}(?:{dot_any}{_LABEL}){{0,5}}?(?:{_DOT_BRACKET}|{_DOT_WORD})(?i:{_TLDS})(?![\w-])"
    )
    provider = re.compile(
        rf"(?<![\w.@+-]){local}{_AT_WORD}(?i:{_PROVIDERS})(?:{dot_any}{_LABEL}){{0,5}}?{dot_any}(?i:{_TLDS})(?![\w-])"
    )

    def not_prose(value: str) -> bool:
        first = re.split(r"[ \t]+", value, maxsplit=1)[0]
        return first.lower() not in _NOT_LOCAL

    rules = [Rule("EMAIL_ADDRESS", p, 0.8, validate=not_prose) for p in (bracketed, spelled, provider)]
    return RegexRecognizer(
        "SpelledEmailRecognizer", rules, re.compile(r"(?i:[\[({<][ \t]*at[ \t]*[\])}>]|[ \t]at[ \t])")
    )


# -- network ---------------------------------------------------------------------------------------


def _ip_recognizer():
    """presidio's IpRecognizer, minus addresses that belong to nobody.

    Loopback (127.0.0.1, ::1), unspecified (0.0.0.0, ::) and multicast addresses, and for IPv4 the
    reserved 240/4 (where netmasks such as 255.255.255.0 fall), fill configuration and networking
    answers and identify no one. For IPv6 also the unallocated ranges (ipaddress' is_reserved):
    C++ and Rust paths made of hex letters ("Face::add", "a::b") are valid IPv6 syntax and land
    there. Private ranges (10/8, 192.168/16, fc00::/7) and link-local stay redacted: they name a
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

    return PersonalIpRecognizer()


def _url_recognizer():
    """URLs with a scheme that carry parameters or credentials: those routinely hold e-mails, names,
    session tokens. Bare URLs and personal pages without parameters are not caught."""
    from presidio_analyzer import Pattern

    ch = r"[^\s<>\"'`]"  # a URL character
    end = r"[^\s<>\"'`.,;:!?)\]}]"  # the last one: not the sentence's punctuation
    patterns = [
        # Possessive runs (`*+`, the `regex` module): linear even on a long token of '?'s.
        Pattern("URL with parameters", rf"\b(?:https?|ftp)://[^\s<>\"'`?#]*+[?#][^\s<>\"'`=]*+=(?:{ch}*{end})?", 0.5),
        Pattern("URL with credentials", rf"\b(?:https?|ftp)://[^\s/@:<>\"'`]+:[^\s/@<>\"'`]*@(?:{ch}*{end})?", 0.5),
    ]
    return _patterns("URL", "ParameterUrlRecognizer", patterns, ignorecase=True)


# -- phone -----------------------------------------------------------------------------------------


def phone_gate():
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


PHONE_WINDOW, PHONE_OVERLAP = 2000, 100


def _phone_recognizer():
    """presidio's PhoneRecognizer (python-phonenumbers, leniency 1: valid numbers only) for
    PHONE_REGIONS, line by line over the lines that can hold a number (see phone_gate)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    gate = phone_gate()

    class GatedPhoneRecognizer(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            if gate is None:
                return super().analyze(text, entities, nlp_artifacts)
            if gate.search(text) is None:
                return []
            # Line by line, only the lines that pass the gate. The same results as on the whole
            # text: a candidate never spans a newline (not in its punctuation), and the matcher's
            # look at the characters around a candidate sees the same at a line's end as at a '\n'.
            # A very long line is read in overlapping windows (the matcher slows down more than
            # linearly on a 40,000-character line of digits); a number is far shorter than the
            # overlap, and a number found twice is merged by the redactor.
            results = []
            offset = 0
            for line in text.split("\n"):
                if gate.search(line) is not None:
                    step = PHONE_WINDOW - PHONE_OVERLAP
                    for start in (
                        range(0, max(len(line) - PHONE_OVERLAP, 1), step) if len(line) > PHONE_WINDOW else (0,)
                    ):
                        piece = line[start : start + PHONE_WINDOW]
                        if start and gate.search(piece) is None:
                            continue
                        for r in super().analyze(piece, entities, None):
                            r.start += offset + start
                            r.end += offset + start
                            results.append(r)
                offset += len(line) + 1
            return results

    return GatedPhoneRecognizer(supported_regions=PHONE_REGIONS, leniency=1)


def _nanp_phone() -> RegexRecognizer:
    """North American numbers in the usual written shapes, valid or not: (NXX) NXX-XXXX, NXX-NXX-XXXX,
    NXX.NXX.XXXX, optionally after +1 or 1-. python-phonenumbers rejects unassignable ones (the 555
    area code), exactly the shapes people write. Plain space-separated triples are left to
    phonenumbers, since "sizes 128 256 1024" has that shape."""
    prefix = r"(?:\+?1[-. ]?)?"
    rules = [
        Rule("PHONE_NUMBER", re.compile(rf"(?<![\w+]){prefix}\(\d{{3}}\)[ ]?\d{{3}}[-. ]\d{{4}}(?!\w|[-.]\d)"), 0.6),
        Rule("PHONE_NUMBER", re.compile(rf"(?<![\w+.-]){prefix}\d{{3}}([-.])\d{{3}}\1\d{{4}}(?!\w|[-.]\d)"), 0.6),
    ]
    return RegexRecognizer("NanpPhoneRecognizer", rules, re.compile(r"\d{3}[-. )]{1,2}\d{3}"))


# Words that say the number next to them is a phone number, in the six languages of the corpus.
PHONE_WORDS = (
    "phone",
    "telephone",
    "tel",
    "tel.",
    "mobile",
    "mob",
    "cell",
    "cellphone",
    "landline",
    "whatsapp",
    "signal",
    "call me",
    "call us",
    "ring me",
    "ring",
    "text me",
    "sms",
    "fax",
    "my number",
    "our number",
    "direct line",
    "office line",
    "hotline",
    "handy",
    "telefon",
    "telefonnummer",
    "handynummer",
    "ruf mich",
    "anrufen",
    "rufnummer",
    "numéro",
    "portable",
    "téléphone",
    "appelle",
    "appelez",
    "móvil",
    "movil",
    "teléfono",
    "telefono",
    "llámame",
    "llamame",
    "cellulare",
    "chiamami",
    "numero",
    "nummer",
    "mobiel",
    "bel me",
    "bellen",
    "contact",
)


def _contextual_phone() -> RegexRecognizer:
    """National formats of any country next to a phone word: "Ruf mich an unter 030 12345678",
    "mon numéro : 06 12 34 56 78", "chiamami al 347 123 4567". 7 to 15 digits in groups
    separated by single spaces, dots, dashes, slashes or parentheses, optionally after '+' or '00';
    a phone word within 40 characters before."""
    # Groups of digits, each ended by a separator or the end: no two ways to split a run of digits.
    number = re.compile(
        r"(?<![\w+.,/-])(?:\+|00)?\(?\d{1,15}\)?(?:(?:[ \t]?[-./][ \t]?|[ \t])\(?\d{1,15}\)?){0,8}"
        r"(?![\w-]|[.,]\d)"
    )

    def digits_ok(value: str) -> bool:
        return 7 <= sum(ch.isdigit() for ch in value) <= 15 and value[-1].isdigit()

    context = ContextWords(PHONE_WORDS, before=40, after=0)
    rule = Rule("PHONE_NUMBER", number, 0.6, validate=digits_ok, context=context)
    return RegexRecognizer(
        "ContextPhoneRecognizer", [rule], re.compile(r"\d(?:\D{0,3}\d){6}"), keys=word_keys(context.words)
    )


# -- addresses -------------------------------------------------------------------------------------

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


def _street_address_recognizer():
    """Street addresses and PO boxes, US and UK style.

    "221B Baker Street", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "42 Elm St., Apt 4B",
    "10 Downing St, London SW1A 2AA", "P.O. Box 1234". The main pattern wants a house number, one
    to four capitalized words and a street suffix, so "3 blocks down the street" and "Top 10 Best
    Way" (a stop word) stay. A second one takes the common all-lowercase form ("42 elm street") with
    one or two words and a full suffix word, minus the phrases that are not addresses ("a 4 lane
    road", "a 2 hour drive"). Every pattern needs a digit (house or box number).
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
    return _patterns("STREET_ADDRESS", "StreetAddressRecognizer", patterns, ignorecase=False)


_UP = r"[A-ZÀ-ÖØ-Þ]"
_LOW = r"[a-zß-öø-ÿ]"
_CAP_WORD = rf"{_UP}[\w'’-]*(?:\.[\w'’-]+)*"  # dots inside only ("St.Gallen"), not the sentence's
_POSTAL_TAIL = rf"(?:,?[ \t]+(?:[A-Z]-)?\d{{4,5}}(?:[ \t]?[A-Z]{{2}})?[ \t]+{_CAP_WORD}(?:[ \t]+{_CAP_WORD})?)?"


def _european_street() -> RegexRecognizer:
    """Street addresses the way German, Dutch, French, Spanish and Italian speakers write them,
    with a house number and an optional postal code and town: "Hauptstraße 12, 10115 Berlin",
    "Keizersgracht 123, 1015 CJ Amsterdam", "14 rue des Lilas, 75011 Paris", "Calle Mayor 23,
    28013 Madrid", "Via Roma 22, 00184 Roma". Case matters: the street name is capitalized
    (French: the street type is not)."""
    de_nl = re.compile(
        rf"(?<![\w-])(?:{_CAP_WORD}[ \t-])?{_UP}{_LOW}*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|"
        rf"chaussee|steig|pfad|straat|gracht|laan|plein|kade|singel|dijk|steeg|dreef|hof)[ \t]+\d{{1,4}}[a-z]?\b"
        rf"{_POSTAL_TAIL}"
    )
    fr = re.compile(
        rf"(?<![\w,.-])\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?:rue|avenue|av\.|boulevard|bd|place|allée|allee|chemin|"
        rf"impasse|quai|route|cours|square)[ \t]+(?:(?:de[ \t]+la|de[ \t]+l['’]|des|du|de|d['’])[ \t]*)?{_CAP_WORD}"
        rf"(?:[ \t]+{_CAP_WORD}){{0,3}}{_POSTAL_TAIL}"
    )
    es_it = re.compile(
        rf"(?<![\w-])(?:Calle|C/|Avenida|Avda\.?|Plaza|Pza\.|Paseo|Camino|Carrer|Rúa|Ronda|Via|Viale|Piazza|Piazzale|"
        rf"Corso|Largo|Vicolo)[ \t]+(?:(?:de[ \t]+la|de[ \t]+los|de[ \t]+las|del|de|dei|degli|della|delle|di)[ \t]+)?"
        rf"{_CAP_WORD}(?:[ \t]+{_CAP_WORD}){{0,3}},?[ \t]+(?:n[º°o]\.?[ \t]*)?\d{{1,4}}(?:/?[A-Za-z])?\b{_POSTAL_TAIL}"
    )
    rules = [Rule("STREET_ADDRESS", p, 0.6) for p in (de_nl, fr, es_it)]
    # A house number after a street name (de, nl, es, it), or before a French street type.
    trigger = re.compile(
        r"(?:[^\W\d_]|\.),?[ \t]+(?:n[º°o]\.?[ \t]*)?\d|\d(?:[ \t]?(?:bis|ter))?,?[ \t]+"
        r"(?:rue|avenue|av\.|boulevard|bd|place|allée|allee|chemin|impasse|quai|route|cours|square)\b"
    )
    hints = (
        "straße",
        "strasse",
        "str.",
        "weg",
        "gasse",
        "platz",
        "allee",
        "allée",
        "ring",
        "damm",
        "ufer",
        "chaussee",
        "steig",
        "pfad",
        "straat",
        "gracht",
        "laan",
        "plein",
        "kade",
        "singel",
        "dijk",
        "steeg",
        "dreef",
        "hof",
        "rue",
        "av",
        "bd",
        "place",
        "chemin",
        "impasse",
        "quai",
        "route",
        "cours",
        "square",
        "calle",
        "c/",
        "plaza",
        "pza.",
        "paseo",
        "camino",
        "carrer",
        "rúa",
        "ronda",
        "via",
        "piazza",
        "corso",
        "largo",
        "vicolo",
    )
    return RegexRecognizer("EuropeanStreetRecognizer", rules, trigger, hints=hints)


# -- user names in paths ---------------------------------------------------------------------------

# Accounts that name no one: CI runners, containers, system users.
_SYSTEM_USERS = frozenset(
    "root runner ubuntu user users admin administrator public default shared vagrant ec2-user node app jenkins "
    "circleci travis docker www-data nobody guest build builder ci git postgres runneradmin all users".split()
)


def _home_path_user() -> RegexRecognizer:
    """The user name in a home-directory path: "/home/rkumar/...", "/Users/benwhite/...",
    "C:\\Users\\maria.gonzalez\\..." (stack traces and shell prompts carry them)."""
    pattern = re.compile(
        r"(?:(?<![\w.-])/home/|(?<![\w.-])/Users/|\b[A-Za-z]:(?:\\{1,2}|/)Users(?:\\{1,2}|/))"
        r"(?P<user>[^/\\\s\"'<>:*?|]{2,64})"
    )
    rule = Rule(
        "USERNAME", pattern, 0.7, group="user", validate=lambda v: v.lower() not in _SYSTEM_USERS and "$" not in v
    )
    return RegexRecognizer("HomePathUserRecognizer", [rule], re.compile(r"/home/|/Users/|[\\/]Users[\\/]"))


def _patterns(entity: str, name: str, patterns: list, *, ignorecase: bool):
    import regex
    from presidio_analyzer import PatternRecognizer

    flags = regex.MULTILINE | (regex.IGNORECASE if ignorecase else 0)
    return PatternRecognizer(supported_entity=entity, name=name, patterns=patterns, global_regex_flags=flags)
