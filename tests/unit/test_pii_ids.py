"""National identifiers, passports, tax numbers, licences, plates and dates of birth. The numbers are
made up here, with the check digits their schemes want (computed below, not copied from anywhere)."""

from __future__ import annotations

import pytest

from streams.gate.pii import Redaction, Redactor


@pytest.fixture(scope="module")
def redactor():
    return Redactor()


def nhs(first9: str) -> str:
    total = sum(int(d) * w for d, w in zip(first9, range(10, 1, -1)))
    check = (11 - total % 11) % 11
    assert check != 10
    return first9 + str(check)


def nif(n: int) -> str:
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def luhn_complete(digits: str) -> str:
    for last in "0123456789":
        s = digits + last
        total = sum(
            int(c) if i % 2 == 0 else (2 * int(c) - 9 if int(c) > 4 else 2 * int(c)) for i, c in enumerate(reversed(s))
        )
        if total % 10 == 0:
            return s
    raise AssertionError


def pesel(first10: str) -> str:
    w = [1, 3, 7, 9, 1, 3, 7, 9, 1, 3]
    return first10 + str((10 - sum(int(d) * x for d, x in zip(first10, w)) % 10) % 10)


NHS = nhs("401023213")
NIF = nif(45129876)
SIN = luhn_complete("27340581")
PESEL = pesel("8512031234")


WITH_CONTEXT = [
    (f"my NHS number is {NHS[:3]} {NHS[3:6]} {NHS[6:]}", f"{NHS[:3]} {NHS[3:6]} {NHS[6:]}"),
    (f"Mi DNI es {NIF}, ¿qué hago?", NIF),
    (f"Canadian SIN {SIN[:3]} {SIN[3:6]} {SIN[6:]} for the lease", f"{SIN[:3]} {SIN[3:6]} {SIN[6:]}"),
    (f"PESEL {PESEL} on the form", PESEL),
    ("my passport number is 587314902, is that needed?", "587314902"),
    ("numéro de passeport : 21CK48315", "21CK48315"),
    ("member ID W48213590 on my insurance card", "W48213590"),
    ("employee id 00731942 is not found", "00731942"),
    ("tax id (EIN) 47-2210935 for the company", "47-2210935"),
    ("driving licence number K8802-1973-4410", "K8802-1973-4410"),
    ("ITIN 912-78-3321 arrived by post", "912-78-3321"),
]


@pytest.mark.parametrize("text, value", WITH_CONTEXT, ids=[f"id{i}" for i in range(len(WITH_CONTEXT))])
def test_identifiers_next_to_their_word_go(redactor, text, value):
    red = redactor.redact_one(text)
    assert value not in red.text and red.counts, red.text


def test_standalone_identifiers():
    r = Redactor()
    assert r.redact_one("codice fiscale: VRDLCU78A03H501T").counts == {"IT_FISCAL_CODE": 1}
    assert r.redact_one("NI number PW 48 26 15 C").counts == {"UK_NINO": 1}


@pytest.mark.parametrize(
    "text",
    [
        f"Order {NHS} shipped yesterday.",  # a valid NHS number, but nothing says NHS
        f"ref {NIF} in the ledger",
        "Unix time 1700000000 and 1733356800 are both in the logs.",
        "The request id was 123e4567-e89b-12d3-a456-426614174000.",
        "Version 12.4.1 of the SDK, build 20231107.",
        "sizes 128 256 1024 and 65536 bytes",
        "My passport expires in 2031, when should I renew?",
        "Registration for CS101 opens on Monday.",
        "The Berlin Wall fell on 9 November 1989.",
        "The deadline is 03/15/2025.",
        "Invoices dated 01.04.2024 are due in 30 days.",
    ],
)
def test_numbers_without_their_word_stay(redactor, text):
    assert redactor.redact_one(text) == Redaction(text, {})


DATES_OF_BIRTH = [
    ("I was born on 12 March 1985.", "12 March 1985"),
    ("DOB: 1990-07-04", "1990-07-04"),
    ("date of birth 04/23/1979", "04/23/1979"),
    ("my birthday is July 4th, 1992", "July 4th, 1992"),
    ("Ich bin am 03.11.1988 geboren.", "03.11.1988"),
    ("Geburtsdatum: 17.05.1972", "17.05.1972"),
    ("je suis née le 8 juin 1995", "8 juin 1995"),
    ("fecha de nacimiento: 22/09/1983", "22/09/1983"),
    ("sono nato il 15/01/1990", "15/01/1990"),
    ("geboortedatum 30-06-1987", "30-06-1987"),
    ("b. 1961-02-28, lives alone", "1961-02-28"),
    ("D.O.B. 11/02/1947", "11/02/1947"),
]


@pytest.mark.parametrize("text, value", DATES_OF_BIRTH, ids=[f"dob{i}" for i in range(len(DATES_OF_BIRTH))])
def test_dates_of_birth(redactor, text, value):
    red = redactor.redact_one(text)
    assert value not in red.text and red.counts == {"DATE_OF_BIRTH": 1}, red.text


PLATES = [
    ("My car's registration is AB12 CDE.", "AB12 CDE"),
    ("mein Kennzeichen ist M-AB 1234", "M-AB 1234"),
    ("ma plaque d'immatriculation AB-123-CD", "AB-123-CD"),
    ("license plate 7ABC123 got a ticket", "7ABC123"),
    ("kenteken 12-ABC-3 staat op mijn naam", "12-ABC-3"),
]


@pytest.mark.parametrize("text, value", PLATES, ids=[f"plate{i}" for i in range(len(PLATES))])
def test_licence_plates(redactor, text, value):
    red = redactor.redact_one(text)
    assert value not in red.text and red.counts == {"LICENSE_PLATE": 1}, red.text


def test_a_country_recognizer_types_what_the_keyword_one_also_finds(redactor):
    # "SSN" is a keyword of the generic id recognizer too; the specific one names the type.
    assert redactor.redact_one("my SSN is 536-22-1234").text == "my SSN is <US_SSN>"
