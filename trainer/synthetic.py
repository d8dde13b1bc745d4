"""Synthetic examples for a cold start (the seed's Section 07): the flywheel needs a model to serve
before any traffic, so `flywheel bootstrap` trains v1 on generated examples plus a few labelled ones.

Each task is a family of templates over small built-in tables, with a deterministic answer. The
training phrasings and the golden phrasings are different templates, so a golden set made here is
held out: no golden prompt is a training prompt or a near duplicate of one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from trainer.examples import Example, GoldenItem

TABLES = (
    "users",
    "orders",
    "invoices",
    "payments",
    "products",
    "customers",
    "sessions",
    "events",
    "tickets",
    "refunds",
    "shipments",
    "reviews",
    "accounts",
    "devices",
    "coupons",
    "carts",
)
CAPITALS = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Canada": "Ottawa",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Chile": "Santiago",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Cuba": "Havana",
    "Ireland": "Dublin",
}
CURRENCIES = {
    "France": "euro",
    "Spain": "euro",
    "Italy": "euro",
    "Germany": "euro",
    "Japan": "yen",
    "Canada": "dollar",
    "Egypt": "pound",
    "Peru": "sol",
    "Kenya": "shilling",
    "Norway": "krone",
    "Greece": "euro",
    "Chile": "peso",
    "Austria": "euro",
    "Poland": "zloty",
    "Cuba": "peso",
    "Ireland": "euro",
}
PRODUCTS = ("router", "printer", "laptop", "headset", "camera", "monitor", "keyboard", "tablet", "speaker", "watch")


@dataclass(frozen=True)
class Task:
    name: str
    train_templates: tuple[str, ...]
    golden_templates: tuple[str, ...]
    subjects: Callable[[], Sequence[str]]
    answer: Callable[[str], str]
    scorer: str = "exact"


TASKS: dict[str, Task] = {
    "sql": Task(
        "sql",
        ("How many rows are in the {x} table?", "Count the rows of table {x}.", "Write SQL that counts all {x}."),
        ("How many rows does the {x} table have?",),
        lambda: TABLES,
        lambda x: f"SELECT COUNT(*) FROM {x};",
        scorer="sql",
    ),
    "qa": Task(
        "qa",
        ("What is the capital of {x}?", "Name the capital city of {x}.", "Which city is the capital of {x}?"),
        ("What is the capital city of {x}?",),
        lambda: tuple(CAPITALS),
        lambda x: CAPITALS[x],
    ),
    "support": Task(
        "support",
        ("My {x} will not turn on.", "The {x} I bought does not start.", "How do I fix a dead {x}?"),
        ("My {x} does not start.",),
        lambda: PRODUCTS,
        lambda x: f"Hold the {x} power button for ten seconds, then plug it in again.",
        scorer="contains",
    ),
    # the long tail: rare in traffic and absent from a cold start on the three above, so only production
    # traffic (corrections) can teach it
    "currency": Task(
        "currency",
        ("What currency is used in {x}?", "Which currency do people pay with in {x}?", "Name the currency of {x}."),
        ("What is the currency of {x}?",),
        lambda: tuple(CURRENCIES),
        lambda x: CURRENCIES[x],
    ),
}


def task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def generate(n: int, tasks: Sequence[str] = tuple(TASKS), seed: int = 0) -> list[Example]:
    """`n` training examples spread evenly over `tasks`, in a seeded order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chosen = [task(t) for t in tasks]
    if not chosen:
        raise ValueError("no tasks to generate")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = chosen[i % len(chosen)]
        subject = rng.choice(list(t.subjects()))
        out.append(Example(rng.choice(t.train_templates).format(x=subject), t.answer(subject), t.name))
    return out


def golden(tasks: Sequence[str] = tuple(TASKS)) -> list[GoldenItem]:
    """One held-out item per subject and golden template of each task."""
    items = []
    for name in tasks:
        t = task(name)
        for template in t.golden_templates:
            for subject in t.subjects():
                items.append(
                    GoldenItem(
                        id=f"syn-{name}-{subject.lower()}",
                        prompt=template.format(x=subject),
                        expected=t.answer(subject),
                        task_type=name,
                        scorer=t.scorer,
                    )
                )
    return items
