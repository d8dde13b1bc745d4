"""Secrets and credentials: detect-secrets' plugins, and recognizers of ours for what they miss.

The plugins' own `analyze_string` runs line by line, on the lines a plugin's regexes can match
(`DS_HINTS`), without the plugins in `DS_LEFT_OUT` and never over the network; a finding's span is
widened to the whole token around it. Ours add passwords in prose (six languages), newer key
formats, whole PEM blocks, connection strings, `.env` lines, secret-named assignments and bearer
tokens. Every finding is one of SECRET_ENTITIES, scored 1.0 so that it wins against an overlapping
personal-data finding. Placeholders ("your-api-key-here", "${TOKEN}", "<password>", "xxxx") and
references (`os.environ["X"]`, `get_secret()`) are not findings (`is_placeholder`).

What it finds: docs/concepts/gate.md#privacy; design: docs/concepts/gate.md#pii-recognizers
"""

from __future__ import annotations

import math
import re
from collections import Counter

from streams.gate.pii.base import Recognizer, RegexRecognizer, Rule, fold, result, word_keys

__all__ = ["SECRET_ENTITIES", "credential_recognizers", "is_placeholder", "shannon_entropy"]

SECRET_ENTITIES: tuple[str, ...] = (
    "API_KEY",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "JWT",
    "PASSWORD",
    "PRIVATE_KEY",
    "SECRET",
)
SCORE = 1.0

# detect-secrets' secret types -> ours. Not used: the high-entropy plugins and IPPublicDetector.
DS_TYPES = {
    "Artifactory Credentials": "API_KEY",
    "AWS Access Key": "AWS_ACCESS_KEY",
    "Azure Storage Account access key": "API_KEY",
    "Basic Auth Credentials": "PASSWORD",
    "Cloudant Credentials": "PASSWORD",
    "Discord Bot Token": "API_KEY",
    "GitHub Token": "API_KEY",
    "GitLab Token": "API_KEY",
    "IBM Cloud IAM Key": "API_KEY",
    "IBM COS HMAC Credentials": "SECRET",
    "JSON Web Token": "JWT",
    "Mailchimp Access Key": "API_KEY",
    "NPM tokens": "API_KEY",
    "OpenAI Token": "API_KEY",
    "Private Key": "PRIVATE_KEY",
    "PyPI Token": "API_KEY",
    "SendGrid API Key": "API_KEY",
    "Slack Token": "API_KEY",
    "SoftLayer Credentials": "API_KEY",
    "Square OAuth Secret": "SECRET",
    "Stripe Access Key": "API_KEY",
    "Telegram Bot Token": "API_KEY",
    "Twilio API Key": "API_KEY",
}
# Left out: the two high-entropy plugins (every word of prose is a candidate), the public-IP one (an
# IP address is personal data, patterns.py), and the keyword plugin: with its config-file regexes it
# takes the rest of a line as the value ("pwd: X and user is admin, ..." lost the whole sentence),
# its regexes backtrack quadratically on a long line of keywords (1 s for 2,000 characters), and our
# assignment and prose recognizers find the same values (measured: no recall lost on the corpora).
DS_LEFT_OUT = ("Base64 High Entropy String", "Hex High Entropy String", "Public IP (ipv4)", "Secret Keyword")
# What each plugin's regexes cannot match without (lower-case strings in the lower-cased text, or a
# regex): forty regex searches a text cost more than all our recognizers, these a few microseconds.
# test_pii_secrets.py holds each to its plugin on texts with and without them.
DS_HINTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], re.Pattern | None]] = {
    # secret type: (in the lower-cased text, in the text as it is, a regex)
    "AWS Access Key": (("aws",), ("A3T", "ABIA", "ACCA", "AKIA", "ASIA"), None),
    "Artifactory Credentials": ((), ("AKC", "AP"), None),
    "Azure Storage Account access key": ((), ("AccountKey=",), None),
    "Basic Auth Credentials": (("://",), (), None),
    "Cloudant Credentials": (
        ("cloudant.com",),
        (),
        re.compile(r"(?i)cl(?:oudant|ou)?[_-]?(?:api)?(?:key|pw|pass|token)"),
    ),
    "Discord Bot Token": ((), (), re.compile(r"[MNO][\w-]{23}")),
    "GitHub Token": ((), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), None),
    "GitLab Token": ((), ("gl", "GR1348941"), None),
    "IBM COS HMAC Credentials": (("secret",), (), None),
    "IBM Cloud IAM Key": (("key", "pwd", "pass", "token"), (), None),
    "JSON Web Token": ((), ("eyJ",), None),
    "Mailchimp Access Key": ((), ("-us",), None),
    "NPM tokens": ((), ("_authToken",), None),
    "OpenAI Token": ((), ("T3BlbkFJ",), None),
    "Private Key": ((), ("PRIVATE KEY", "PuTTY-User-Key-File"), None),
    "PyPI Token": ((), ("pypi-",), None),
    "SendGrid API Key": ((), ("SG.",), None),
    "Slack Token": (("xox", "hooks.slack.com"), (), None),
    "SoftLayer Credentials": (
        ("api.softlayer.com",),
        (),
        re.compile(r"(?i)(?:softlayer|sl)[_-]?(?:api)?[_-]?(?:key|pwd|pass|token)"),
    ),
    "Square OAuth Secret": ((), ("sq0csp-",), None),
    "Stripe Access Key": ((), ("k_live_",), None),
    "Telegram Bot Token": ((), (), re.compile(r"\d{8}:")),
    "Twilio API Key": ((), ("AC", "SK"), None),
}

_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_\-+/=]")


def credential_recognizers(entities) -> list:
    if not set(entities) & set(SECRET_ENTITIES):
        return []
    wanted = set(entities)
    out = [
        DetectSecretsRecognizer(wanted),
        _formats(),
        _pem(),
        _connection_strings(),
        _assignments(),
        _prose_passwords(),
        _near_keyword(),
    ]
    for r in out:
        if isinstance(r, RegexRecognizer):
            r.rules = tuple(rule for rule in r.rules if rule.entity in wanted)
    return [r for r in out if not isinstance(r, RegexRecognizer) or r.rules]


# -- values that are not secrets -------------------------------------------------------------------

_PLACEHOLDER_WORDS = frozenset(
    "none null nil undefined true false yes no required optional empty string str int bytes bool text hidden "
    "password passwd pwd pass secret token key apikey api_key changeme change_me example sample dummy test "
    "placeholder redacted masked todo fixme xxx your_password your_token your_key value default apikey secretkey "
    "accesskey privatekey authtoken".split()
)
_PLACEHOLDER = re.compile(
    r"^(?:\$|%\(|\{|<|\[|\*+$|\.{3})"  # ${X}, $X, %(x)s, {{ x }}, <your key>, [key], ***, ... (also cut short: "<paste")
    r"|x{4,}|X{4,}|\*{3,}|\.{3}|…"  # AKIAXXXXXXXXXXXXXXXX, sk-...
    r"|(?i:\byour[-_ ]?\w*|\bmy[-_]?(?:api[-_]?)?(?:key|token|secret|password)\b|here$|_here\b|goes[-_ ]here|insert[-_ ]|replace[-_ ]?me|placeholder|redacted)"
)
# An attribute path or call: os.environ[...], process.env.JWT_SECRET, settings.API_KEY, get_key().
_PART = r"(?:[a-z_][a-z0-9_]*|[A-Z][a-z]+(?:[A-Z][a-z]+)*|[A-Z][A-Z0-9_]*)"
_REFERENCE = re.compile(rf"^{_PART}(?:\.{_PART})+(?:\(|\[|$)|^[A-Za-z_]\w*\(|^\w+\[")


def is_placeholder(value: str) -> bool:
    """A value that stands for a secret without being one: a template, a mask, a reference."""
    v = value.strip().strip("\"'`").rstrip(")]};,.").strip("\"'`")
    if len(v) < 3:
        return True
    if v.lower() in _PLACEHOLDER_WORDS:
        return True
    if _PLACEHOLDER.search(v):
        return True
    if _REFERENCE.match(v):
        return True
    return "_" in v and v.isupper() and v.replace("_", "").isalpha()  # DB_PASSWORD, API_KEY: names, not values


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    """The whole token around a finding, so no piece of a longer key survives."""
    while start > 0 and _TOKEN_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _TOKEN_CHAR.match(text[end]):
        end += 1
    return start, end


# -- detect-secrets --------------------------------------------------------------------------------


class DetectSecretsRecognizer(Recognizer):
    """detect-secrets' plugins through `analyze_string`, on the lines their regexes match."""

    name = "DetectSecretsRecognizer"

    def __init__(self, wanted):
        from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

        self.plugins = []
        for secret_type, cls in sorted(get_mapping_from_secret_type_to_class().items()):
            entity = DS_TYPES.get(secret_type)
            if entity is None or secret_type in DS_LEFT_OUT:
                continue
            if entity not in wanted and not (entity == "AWS_ACCESS_KEY" and "AWS_SECRET_KEY" in wanted):
                continue
            self.plugins.append((secret_type, entity, cls(), None, [{}]))
        self.entities = tuple(sorted({e for _, e, _, _, _ in self.plugins} | ({"AWS_SECRET_KEY"} & wanted)))
        self.wanted = wanted
        self.trigger = None
        self.hints = None  # per plugin: DS_HINTS

    def _matches(self, plugin, trigger, text: str) -> bool:
        if trigger is not None:
            return trigger.search(text) is not None
        return any(regex.search(text) for regex in plugin.denylist)

    def find(self, text: str, keys: set[str] | None = None) -> list:
        out = []
        lines = None
        lower = fold(text)
        for secret_type, entity, plugin, trigger, kwargs in self.plugins:
            folded, exact, regex = DS_HINTS[secret_type]
            if (
                not any(h in lower for h in folded)
                and not any(h in text for h in exact)
                and (regex is None or regex.search(text) is None)
            ):
                continue
            if not self._matches(plugin, trigger, text):
                continue
            if lines is None:
                lines = _lines(text)
            for offset, line in lines:
                if not line or not self._matches(plugin, trigger, line):
                    continue
                for kw in kwargs:
                    for value in set(plugin.analyze_string(line, **kw)):
                        if not value or is_placeholder(value):
                            continue
                        kind = entity
                        if secret_type == "AWS Access Key" and not plugin.denylist[0].fullmatch(value):
                            kind = "AWS_SECRET_KEY"
                        if kind not in self.wanted:
                            continue
                        for m in re.finditer(re.escape(value), line):
                            start, end = _widen(line, m.start(), m.end())
                            out.append(result(kind, offset + start, offset + end, SCORE))
        return out


# The plugins' regexes are the library's, written for lines of code: a very long line (minified
# code, a pasted blob) is read in overlapping windows, so no line costs more than a window's work.
LINE_WINDOW, LINE_OVERLAP = 2000, 300


def _lines(text: str) -> list[tuple[int, str]]:
    out, offset = [], 0
    for line in text.split("\n"):
        if len(line) <= LINE_WINDOW:
            out.append((offset, line))
        else:
            for start in range(0, len(line), LINE_WINDOW - LINE_OVERLAP):
                out.append((offset + start, line[start : start + LINE_WINDOW]))
        offset += len(line) + 1
    return out


# -- ours ------------------------------------------------------------------------------------------


def _mixed(value: str) -> bool:
    """Random keys have digits and letters of both cases; identifiers and words rarely all three."""
    return any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value)


def _formats() -> RegexRecognizer:
    """Key formats with a fixed prefix."""
    b, e = r"(?<![\w-])", r"(?![\w-])"
    rules = [
        Rule("API_KEY", re.compile(rf"{b}sk-ant-[a-z]{{2,8}}\d{{2}}-[A-Za-z0-9_-]{{20,}}"), SCORE),  # Anthropic
        Rule(
            "API_KEY",
            re.compile(rf"{b}sk-(?!ant-)(?:[a-z]+-)?[A-Za-z0-9_-]{{20,}}"),
            SCORE,
            validate=lambda v: _mixed(v[3:]),
        ),  # OpenAI: sk-, sk-proj-, sk-svcacct-, sk-admin-
        Rule("API_KEY", re.compile(rf"{b}github_pat_[A-Za-z0-9_]{{40,}}"), SCORE),  # GitHub fine-grained
        Rule("API_KEY", re.compile(rf"{b}gh[pousr]_[A-Za-z0-9]{{30,}}{e}"), SCORE),  # GitHub classic
        Rule("API_KEY", re.compile(rf"{b}gl(?:pat|dt|rt|ptt|cbt|imt|oas|agent|ft|soat)-[A-Za-z0-9_-]{{20,}}"), SCORE),
        Rule("API_KEY", re.compile(rf"{b}AIza[0-9A-Za-z_-]{{35}}{e}"), SCORE),  # Google
        Rule(
            "API_KEY",
            re.compile(rf"{b}(?:hf|api_org)_[A-Za-z0-9]{{30,}}{e}"),
            SCORE,
            validate=lambda v: any(c.isupper() for c in v) and any(c.islower() for c in v[3:]),
        ),  # Hugging Face
        Rule(
            "API_KEY",
            re.compile(rf"{b}(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{{16,}}"),
            SCORE,
            validate=lambda v: not v.startswith("pk_test"),
        ),  # Stripe (a live publishable key identifies an account)
        Rule("API_KEY", re.compile(rf"{b}whsec_[A-Za-z0-9]{{24,}}"), SCORE),  # Stripe webhook secret
        Rule("API_KEY", re.compile(rf"{b}xox[abposre]-[A-Za-z0-9-]{{10,}}"), SCORE),  # Slack
        Rule("API_KEY", re.compile(rf"{b}xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+"), SCORE),  # Slack app-level
        Rule("API_KEY", re.compile(rf"{b}SG\.[A-Za-z0-9_-]{{16,}}\.[A-Za-z0-9_-]{{16,}}"), SCORE),  # SendGrid
        Rule("API_KEY", re.compile(rf"{b}npm_[A-Za-z0-9]{{36}}{e}"), SCORE),
        Rule("API_KEY", re.compile(rf"{b}pypi-[A-Za-z0-9_-]{{50,}}"), SCORE),
        Rule(
            "API_KEY",
            re.compile(rf"{b}(?:lin_api|dp\.st\.[a-z]+|dop_v1|shpat|shpss|glsa|xkeysib)[._][A-Za-z0-9_.-]{{20,}}"),
            SCORE,
        ),  # Linear, Doppler, DigitalOcean, Shopify, Grafana, Brevo
        Rule("AWS_ACCESS_KEY", re.compile(rf"{b}(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[0-9A-Z]{{16}}{e}"), SCORE),
        Rule("JWT", re.compile(rf"{b}eyJ[A-Za-z0-9_-]{{8,}}\.eyJ[A-Za-z0-9_-]{{8,}}\.[A-Za-z0-9_-]{{8,}}"), SCORE),
    ]
    trigger = re.compile(
        r"sk-|_pat_|gh[pousr]_|gl[a-z]+-|AIza|hf_|api_org_|_live_|_test_|whsec_|xox|xapp-|SG\.|npm_|"
        r"pypi-|lin_api|dp\.st|dop_v1|shp|glsa|xkeysib|AKIA|ASIA|ABIA|ACCA|A3T|eyJ"
    )
    # Documentation placeholders in these shapes ("AKIAXXXXXXXXXXXXXXXX", "sk-...xxxx") are no key.
    rules = [Rule(r.entity, r.pattern, r.score, validate=_not_placeholder(r.validate)) for r in rules]
    return RegexRecognizer("KeyFormatRecognizer", rules, trigger)


def _not_placeholder(validate):
    return lambda v: not is_placeholder(v) and (validate is None or validate(v))


def _pem() -> RegexRecognizer:
    """The whole private-key block, header to footer (or, cut short, header and its base64 lines),
    also when its newlines are written as '\\n' inside a JSON string."""
    head = r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
    full = re.compile(rf"{head}[\s\S]{{0,20000}}?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----")
    cut = re.compile(
        rf"{head}(?:(?:\s|\\n)+[A-Za-z0-9+/=:\-]{{8,}})*"
    )  # a separator before each line: one way to split
    rules = [Rule("PRIVATE_KEY", full, SCORE), Rule("PRIVATE_KEY", cut, SCORE)]
    return RegexRecognizer("PrivateKeyBlockRecognizer", rules, re.compile("PRIVATE KEY"))


def _connection_strings() -> RegexRecognizer:
    """The password in a URL (any scheme: postgres, mysql, mongodb+srv, redis with an empty user,
    amqp, git over https) and in `Password=...;` / `AccountKey=...;` connection strings."""
    url = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@'\"<>]*:(?P<pw>[^\s/@'\"<>]{1,200})@[\w\[.-]")
    keyed = re.compile(
        r"(?i)(?<![\w-])(?:password|pwd|accountkey|sharedaccesskey|sharedsecret)\s*=\s*(?P<pw>[^;\s'\"]{3,300})"
    )
    rules = [
        Rule("PASSWORD", url, SCORE, group="pw", validate=lambda v: not is_placeholder(v)),
        Rule("PASSWORD", keyed, SCORE, group="pw", validate=lambda v: not is_placeholder(v)),
    ]
    return RegexRecognizer(
        "ConnectionStringRecognizer",
        rules,
        re.compile(r"(?i)://[^\s@/]{0,300}@|password\s*=|pwd\s*=|key\s*=|secret\s*="),
    )


# Names that say secret; and qualifiers that say the value is not the secret itself.
_SECRET_NAME = r"(?:secret|token|passw(?:or)?d|pwd|passphrase|api[_-]?key|apikey|access[_-]?key|private[_-]?key|auth[_-]?key|credentials?|signing[_-]?key|encryption[_-]?key)"
_NOT_SECRET_NAME = re.compile(
    r"(?i)(?:max|min|num|count|limit|length|len|size|type|url|uri|file|path|name|_id\b|endpoint|expir|ttl|timeout|"
    r"header|field|param|prefix|hint|policy|rotation|manager|store|provider|version|tokens\b|tokenizer|usage|env|var|"
    r"label|description|placeholder|format|algorithm|algo|hash|regex|pattern|validator|reset|confirm|strength)"
)


def _password_name(key: str) -> bool:
    return re.search(r"(?i)pass|pwd", key) is not None


def _assignment_value_ok(value: str, quoted: bool) -> bool:
    if is_placeholder(value):
        return False
    if value.isdigit() and len(value) < 6:
        return False
    if not quoted and re.fullmatch(r"[A-Za-z_][A-Za-z_]*", value):  # an identifier without digits: a reference
        return False
    return len(value) >= 4


class _AssignmentRecognizer(RegexRecognizer):
    """Assignments whose name says secret: `.env` lines (`DB_PASSWORD=...`, the rest of the line),
    code and config (`api_key = "..."`, `client_secret: ...`, `"password": "..."`)."""

    def __init__(self):
        env = re.compile(
            rf"(?im)^[ \t]*(?:export[ \t]+)?(?P<key>[A-Z0-9_.-]{{0,40}}{_SECRET_NAME}[A-Z0-9_.-]{{0,40}})[ \t]*=[ \t]*"
            r"(?P<q>[\"']?)(?P<v>[^\n]*?)(?P=q)[ \t]*(?:[ \t]#[^\n]*)?$(?P<v2>)"
        )
        code = re.compile(
            rf"(?i)(?<![\w.-])(?P<key>[\w.-]{{0,40}}{_SECRET_NAME}[\w.-]{{0,40}})[\"'\]]?[ \t]*(?:=|:|:=|=>)[ \t]*"
            r"(?:(?P<q>[\"'`])(?P<v>[^\"'`\n]{4,300})(?P=q)|(?P<v2>[^\s\"'`,;{}()\[\]&]{4,}))"
        )
        super().__init__(
            "AssignmentRecognizer",
            [],
            re.compile(rf"(?i){_SECRET_NAME}[\w.-]{{0,40}}[\"'\]]?[ \t]*(?:=|:)"),
            hints=(
                "secret",
                "token",
                "passw",
                "pwd",
                "passphrase",
                "api",
                "access",
                "private",
                "auth",
                "credential",
                "signing",
                "encryption",
            ),
        )
        # A secret name starts a run of letters ("DB_PASSWORD", "apiKey", "x-api-key") or, inside
        # one, follows other letters ("dbpassword", "stripesecret"): no keys then, the trigger decides.
        self.patterns = (env, code)
        self.entities = ("PASSWORD", "SECRET")
        self.rules = (Rule("PASSWORD", env), Rule("SECRET", code))  # for the entity filter only

    def find(self, text: str, keys: set[str] | None = None) -> list:
        out = []
        wanted = {r.entity for r in self.rules}
        for pattern in self.patterns:
            for m in pattern.finditer(text):
                group = "v" if m.group("v") is not None else "v2"
                key, value = m.group("key"), m.group(group)
                if _NOT_SECRET_NAME.search(key) or not _assignment_value_ok(value, bool(m.group("q"))):
                    continue
                entity = "PASSWORD" if _password_name(key) else "SECRET"
                if entity in wanted:
                    out.append(result(entity, m.start(group), m.end(group), SCORE))
        return out


def _assignments() -> RegexRecognizer:
    return _AssignmentRecognizer()


# Words after a password word that are not the password ("the password is required").
_NOT_A_PASSWORD = frozenset(
    "is was are were be been being the a an to for of and or not no required incorrect wrong invalid too correct "
    "set reset changed change expired expires manager managers field fields policy rule rules hash hashing hashed "
    "strength strong weak secure long short length must should will can cannot can't won't keeps keep still now "
    "same different empty missing protected saved stored encrypted recovery protection prompt screen entry input "
    "box generator requirement requirements complexity expiry expiration please here there it this that my your "
    "his her their our on in at by with from as if when but so because you i me we they he she what which how why "
    "who where again also only just very really has have had does do did rejected accepted mandatory optional "
    "unknown forgotten lost str int bytes string none bool null true false hint reminder request requests updated "
    "update form page dialog login sign-in typed entered shared sharing leak leaked safe unsafe ok fine "
    "ist war sind wird nicht falsch vergessen geändert est était n'est pas es era no è era non è is niet".split()
)
# Every word or phrase _PASSWORD_WORDS matches, for the recognizer's keys and hints (a test checks
# them against the regex).
PASSWORD_PHRASES = (
    "login",
    "logins",
    "log-in",
    "creds",
    "account",
    "password",
    "passwords",
    "passwd",
    "passwort",
    "kennwort",
    "pwd",
    "pw",
    "passcode",
    "pass code",
    "passphrase",
    "pass phrase",
    "pin",
    "pin code",
    "pin number",
    "pin-code",
    "wifi key",
    "wi-fi key",
    "wifi code",
    "wi-fi code",
    "wifi password",
    "code wifi",
    "code wi-fi",
    "clé wifi",
    "clé wi-fi",
    "mot de passe",
    "mdp",
    "code secret",
    "contraseña",
    "contrasena",
    "clave",
    "wachtwoord",
    "parola d'ordine",
    "codice pin",
    "credentials",
    "login credentials",
    "pass",
)
_PASSWORD_KEYS = word_keys(PASSWORD_PHRASES)
_PASSWORD_WORDS = (
    r"passwords?|passwd|passwort|kennwort|pwd|pw|passcode|pass ?code|passphrase|pass ?phrase|pin(?:[ -]?(?:code|number))?|"
    r"wi-?fi (?:key|code|password)|code wi-?fi|clé wi-?fi|mot de passe|mdp|code secret|contraseña|contrasena|clave|"
    r"wachtwoord|parola d'ordine|codice pin|credentials|login credentials"
)


class _ProsePasswordRecognizer(RegexRecognizer):
    """A password written in prose. Two shapes: a password word, maybe "for the router", then ':',
    '=', "is", "ist", "lautet", "est", "es", "è", "to", then the value, which must not be one of the
    words that follow "password is" in prose ("required", "wrong"); or a password word and right
    after it a value with a digit or a symbol ("password Zq8#wLp3"; "password manager" is none).
    "pass" (bus pass, boarding pass) counts only before ':' or '='. And a login written as user and
    password: "login is ops@example.com / Summer!2022" (letters and digits after the '/' or ':')."""

    def __init__(self):
        connect = r"(?:[ \t]+(?:for|of|to|für|fuer|pour|de|para|per|del|van|voor)[ \t]+[^\n:=.!?]{1,30}?)??"
        sep = r"(?:[ \t]*[:=][ \t]*|[ \t]+(?:is|was|are|ist|lautet|est|c'est|c’est|es|è|e|sind|to)[ \t]*:?[ \t]*)"
        value = r"(?P<q>[\"'`“‘]?)(?P<v>[^\s\"'`“”‘’]{3,64})"
        explicit = re.compile(rf"(?<![^\W_])(?i:{_PASSWORD_WORDS})(?![^\W_]){connect}{sep}{value}")
        pass_colon = re.compile(rf"(?<![^\W_])(?i:pass)(?![^\W_])[ \t]*[:=][ \t]*{value}")
        bare = re.compile(
            rf"(?<![^\W_])(?i:{_PASSWORD_WORDS})(?![^\W_])[ \t]+(?P<q>)(?P<v>(?=[^\s]*[\d\W_])[^\s\"'`“”‘’]{{3,64}})"
        )
        super().__init__(
            "ProsePasswordRecognizer",
            [Rule("PASSWORD", explicit, SCORE)],
            None,
            keys=_PASSWORD_KEYS,
            hints=tuple(
                sorted(
                    {
                        p.split()[-1]
                        if p.startswith(("mot ", "code ", "parola ", "codice ", "login "))
                        else p.split()[0]
                        for p in PASSWORD_PHRASES
                    }
                )
            ),
        )
        # "login is ops@example.com / Summer!2022", "creds: admin:Adm1n!": a user, then the password
        pair = re.compile(
            r"(?<![^\W_])(?i:login|log-in|logins|credentials|creds|account)(?![^\W_])"
            r"(?:[ \t]+(?i:is|are|was|details|info))?[ \t]*[:=]?[ \t]+"
            r"[^\s/:]{2,64}[ \t]*(?:/|:)[ \t]*(?P<q>)(?P<v>(?=[^\s]*[\d\W_])[^\s\"'`]{4,64})"
        )
        self.patterns = (explicit, pass_colon, bare, pair)

    def find(self, text: str, keys: set[str] | None = None) -> list:
        out = []
        for pattern in self.patterns:
            for m in pattern.finditer(text):
                start, end = m.span("v")
                value = m.group("v")
                if not m.group("q"):
                    stripped = value.rstrip(".,;:)]}?")
                    end -= len(value) - len(stripped)
                    value = stripped
                else:
                    value = value.rstrip("\"'`”’")
                    end = start + len(value)
                if len(value) < 3 or is_placeholder(value) or value.lower() in _NOT_A_PASSWORD:
                    continue
                if "(" in value or "[" in value or value.startswith(("os.", "process.", "self.", "this.")):
                    continue
                if pattern in self.patterns[2:] and not re.search(r"[\d\W_]", value):
                    continue
                if pattern is self.patterns[3] and not (re.search(r"\d", value) and re.search(r"[^\W\d_]", value)):
                    continue  # a password has letters and digits; "login: user / help" has not
                out.append(result("PASSWORD", start, end, SCORE))
        return out


def _prose_passwords() -> RegexRecognizer:
    return _ProsePasswordRecognizer()


def _near_keyword() -> RegexRecognizer:
    """A long random-looking token right after a word that says secret ("with secret <40 chars>",
    "api key lin_...", "Bearer <token>"): the high-entropy plugins' job, limited to where a
    keyword says so. 16+ token characters, a digit and a letter, entropy of 3.5 bits a character."""
    words = r"secret|secret key|api[ _-]?key|apikey|access key|token|access token|auth token|bearer|key|credential|credentials"
    pattern = re.compile(
        rf"(?<![^\W_])(?i:{words})(?![^\W_])[ \t:=\"'`]{{1,4}}(?P<v>[A-Za-z0-9_\-+/.~]{{15,1024}}[A-Za-z0-9_\-+/~]={{0,3}})"
    )

    def random_looking(value: str) -> bool:
        v = value.rstrip(".")
        return (
            any(c.isdigit() for c in v)
            and any(c.isalpha() for c in v)
            and shannon_entropy(v) >= 3.5
            and not is_placeholder(v)
            and "://" not in v
            and not re.fullmatch(r"[\w-]+\.(?:[a-z]{2,4})", v)
        )

    rule = Rule("SECRET", pattern, SCORE, group="v", validate=random_looking)
    return RegexRecognizer(
        "KeywordTokenRecognizer",
        [rule],
        re.compile(r"(?i)secret|key|token|bearer|credential"),
        keys=frozenset({"secr", "api", "apik", "acce", "auth", "toke", "bear", "key", "cred"}),
    )
