"""The demo's simulated production app and its users (pure: no broker, no model).

The app answers each request with the model the A/B assignment gives the user; the users know the
right answer to their own question, and act on whether the answer they got is right: they accept or
copy right answers, correct some wrong ones, and regenerate or abandon others. Nothing here knows
which model is better: users react to answers, nothing else.

Users are not oracles. Each has traits of their own (`UserTraits`, drawn once per user around the
spec's means): how often they act at all, how often they take a wrong answer for a right one, how
often their correction is itself wrong (another answer) or partial (cut short), and how often they
leave a thumb. So the labels the flywheel learns from carry the noise real products have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from trainer import synthetic
from trainer.evaluate import SCORERS

# what people type before a question: more distinct prompts, none of them a golden prompt
OPENERS = ("", "", "", "Quick question: ", "Hi! ", "Please help: ", "Hello, ", "I need to know: ", "Can you tell me? ")
ABUSE = ("You useless idiot, answer properly this time, moron.", "Shut up and answer, you worthless stupid machine.")
PERSONAL = (
    "My email is {n}.{m}@example.com by the way.",
    "Call me back on (415) 555-{d:04d}.",
    "My card is 4111 1111 1111 1111, does that matter?",
    "I live at {d} Elm Street, Springfield.",
)


@dataclass(frozen=True)
class DemoSpec:
    weeks: int = 8
    requests_per_day: int = 500
    seed: int = 0
    # task types with a long tail; `currency` is not in the cold start: only traffic teaches it
    task_mix: dict = field(default_factory=lambda: {"qa": 0.36, "sql": 0.30, "support": 0.22, "currency": 0.12})
    cold_start_tasks: tuple = ("qa", "sql", "support")
    cold_start_examples: int = (
        1200  # about 30 % on the golden set: qa learnt, sql and support barely, currency not at all
    )
    pii_rate: float = 0.03  # requests whose prompt carries personal data (the gate redacts it)
    toxic_rate: float = 0.01  # requests whose prompt is abusive (the gate rejects it)
    users: int = 400
    reviews_per_day: int = 20  # simulated reviewer verdicts a day, from the review queue
    traffic_hours: int = 22  # of each day; the rest lets every request settle before the next day
    # users who behave like users: the means of per-user traits (each user's own value varies around them)
    idle_rate: float = 0.25  # answers a user does nothing with, right or wrong
    wrong_accept_rate: float = 0.15  # wrong answers a user takes for right ones (accepts or copies them)
    bad_correction_rate: float = 0.20  # corrections that are themselves wrong (half) or cut short (half)
    feedback_rate: float = 0.10  # answers a user gives a thumb up or down

    def check(self) -> "DemoSpec":
        if not 1 <= self.weeks <= 52:
            raise ValueError(f"weeks must be within 1..52, got {self.weeks}")
        if self.requests_per_day < 10:
            raise ValueError(f"requests per day must be >= 10, got {self.requests_per_day}")
        for name in ("idle_rate", "wrong_accept_rate", "bad_correction_rate", "feedback_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        unknown = set(self.task_mix) - set(synthetic.TASKS)
        if unknown:
            raise ValueError(f"unknown task types {sorted(unknown)}; known: {', '.join(sorted(synthetic.TASKS))}")
        return self


@dataclass
class Request:
    request_id: str
    user_id: str
    session_id: str
    event_time: int
    task_type: str
    prompt: str
    expected: str
    toxic: bool = False
    personal: bool = False


def requests_for_day(spec: DemoSpec, day: int, day_start_ms: int, rng: random.Random) -> list[Request]:
    """One day's questions, spread over the day's traffic hours, in event-time order."""
    n = spec.requests_per_day
    span = spec.traffic_hours * 3_600_000
    times = sorted(day_start_ms + rng.randrange(span) for _ in range(n))
    tasks, weights = list(spec.task_mix), list(spec.task_mix.values())
    out = []
    for i, t in enumerate(times):
        task = synthetic.task(rng.choices(tasks, weights)[0])
        subject = rng.choice(list(task.subjects()))
        prompt = rng.choice(OPENERS) + rng.choice(task.train_templates).format(x=subject)
        user = rng.randrange(spec.users)
        r = Request(
            f"demo-{spec.seed}-{day}-{i}",
            f"user-{user:04d}",
            f"s-{day}-{user}",
            t,
            task.name,
            prompt,
            task.answer(subject),
        )
        if rng.random() < spec.toxic_rate:
            r.prompt, r.toxic = f"{rng.choice(ABUSE)} {r.prompt}", True
        elif rng.random() < spec.pii_rate:
            r.prompt = f"{r.prompt} " + rng.choice(PERSONAL).format(
                n=rng.choice(("ann", "bo", "cy")), m=rng.choice(("lee", "kim")), d=rng.randrange(10, 9999)
            )
            r.personal = True
        out.append(r)
    return out


def is_right(task_type: str, answer: str, expected: str) -> bool:
    """What the user knows: whether the answer they got is the right one (the task's own scorer)."""
    return SCORERS[synthetic.task(task_type).scorer](answer, expected) == 1.0


@dataclass(frozen=True)
class UserTraits:
    """One simulated user's habits (probabilities); a perfect oracle is (0, 0, 0, x)."""

    idle: float = 0.0  # does nothing with an answer
    gullible: float = 0.0  # takes a wrong answer for a right one
    sloppy: float = 0.0  # a correction of theirs is wrong or cut short
    feedback: float = 0.1  # leaves a thumb

    @classmethod
    def draw(cls, spec: DemoSpec, user_id: str) -> "UserTraits":
        """The same user has the same traits in every run of the same seed: Beta around each mean."""
        rng = random.Random(f"{spec.seed}:traits:{user_id}")

        def around(mean: float, concentration: float = 6.0) -> float:
            if mean <= 0:
                return 0.0
            return rng.betavariate(mean * concentration, (1 - mean) * concentration)

        return cls(
            around(spec.idle_rate),
            around(spec.wrong_accept_rate),
            around(spec.bad_correction_rate),
            around(spec.feedback_rate),
        )


ORACLE = UserTraits()


def reaction(rng: random.Random, right: bool, user: UserTraits = ORACLE) -> list[tuple[int, str]]:
    """(delay in ms after the response, action) for one request; empty: the user did nothing."""

    def after(lo: int, hi: int) -> int:
        return rng.randint(lo, hi) * 1000

    if rng.random() < user.idle:
        return []
    thumb = rng.random() < user.feedback
    if right or rng.random() < user.gullible:  # a wrong answer taken for right is accepted like one
        kind = rng.choices(("accepted", "copied", "none"), (0.62, 0.28, 0.10))[0]
        acts = [] if kind == "none" else [(after(5, 300), kind)]
        if thumb:
            acts.append((after(310, 600), "thumbs_up"))
        return acts
    kind = rng.choices(("corrected", "regenerated", "abandoned", "none"), (0.40, 0.25, 0.20, 0.15))[0]
    acts = [] if kind == "none" else [(after(20, 600), kind)]
    if thumb:
        acts.append((after(610, 900), "thumbs_down"))
    return acts


def correction(rng: random.Random, q: Request, user: UserTraits = ORACLE) -> str:
    """What the user types as the right answer: usually it, sometimes another answer of the same
    task (a wrong correction) or the right one cut short (a partial one)."""
    if rng.random() >= user.sloppy:
        return q.expected
    if rng.random() < 0.5:
        task = synthetic.task(q.task_type)
        others = [a for a in (task.answer(s) for s in task.subjects()) if a != q.expected]
        return rng.choice(others) if others else q.expected
    words = q.expected.split()
    return " ".join(words[: max(1, len(words) // 2)]) if len(words) > 1 else q.expected[: max(1, len(q.expected) // 2)]
