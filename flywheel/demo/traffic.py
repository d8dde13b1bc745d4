"""The demo's simulated production app and its users (pure: no broker, no model).

The app answers each request with the model the A/B assignment gives the user; the users know the
right answer to their own question, and act on whether the answer they got is right: they accept or
copy right answers, correct some wrong ones with the right answer, and regenerate or abandon
others. Nothing here knows which model is better: users react to answers, nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from trainer import synthetic
from trainer.evaluate import SCORERS

# what people type before a question: more distinct prompts, none of them a golden prompt
OPENERS = ("", "", "", "Quick question: ", "Hi! ", "Please help: ", "Hello, ", "I need to know: ", "Can you tell me? ")
ABUSE = ("You useless idiot, answer properly this time, moron.", "Shut up and answer, you worthless stupid machine.")
PERSONAL = ("My email is {n}.{m}@example.com by the way.", "Call me back on (415) 555-{d:04d}.",
            "My card is 4111 1111 1111 1111, does that matter?", "I live at {d} Elm Street, Springfield.")


@dataclass(frozen=True)
class DemoSpec:
    weeks: int = 8
    requests_per_day: int = 500
    seed: int = 0
    # task types with a long tail; `currency` is not in the cold start: only traffic teaches it
    task_mix: dict = field(default_factory=lambda: {"qa": 0.36, "sql": 0.30, "support": 0.22, "currency": 0.12})
    cold_start_tasks: tuple = ("qa", "sql", "support")
    cold_start_examples: int = 1200  # about 30 % on the golden set: qa learnt, sql and support barely, currency not at all
    pii_rate: float = 0.03  # requests whose prompt carries personal data (the gate redacts it)
    toxic_rate: float = 0.01  # requests whose prompt is abusive (the gate rejects it)
    users: int = 400
    reviews_per_day: int = 20  # simulated reviewer verdicts a day, from the review queue
    traffic_hours: int = 22  # of each day; the rest lets every request settle before the next day

    def check(self) -> "DemoSpec":
        if not 1 <= self.weeks <= 52:
            raise ValueError(f"weeks must be within 1..52, got {self.weeks}")
        if self.requests_per_day < 10:
            raise ValueError(f"requests per day must be >= 10, got {self.requests_per_day}")
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
        r = Request(f"demo-{spec.seed}-{day}-{i}", f"user-{user:04d}", f"s-{day}-{user}", t, task.name, prompt,
                    task.answer(subject))
        if rng.random() < spec.toxic_rate:
            r.prompt, r.toxic = f"{rng.choice(ABUSE)} {r.prompt}", True
        elif rng.random() < spec.pii_rate:
            r.prompt = f"{r.prompt} " + rng.choice(PERSONAL).format(n=rng.choice(("ann", "bo", "cy")), m=rng.choice(("lee", "kim")),
                                                                     d=rng.randrange(10, 9999))
            r.personal = True
        out.append(r)
    return out


def is_right(task_type: str, answer: str, expected: str) -> bool:
    """What the user knows: whether the answer they got is the right one (the task's own scorer)."""
    return SCORERS[synthetic.task(task_type).scorer](answer, expected) == 1.0


def reaction(rng: random.Random, right: bool) -> list[tuple[int, str]]:
    """(delay in ms after the response, action) for one request; empty: the user did nothing."""
    def after(lo: int, hi: int) -> int:
        return rng.randint(lo, hi) * 1000

    if right:
        kind = rng.choices(("accepted", "copied", "none"), (0.62, 0.28, 0.10))[0]
        acts = [] if kind == "none" else [(after(5, 300), kind)]
        if rng.random() < 0.08:
            acts.append((after(310, 600), "thumbs_up"))
        return acts
    kind = rng.choices(("corrected", "regenerated", "abandoned", "none"), (0.40, 0.25, 0.20, 0.15))[0]
    acts = [] if kind == "none" else [(after(20, 600), kind)]
    if rng.random() < 0.15:
        acts.append((after(610, 900), "thumbs_down"))
    return acts
