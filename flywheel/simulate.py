"""Realistic production traffic for the flywheel, deterministic by seed.

Generation is pure (`generate` returns events in send order plus the user_action the join must
produce for every request), sending is separate (`send`), so tests can check the expectations
without a broker and the end-to-end runs can compare the join's output with them.

What the traffic holds, on purpose:
  * sessions of several requests by a pool of users, task types with a long tail;
  * each request's primary user behaviour drawn from `action_mix` ("none" = no action at all);
  * some requests get a second, weaker primary action too (precedence), some get thumbs/ratings;
  * a regeneration is followed, in the same session, by a request with the same prompt;
  * actions sent before their interaction, actions sent twice (identical bytes), and requests whose
    only action comes after the settle window (the join must call those abandoned).

Expectations come from the generator's intent with the rules of `streams.join.labels` (precedence
corrected > copied > accepted > regenerated > abandoned; feedback alone gives its last kind; nothing
inside the window gives "abandoned"), not from calling that module, so the two check each other.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

from flywheel.settings import SettingsError

log = logging.getLogger("flywheel.simulate")

INTERACTION = "interaction"
ACTION = "action"

PRIMARY_PRECEDENCE = ("corrected", "copied", "accepted", "regenerated", "abandoned")
FEEDBACK = ("thumbs_up", "thumbs_down", "rated")
BEHAVIOURS = ("accepted", "copied", "corrected", "regenerated", "abandoned", "none")

DEFAULT_MIX = {
    "accepted": 0.30,
    "copied": 0.15,
    "corrected": 0.10,
    "regenerated": 0.12,
    "abandoned": 0.08,
    "none": 0.25,
}
# a few common task types, several rare ones
DEFAULT_TASKS = {
    "qa": 40.0,
    "math": 25.0,
    "summarize": 12.0,
    "code": 8.0,
    "translation": 4.0,
    "sql": 3.0,
    "email": 2.5,
    "regex": 1.5,
    "unit_conversion": 1.5,
    "poetry": 1.0,
    "legal": 0.8,
    "medical": 0.7,
}
# a weaker primary action that may come with the drawn one, to exercise precedence
_SECONDARY = {"corrected": ("copied", "accepted"), "copied": ("accepted",), "accepted": ("regenerated",)}
# (median, spread) of the delay in seconds from response to action, lognormal
_DELAY_S = {
    "accepted": (20, 1.0),
    "copied": (15, 1.0),
    "corrected": (90, 0.8),
    "regenerated": (8, 0.7),
    "abandoned": (30, 0.8),
    "thumbs_up": (40, 1.2),
    "thumbs_down": (30, 1.2),
    "rated": (60, 1.2),
}
_POSITIVE = {"accepted", "copied", "corrected"}


@dataclass
class TrafficSpec:
    """What traffic to make. Rates are shares of their own population (see each comment)."""

    requests: int
    seed: int = 0
    # None: so that the traffic ends just behind the wall clock (ids then differ between runs)
    start_ms: int | None = None
    event_rate: float = 5.0  # requests per second of event time
    action_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))  # of on-time requests
    feedback_rate: float = 0.15  # share of on-time requests that also get thumbs up/down or a rating
    duplicate_rate: float = 0.05  # share of actions sent twice, identical bytes
    # share of requests with an on-time action whose first action is sent before the interaction
    out_of_order_rate: float = 0.05
    late_rate: float = 0.03  # share of all requests whose only action comes after the settle window
    # share of requests whose prompt or response carries personal data (the gate must redact it)
    pii_rate: float = 0.03
    toxic_rate: float = 0.01  # share of requests whose response is abusive (the gate must reject it)
    # share of accepted/copied/corrected requests that also get a weaker primary action
    multi_action_rate: float = 0.10
    task_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASKS))
    mean_session_requests: float = 4.0  # a request starts a new session with probability 1/this
    users: int | None = None  # size of the user pool; None: about one user per 8 requests
    model_version: str = "sim-model-v1"
    variants: dict[str, float] = field(default_factory=lambda: {"control": 0.8, "canary": 0.2})

    def validate(self) -> "TrafficSpec":
        if self.requests < 0:
            raise ValueError(f"requests must be >= 0, got {self.requests}")
        if self.event_rate <= 0:
            raise ValueError(f"event_rate must be > 0, got {self.event_rate}")
        unknown = set(self.action_mix) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"action_mix has unknown behaviours {sorted(unknown)}; known: {', '.join(BEHAVIOURS)}")
        if not any(v > 0 for v in self.action_mix.values()):
            raise ValueError("action_mix needs at least one positive weight")
        for name in (
            "feedback_rate",
            "duplicate_rate",
            "out_of_order_rate",
            "late_rate",
            "multi_action_rate",
            "pii_rate",
            "toxic_rate",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {v}")
        if not self.task_mix or not self.variants:
            raise ValueError("task_mix and variants must not be empty")
        return self


@dataclass(frozen=True)
class SimEvent:
    kind: str  # INTERACTION or ACTION
    record: dict[str, Any]  # valid for the codec; the SDK's log_* take it as keyword arguments
    duplicate: bool = False  # the resend of an action already in the list

    @property
    def request_id(self) -> str:
        return self.record["request_id"]

    @property
    def event_time(self) -> int:
        return self.record["event_time"]


@dataclass
class SimRequest:
    """The generator's intent for one request: what the user did, and how it is sent."""

    request_id: str
    session_id: str
    user_id: str
    event_time: int
    task_type: str
    behaviour: str  # one of BEHAVIOURS, or "late"
    actions: list[str]  # every distinct action, in event-time order (late ones too)
    expected: str
    out_of_order: bool = False
    late: bool = False
    duplicates: int = 0
    successor_of: str | None = None  # request id of the regenerated request this one repeats


@dataclass
class Traffic:
    events: list[SimEvent]
    expected: dict[str, str]
    requests: list[SimRequest] = field(default_factory=list)  # intent; optional so slices of events stay Traffic
    settle_window_ms: int = 0
    personal: dict[str, list[str]] = field(default_factory=dict)  # request id -> personal data put in its texts
    toxic: set[str] = field(default_factory=set)  # request ids whose response is abusive
    movable: bool = False  # the simulator chose the start (no start_ms): `send` may move it after what the log holds

    @property
    def first_event_time(self) -> int:
        return min((e.event_time for e in self.events), default=0)

    @property
    def last_event_time(self) -> int:
        return max((e.event_time for e in self.events), default=0)

    def truth(self) -> dict[str, tuple[str, list[str]]]:
        """The ground truth the join must reproduce, request by request: (user_action, the actions
        inside the settle window in event-time order). A late request's only action is outside
        its window: ("abandoned", [])."""
        return {r.request_id: (r.expected, [] if r.late else list(r.actions)) for r in self.requests}

    def intended_deadletters(self) -> dict[str, set[str]]:
        """The dead letters the traffic makes on purpose: reason -> request ids. Every late request's
        action is a `late_action` (its resend may be one more letter, or a duplicate the join drops,
        depending on whether it settled in between). Nothing else: no orphan, since every action's
        interaction is sent (an out-of-order one just after it)."""
        return {"late_action": {r.request_id for r in self.requests if r.late}}

    def shifted(self, delta_ms: int) -> "Traffic":
        """The same traffic `delta_ms` later in event time (ids, texts and intent unchanged)."""

        def move(e: SimEvent) -> SimEvent:
            return SimEvent(e.kind, {**e.record, "event_time": e.record["event_time"] + delta_ms}, e.duplicate)

        return replace(
            self,
            events=[move(e) for e in self.events],
            requests=[replace(r, event_time=r.event_time + delta_ms) for r in self.requests],
        )

    def counts(self) -> dict[str, int]:
        return {
            "requests": len(self.requests),
            "interactions": sum(e.kind == INTERACTION for e in self.events),
            "actions": sum(e.kind == ACTION for e in self.events),
            "duplicates": sum(e.duplicate for e in self.events),
            "out_of_order": sum(r.out_of_order for r in self.requests),
            "late": sum(r.late for r in self.requests),
        }


# -- texts -----------------------------------------------------------------------------------------

_QA = [
    (
        "What is the capital of Australia?",
        "The capital of Australia is Canberra.",
        "The capital of Australia is Sydney.",
        "Canberra was chosen as a compromise between Sydney and Melbourne and became the seat of government in 1927.",
    ),
    (
        "At what temperature does water boil at sea level?",
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 90 degrees Celsius at sea level.",
        "At higher altitudes the air pressure is lower, so water boils at a lower temperature.",
    ),
    (
        "Who wrote Pride and Prejudice?",
        "Pride and Prejudice was written by Jane Austen.",
        "Pride and Prejudice was written by Charlotte Bronte.",
        "It was published in 1813 and follows Elizabeth Bennet and Mr Darcy.",
    ),
    (
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun.",
        "Venus is the planet closest to the Sun.",
        "A year on Mercury lasts about 88 Earth days.",
    ),
    (
        "How many bones are in the adult human body?",
        "An adult human body has 206 bones.",
        "An adult human body has 212 bones.",
        "Babies are born with more, around 270, and several fuse as they grow.",
    ),
    (
        "What is the chemical symbol for gold?",
        "The chemical symbol for gold is Au.",
        "The chemical symbol for gold is Ag.",
        "Au comes from the Latin word aurum; Ag is silver.",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest ocean on Earth.",
        "The Atlantic Ocean is the largest ocean on Earth.",
        "It covers roughly a third of the planet's surface.",
    ),
    (
        "In what year did the first person walk on the Moon?",
        "The first Moon walk was in 1969, during Apollo 11.",
        "The first Moon walk was in 1971, during Apollo 14.",
        "Neil Armstrong stepped out first, followed by Buzz Aldrin.",
    ),
    (
        "What gas do plants absorb from the air for photosynthesis?",
        "Plants absorb carbon dioxide for photosynthesis.",
        "Plants absorb oxygen for photosynthesis.",
        "They use light energy to turn carbon dioxide and water into sugars, releasing oxygen.",
    ),
    (
        "How many continents are there?",
        "By the most common convention there are seven continents.",
        "There are five continents.",
        "Some conventions merge Europe and Asia, or North and South America, which gives six or fewer.",
    ),
    (
        "What is the speed of light in a vacuum?",
        "Light travels at about 299,792 kilometres per second in a vacuum.",
        "Light travels at about 150,000 kilometres per second in a vacuum.",
        "That is exact by definition of the metre: 299,792,458 metres per second.",
    ),
    (
        "Who painted the Mona Lisa?",
        "The Mona Lisa was painted by Leonardo da Vinci.",
        "The Mona Lisa was painted by Michelangelo.",
        "It hangs in the Louvre in Paris.",
    ),
]

_SIMPLE = {
    "summarize": [
        (
            "Summarize in one sentence: the city council voted to extend the bike lane network by twenty kilometres next year, funded by parking fees.",
            "The council will add twenty kilometres of bike lanes next year, paid for with parking fees.",
        ),
        (
            "Summarize this: our quarterly revenue grew eight percent while costs stayed flat, mostly thanks to the new subscription plan.",
            "Revenue rose eight percent on flat costs, driven mainly by the new subscription plan.",
        ),
        (
            "Give me a one-line summary of the meeting: we agreed to ship the beta on Friday and postpone the redesign.",
            "The team will ship the beta on Friday and postpone the redesign.",
        ),
    ],
    "code": [
        (
            "Write a Python function that reverses a string.",
            "def reverse(s):\n    return s[::-1]\nSlicing with a step of minus one walks the string backwards.",
        ),
        (
            "How do I read a file line by line in Python?",
            "with open(path) as f:\n    for line in f:\n        print(line.rstrip())\nThe file object is an iterator over its lines.",
        ),
        (
            "How do I remove duplicates from a list but keep the order?",
            "list(dict.fromkeys(items)) keeps the first occurrence of each item, in order.",
        ),
    ],
    "translation": [
        ("Translate to French: Good morning, how are you?", "Bonjour, comment allez-vous ?"),
        ("Translate to Spanish: Where is the train station?", "¿Dónde está la estación de tren?"),
        ("Translate to German: Thank you for your help.", "Vielen Dank für Ihre Hilfe."),
    ],
    "sql": [
        (
            "Write a SQL query that counts orders per customer.",
            "SELECT customer_id, COUNT(*) AS orders FROM orders GROUP BY customer_id;",
        ),
        ("SQL to find the ten most recent signups?", "SELECT * FROM users ORDER BY created_at DESC LIMIT 10;"),
    ],
    "email": [
        (
            "Write a short email asking to move our meeting to Thursday.",
            "Hi Sam, would it be possible to move our meeting to Thursday at the same time? Something came up on Wednesday. Thanks, Alex",
        ),
        (
            "Draft a polite reminder about an unpaid invoice.",
            "Hello, this is a friendly reminder that invoice 1042 is now two weeks past due. Please let us know if anything is unclear. Best regards",
        ),
    ],
    "regex": [
        (
            "Regex to match a five digit US zip code?",
            "Use ^\\d{5}$ to match exactly five digits, or ^\\d{5}(-\\d{4})?$ to allow the ZIP+4 form.",
        ),
        (
            "Regex for an ISO date like 2024-05-17?",
            "^\\d{4}-\\d{2}-\\d{2}$ checks the shape; it does not check that the month or day exist.",
        ),
    ],
    "unit_conversion": [
        (
            "How many kilometres is 10 miles?",
            "10 miles is about 16.09 kilometres, since one mile is 1.609 kilometres.",
        ),
        (
            "Convert 350 degrees Fahrenheit to Celsius.",
            "350 degrees Fahrenheit is about 177 degrees Celsius: subtract 32, then multiply by five ninths.",
        ),
    ],
    "poetry": [
        (
            "Write a haiku about autumn rain.",
            "Cold rain on red leaves, / the gutter hums a low song, / summer washes out.",
        ),
        ("A two-line poem about coffee?", "Dark cup before dawn, / the day agrees to begin."),
    ],
    "legal": [
        (
            "What is a non-disclosure agreement?",
            "A non-disclosure agreement is a contract in which parties agree not to share specified confidential information. This is general information, not legal advice.",
        ),
    ],
    "medical": [
        (
            "What is a normal resting heart rate for adults?",
            "For most adults a resting heart rate between 60 and 100 beats per minute is considered normal. This is general information, not medical advice.",
        ),
    ],
}

_FILLER = [
    "Let me know if you would like a more detailed explanation.",
    "I can also give a few more examples if that would help.",
    "The short answer above covers the most common case.",
    "If you share more context, I can tailor the answer to your situation.",
    "A quick way to double-check this is to look it up in a trusted reference.",
    "Feel free to ask a follow-up question about any part of this.",
    "There are a few edge cases, but they rarely matter in practice.",
    "I have kept the explanation brief on purpose.",
    "Many people find it easier to remember with a small example.",
    "This answer reflects the most widely accepted understanding.",
]

_FILLER_WORDS = {s: len(s.split()) for s in _FILLER}

_REFINE = [
    "I also added the missing detail.",
    "Shortened and made more precise.",
    "Fixed the wording for our style guide.",
    "Corrected the key fact.",
    "Made it friendlier.",
]


def _words(text: str) -> int:
    return len(text.split())


def _pad(rng: random.Random, core: str, lo: int = 20, hi: int = 80) -> str:
    """Grow a core answer with filler sentences to a plausible length within lo..hi words."""
    n = _words(core)
    target = rng.randint(max(lo, min(n, hi)), hi)
    parts = [core]
    for sentence in rng.sample(_FILLER, len(_FILLER)):
        m = _FILLER_WORDS[sentence]
        if (n >= target or n + m > hi) and n >= lo:
            break
        parts.append(sentence)
        n += m
    return " ".join(parts)


@dataclass(frozen=True)
class _Item:
    """A prompt and what is needed to answer it again (a regeneration repeats the prompt)."""

    task: str
    prompt: str
    params: tuple


def _new_item(rng: random.Random, task: str) -> _Item:
    if task == "math":
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        op = rng.choice("+-*")
        word = {"+": "plus", "-": "minus", "*": "times"}[op]
        prompt = rng.choice([f"What is {a} {op} {b}?", f"How much is {a} {word} {b}?", f"Compute {a} {op} {b}."])
        return _Item(task, prompt, (a, op, b))
    if task == "qa":
        i = rng.randrange(len(_QA))
        return _Item(task, _QA[i][0], (i,))
    pairs = _SIMPLE.get(task)
    if pairs is None:  # a task type of the caller's own: generic text
        return _Item(task, f"Help me with this {task.replace('_', ' ')} request, number {rng.randint(1, 999)}.", (-1,))
    i = rng.randrange(len(pairs))
    return _Item(task, pairs[i][0], (i,))


def _answer(rng: random.Random, item: _Item, wrong: bool) -> tuple[str, str]:
    """(response of 20..80 words, what a user would correct it to)."""
    if item.task == "math":
        a, op, b = item.params
        right = {"+": a + b, "-": a - b, "*": a * b}[op]
        shown = right + rng.choice([-10, -2, -1, 1, 2, 10]) if wrong else right
        core = (
            f"{a} {op} {b} = {shown}. Working it step by step: start from {a}, apply {op} {b}, "
            f"and the result is {shown}."
        )
        return _pad(rng, core), f"{a} {op} {b} = {right}."
    if item.task == "qa":
        _, good, bad, extra = _QA[item.params[0]]
        core = f"{bad if wrong else good} {extra}"
        return _pad(rng, core), f"{good} {extra}"
    pairs = _SIMPLE.get(item.task)
    core = (
        pairs[item.params[0]][1] if pairs else f"Here is a suggestion for your {item.task.replace('_', ' ')} request."
    )
    return _pad(rng, core), f"{core} {rng.choice(_REFINE)}"


# -- generation ------------------------------------------------------------------------------------


@dataclass
class _Session:
    session_id: str
    user_id: str
    ready_at: int
    remaining: int
    pending: tuple[_Item, str] | None = None  # (item, request id) of a regeneration awaiting its repeat


def _id(prefix: str, seed: int, start_ms: int, n: int) -> str:
    h = hashlib.blake2b(f"{seed}:{start_ms}:{prefix}:{n}".encode(), digest_size=8).hexdigest()
    return f"{prefix}-{h}"


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = [k for k, w in weights.items() if w > 0]
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _delay_ms(rng: random.Random, kind: str, cap_ms: int) -> int:
    median, spread = _DELAY_S[kind]
    d = int(rng.lognormvariate(math.log(median), spread) * 1000)
    return max(1, min(d, cap_ms))


def past_start(spec: TrafficSpec, settle_window_ms: int, now_ms: int | None = None) -> int:
    """A start early enough that the whole traffic, its late actions and the closing tick lie
    behind the wall clock: the join dead-letters event time ahead of it (`future_event`)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    n = max(spec.requests, 1)
    span_ms = (n + 6 * math.sqrt(n)) / spec.event_rate * 1000  # the sum of n gaps stays below this
    return (now_ms - int(span_ms) - 3 * settle_window_ms - 60_000) // 1000 * 1000


def generate(spec: TrafficSpec, settle_window_ms: int) -> Traffic:
    """Events in send order and the user_action the join must produce for each request id.

    Deterministic: the same spec (seed and start_ms) gives the same events, byte for byte.
    """
    spec.validate()
    if settle_window_ms < 1000:
        raise ValueError(f"settle_window_ms must be >= 1000 for realistic traffic, got {settle_window_ms}")
    rng = random.Random(spec.seed)
    aux = random.Random(
        spec.seed * 7919 + 1
    )  # personal data and abuse: their own stream, so the join's traffic stays put
    personal: dict[str, list[str]] = {}
    toxic: set[str] = set()
    start = spec.start_ms if spec.start_ms is not None else past_start(spec, settle_window_ms)
    cap = int(settle_window_ms * 0.8)  # on-time actions stay well inside the window
    n_users = spec.users or max(1, spec.requests // 8)
    user_cum = list(itertools.accumulate(1.0 / (u + 1) ** 0.8 for u in range(n_users)))  # a few heavy users

    busy: list[tuple[int, int, _Session]] = []  # heap by ready_at: sessions waiting for their user
    ready: list[_Session] = []  # sessions whose user may send the next request
    repeats: list[tuple[int, int, _Session]] = []  # heap by ready_at: sessions owing a regeneration's repeat
    n_sessions = 0
    p_new = 1.0 / max(spec.mean_session_requests, 1.0)
    requests: list[SimRequest] = []
    sendq: list[tuple[int, int, SimEvent]] = []  # (send at, seq, event)
    seq = 0
    t = start

    def queue(at: int, event: SimEvent) -> None:
        nonlocal seq
        sendq.append((at, seq, event))
        seq += 1

    for i in range(spec.requests):
        t += max(1, int(rng.expovariate(spec.event_rate) * 1000))
        # a regeneration is always followed by its repeat: the last request slots are reserved for them
        if repeats and (spec.requests - i <= len(repeats) or repeats[0][0] < t):
            session = heapq.heappop(repeats)[2]
            t = max(t, session.ready_at + 1)
        else:
            while busy and busy[0][0] < t:
                ready.append(heapq.heappop(busy)[2])
            if ready and rng.random() >= p_new:
                k = rng.randrange(len(ready))
                ready[k], ready[-1] = ready[-1], ready[k]
                session = ready.pop()
            else:
                n_sessions += 1
                user = rng.choices(range(n_users), cum_weights=user_cum)[0]
                remaining = (
                    1 + int(rng.expovariate(1.0 / (spec.mean_session_requests - 1)))
                    if spec.mean_session_requests > 1
                    else 1
                )
                session = _Session(_id("sess", spec.seed, start, n_sessions), f"user-{user:04d}", t, remaining)

        request_id = _id("req", spec.seed, start, i)
        successor_of = None
        if session.pending is not None:
            item, successor_of = session.pending
            session.pending = None
        else:
            item = _new_item(rng, _weighted(rng, spec.task_mix))
        # a regeneration needs a later request slot for its repeat
        room_for_repeat = spec.requests - i - 1 > len(repeats)

        late = rng.random() < spec.late_rate
        behaviour = "late" if late else _weighted(rng, spec.action_mix)
        if behaviour == "regenerated" and not room_for_repeat:
            behaviour = "accepted"
        response, correction = _answer(rng, item, wrong=behaviour == "corrected" and rng.random() < 0.7)

        acts: list[tuple[int, str]] = []  # (event time, action kind)
        if late:
            kind = rng.choice(("accepted", "copied", "thumbs_up", "thumbs_down"))
            acts.append((t + settle_window_ms + 1 + rng.randint(0, settle_window_ms // 2), kind))
        else:
            if behaviour != "none":
                acts.append((t + _delay_ms(rng, behaviour, cap), behaviour))
                weaker = _SECONDARY.get(behaviour)
                if weaker and rng.random() < spec.multi_action_rate:
                    kind = rng.choice(weaker)
                    if kind != "regenerated" or room_for_repeat:
                        acts.append((t + _delay_ms(rng, kind, cap), kind))
            if rng.random() < spec.feedback_rate:
                for _ in range(2 if rng.random() < 0.2 else 1):
                    positive = behaviour in _POSITIVE or (behaviour == "none" and rng.random() < 0.5)
                    kind = rng.choices(FEEDBACK, weights=(6, 1, 3) if positive else (1, 6, 3))[0]
                    acts.append((t + _delay_ms(rng, kind, cap), kind))
        acts.sort(key=lambda a: a[0])
        for j in range(1, len(acts)):  # distinct times, so "the last one" is never a tie
            if acts[j][0] <= acts[j - 1][0]:
                acts[j] = (acts[j - 1][0] + 1, acts[j][1])

        prompt = item.prompt
        if aux.random() < spec.pii_rate:
            # a regeneration and its repeat keep one prompt (they pair on it): their data goes in the response
            in_prompt = successor_of is None and all(k != "regenerated" for _, k in acts)
            prompt, response, personal[request_id] = _with_personal_data(aux, prompt, response, in_prompt)
        if aux.random() < spec.toxic_rate:
            response = _abusive(aux)
            toxic.add(request_id)
        expected = _expect(behaviour, [k for _, k in acts])
        out_of_order = bool(acts) and not late and rng.random() < spec.out_of_order_rate
        interaction = {
            "request_id": request_id,
            "session_id": session.session_id,
            "user_id": session.user_id,
            "event_time": t,
            "model_version": spec.model_version,
            "variant": _weighted(rng, spec.variants),
            "task_type": item.task,
            "prompt": prompt,
            "response": response,
            "retrieved_context": _context(rng, item),
            "latency_ms": round(rng.lognormvariate(math.log(900), 0.5), 1),
            "uncertainty": _uncertainty(rng, behaviour),
            "metadata": {"source": "simulate", "seed": str(spec.seed)},
        }
        queue(acts[0][0] + 1 if out_of_order else t, SimEvent(INTERACTION, interaction))
        dups = 0
        for at, kind in acts:
            record = {
                "request_id": request_id,
                "user_id": session.user_id,
                "event_time": at,
                "action": kind,
                "correction": correction if kind == "corrected" else None,
                "rating": float(_rating(rng, behaviour)) if kind == "rated" else None,
                "session_id": session.session_id,
            }
            queue(at, SimEvent(ACTION, record))
            if rng.random() < spec.duplicate_rate:
                dups += 1
                queue(at + rng.randint(0, 5000), SimEvent(ACTION, dict(record), duplicate=True))

        requests.append(
            SimRequest(
                request_id,
                session.session_id,
                session.user_id,
                t,
                item.task,
                behaviour,
                [k for _, k in acts],
                expected,
                out_of_order,
                late,
                dups,
                successor_of,
            )
        )
        regen_at = next((at for at, k in acts if k == "regenerated"), None)
        session.remaining -= 1
        if regen_at is not None:
            session.pending = (item, request_id)
            session.ready_at = regen_at + rng.randint(500, 3000)  # the new answer comes after the click
            heapq.heappush(repeats, (session.ready_at, seq, session))
        elif session.remaining > 0:
            session.ready_at = max([t] + [at for at, _ in acts if at <= t + settle_window_ms]) + rng.randint(
                2000, 60000
            )
            heapq.heappush(busy, (session.ready_at, seq, session))

    sendq.sort(key=lambda x: (x[0], x[1]))
    return Traffic(
        events=[e for _, _, e in sendq],
        expected={r.request_id: r.expected for r in requests},
        requests=requests,
        settle_window_ms=settle_window_ms,
        personal=personal,
        toxic=toxic,
        movable=spec.start_ms is None,
    )


def _expect(behaviour: str, kinds: list[str]) -> str:
    """The join's user_action by the generator's intent; `kinds` are in event-time order."""
    if behaviour == "late":
        return "abandoned"  # its only action is after the window
    primaries = [k for k in kinds if k in PRIMARY_PRECEDENCE]
    if primaries:
        return min(primaries, key=PRIMARY_PRECEDENCE.index)
    feedback = [k for k in kinds if k in FEEDBACK]
    return feedback[-1] if feedback else "abandoned"


def _passage(task: str, index: int) -> str:
    """What a retriever would have found for an item: the facts of its right answer."""
    if task == "qa":
        _, good, _, extra = _QA[index]
        return f"{good} {extra}"
    return _SIMPLE[task][index][1]


def _context(rng: random.Random, item: _Item) -> list[str] | None:
    """The supporting passage and up to two distractors; a wrong answer is then visibly ungrounded."""
    if item.task not in ("qa", "legal", "medical") or rng.random() < 0.4:
        return None
    index = item.params[0]
    passages = [_passage(item.task, index)]
    for _ in range(rng.randint(0, 2)):
        other = rng.randrange(len(_QA))
        if other != index or item.task != "qa":
            passages.append(_passage("qa", other))
    rng.shuffle(passages)
    return passages


# -- personal data and abuse, for the gate -----------------------------------------------------------

_FIRST = ("jane", "omar", "li", "maria", "kofi", "anna", "raj", "sofia")
_LAST = ("doe", "haddad", "wei", "garcia", "mensah", "novak", "patel", "rossi")
_IBANS = ("GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606")


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i : i + 4] for i in range(0, 16, 4))


def _personal_value(rng: random.Random) -> tuple[str, str]:
    """(sentence, the personal value inside it)."""
    kind = rng.randrange(7)
    if kind == 0:
        v = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}{rng.randrange(100)}@example.com"
        return f"You can reach me at {v} if needed.", v
    if kind == 1:
        v = rng.choice(
            [
                f"(415) 555-{rng.randrange(10000):04d}",
                f"+44 20 7946 {rng.randrange(10000):04d}",
                f"+1 212 555 {rng.randrange(10000):04d}",
            ]
        )
        return f"Call me on {v} tomorrow.", v
    if kind == 2:
        v = _luhn_card(rng)
        return f"My card number is {v} if that matters.", v
    if kind == 3:
        v = rng.choice(_IBANS)
        return f"Please send it to IBAN {v} by Friday.", v
    if kind == 4:
        v = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        return f"The server at {v} keeps timing out.", v
    if kind == 5:
        v = f"536-22-{rng.randrange(1000, 10000)}"
        return f"My social security number is {v} by the way.", v
    v = f"{rng.randrange(10, 999)} {rng.choice(('Elm', 'Oak', 'Maple', 'Cedar'))} Street"
    return f"I live at {v} in Springfield.", v


def _with_personal_data(rng: random.Random, prompt: str, response: str, in_prompt: bool) -> tuple[str, str, list[str]]:
    sentence, value = _personal_value(rng)
    if rng.random() < 0.6 and in_prompt:
        return f"{prompt} {sentence}", response, [value]
    return prompt, f"{response} {sentence}", [value]


_ABUSE = [
    "You are a stupid idiot and this is the dumbest question I have ever seen.",
    "Shut up, you worthless moron, nobody cares about your pathetic problem.",
    "What a damn stupid thing to ask, you clueless fool; figure it out yourself.",
]


def _abusive(rng: random.Random) -> str:
    return " ".join(rng.sample(_ABUSE, 2)) + " Seriously, stop wasting everyone's time with garbage like this."


def _uncertainty(rng: random.Random, behaviour: str) -> float | None:
    if rng.random() < 0.1:
        return None
    centre = 0.55 if behaviour in ("regenerated", "abandoned", "corrected") else 0.25
    return round(min(1.0, max(0.0, rng.gauss(centre, 0.15))), 3)


def _rating(rng: random.Random, behaviour: str) -> int:
    return rng.choice((4, 5, 5)) if behaviour in _POSITIVE else rng.choice((1, 2, 3))


# -- sending ---------------------------------------------------------------------------------------


class EventTimeConflict(SettingsError, ValueError):
    """The traffic cannot be placed in event time: after what the topics hold, it would run further
    ahead of the wall clock than the join accepts (`max_event_ahead_ms`)."""


def claimed_event_time(settings, *, last: int = 32, timeout: float = 10.0) -> int | None:
    """The latest event time the source topics already hold: the largest event time or tick among
    the last `last` records of every partition of both sources (None for empty topics). The join's
    clocks stand there: traffic dated before it is late for the join, however fast it comes. Event
    times the join refuses as too far ahead of the wall clock are left out, as the join leaves them."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from schemas.codec import TICK_HEADER, Codec

    codec = Codec()
    bound = getattr(settings, "max_event_ahead_ms", -1)
    now_ms = int(time.time() * 1000)
    c = Consumer(
        {
            "bootstrap.servers": settings.broker_url,
            "group.id": f"flywheel-simulate-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    best: int | None = None
    try:
        kind_of, assign, ends = {}, [], {}
        for topic, kind in ((settings.topics.interactions, INTERACTION), (settings.topics.actions, ACTION)):
            md = c.list_topics(topic, timeout=timeout).topics.get(topic)
            if md is None or md.error is not None:
                continue
            kind_of[topic] = kind
            for p in md.partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
                if hi > lo:
                    assign.append(TopicPartition(topic, p, max(lo, hi - last)))
                    ends[(topic, p)] = hi
        if not assign:
            return None
        c.assign(assign)
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            if m.offset() + 1 >= ends.get((m.topic(), m.partition()), 0):
                ends.pop((m.topic(), m.partition()), None)
            headers = {k.lower(): v for k, v in (m.headers() or [])}
            try:
                tick = headers.get(TICK_HEADER)
                if tick is not None:
                    t = int(tick)
                else:
                    t = int(codec.upgrade(kind_of[m.topic()], m.value() or b"", headers)[0]["event_time"])
            except Exception:  # not an event the join would use
                continue
            ts_type, ts = m.timestamp()
            reference = min(ts, now_ms) if ts_type and ts and ts > 0 else now_ms
            if bound is not None and bound >= 0 and t > reference + bound:
                continue
            best = t if best is None else max(best, t)
    except KafkaException:
        return None
    finally:
        c.close()
    return best


def place(traffic: Traffic, settings, *, tail_ticks: bool = True, claimed: int | None = None) -> Traffic:
    """`traffic` where the simulator may put it: traffic whose start the simulator chose moves to
    just after the event time the topics already hold (an earlier run's, ticks included), so a
    second run is never late for the join; fixed traffic stays. Raises EventTimeConflict when that
    place is further ahead of the wall clock than the join accepts."""
    if not traffic.movable or not traffic.events:
        return traffic
    claimed = claimed_event_time(settings) if claimed is None else claimed
    if claimed is None or traffic.first_event_time > claimed:
        return traffic
    delta = (claimed // 1000 + 1) * 1000 - traffic.first_event_time
    moved = traffic.shifted(delta)
    bound = getattr(settings, "max_event_ahead_ms", -1)
    end = moved.last_event_time + (settings.settle_window_ms + settings.watermark_delay_ms + 1 if tail_ticks else 0)
    ahead = end - int(time.time() * 1000)
    if bound is not None and bound >= 0 and ahead > bound:
        raise EventTimeConflict(
            f"the topics already hold event time up to {claimed} (an earlier run's); this traffic must come after "
            f"it and would then reach {ahead // 60_000} min ahead of the wall clock, past FLYWHEEL_MAX_EVENT_AHEAD_MS "
            f"({bound // 60_000} min): the join would refuse it. Send it to fresh topics (`flywheel up --data-dir` "
            f"a new directory), or start the stack with FLYWHEEL_MAX_EVENT_AHEAD_MS=-1 for synthetic future-dated traffic"
        )
    log.info(
        "traffic moved %d ms later in event time, after what the topics hold",
        delta,
        extra={"event": "simulate_moved", "moved_ms": delta, "claimed_ms": claimed},
    )
    return moved


def send(
    traffic: Traffic,
    producer,
    *,
    rate: float | None = None,
    tail_ticks: bool = True,
    settle_window_ms: int,
    watermark_delay_ms: int | None = None,
    flush_timeout: float = 60.0,
) -> dict[str, int]:
    """Produce the events in order through a FlywheelProducer; returns counts.

    Traffic whose start the simulator chose goes after the event time the topics already hold
    (`place`; `moved_ms` says by how much): event time never goes back between two runs, or the
    second would be late for the join's watermark and its actions dead letters.
    `rate` throttles to that many events per second of wall clock. With `tail_ticks`, a heartbeat
    at last event time + settle window + watermark delay lets every request settle even when no
    more traffic comes. Raises DeliveryError (from flush) when anything was not delivered.
    """
    if watermark_delay_ms is None:
        watermark_delay_ms = producer.settings.watermark_delay_ms
    first = traffic.first_event_time
    traffic = place(traffic, producer.settings, tail_ticks=tail_ticks)
    counts = {
        "interactions": 0,
        "actions": 0,
        "duplicates": 0,
        "ticks": 0,
        "moved_ms": traffic.first_event_time - first,
    }
    began = time.monotonic()
    for n, event in enumerate(traffic.events):
        if rate:
            wait = began + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if event.kind == INTERACTION:
            producer.log_interaction(**event.record)
            counts["interactions"] += 1
        else:
            producer.log_action(**event.record)
            counts["actions"] += 1
        counts["duplicates"] += event.duplicate
    if tail_ticks and traffic.events:
        counts["ticks"] = producer.heartbeat(traffic.last_event_time + settle_window_ms + watermark_delay_ms + 1)
    producer.flush(flush_timeout)
    log.info(
        "sent interactions=%d actions=%d duplicates=%d ticks=%d",
        counts["interactions"],
        counts["actions"],
        counts["duplicates"],
        counts["ticks"],
        extra={"event": "simulate_sent", **counts},
    )
    return counts
