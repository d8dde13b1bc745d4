"""The real-model demo's app: four tasks a pretrained model is weak at but can learn from its users.

Each task is one of the app's own conventions, which no pretrained model can know:

- `ticket`: an output format. "Log this request: bluefin wants a refund for order 48213." ->
  `refund:48213:bluefin` (action, order number, customer).
- `sql`: an SQL dialect over the app's schema (one table, `orders(id, customer, city, amount)`), in
  the house style. Scored after parsing (sqlglot), so spacing and case do not matter.
- `support`: a house rule for support answers: route to the team by what the problem is about,
  written `route: billing` (billing, repairs, shipping, accounts).
- `date`: the long tail, absent at the start (no cold-start example): dates in the house format
  `2031-03-07`.

The golden set asks about UNSEEN inputs: customers, cities, products, order numbers, amounts and
years that never occur in the traffic (nor in the cold-start examples), so a better golden score
means the model learnt the convention, not a table of answers. Pure: no model, no broker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from trainer.evaluate import SCORERS
from trainer.examples import Example, GoldenItem

TASKS = ("ticket", "sql", "support", "date")
COLD_START_TASKS = ("ticket", "sql", "support")  # `date` is the long tail: only users teach it
SCORER = {"ticket": "exact", "sql": "sql", "support": "exact", "date": "exact"}
MAX_NEW_TOKENS = {
    "ticket": 14,
    "sql": 24,
    "support": 6,
    "date": 10,
}  # answers are short: a few tokens past the longest

# the app's output contracts ([contract.tasks.<type>] of its gate policy): the shapes its own code requires of an
# answer. They catch a correction cut short, one pasted from another request, a malformed answer accepted unread;
# not a well-formed wrong one (the wrong team, another month): that is left to review
CONTRACTS = {
    "ticket": {"pattern": r"(refund|exchange|repair|cancel):\d+:[a-z]+", "literals_from_prompt": True},
    "sql": {"pattern": r"SELECT .+ FROM orders( WHERE .+)?;?", "literals_from_prompt": True, "ignore_case": True},
    "support": {"pattern": r"route: (billing|repairs|shipping|accounts)"},
    "date": {"pattern": r"\d{4}-\d{2}-\d{2}"},
}

# disjoint pools: traffic and cold start draw from the first, the golden set from the second only
CUSTOMERS = (
    "bluefin",
    "acme",
    "zenith",
    "orchid",
    "nimbus",
    "quartz",
    "maple",
    "harbor",
    "falcon",
    "juniper",
    "copper",
    "sierra",
    "willow",
    "cobalt",
    "ember",
    "lotus",
    "granite",
    "pioneer",
    "aurora",
    "summit",
    "meadow",
    "comet",
    "vertex",
    "coral",
)
GOLDEN_CUSTOMERS = ("tangerine", "basalt", "kestrel", "saffron", "glacier", "marigold", "osprey", "thistle")
CITIES = (
    "paris",
    "berlin",
    "madrid",
    "lisbon",
    "vienna",
    "dublin",
    "oslo",
    "prague",
    "warsaw",
    "athens",
    "rome",
    "zurich",
    "helsinki",
    "brussels",
    "budapest",
    "stockholm",
)
GOLDEN_CITIES = ("reykjavik", "tallinn", "valletta", "ljubljana", "riga", "vilnius", "sofia", "zagreb")
PRODUCTS = (
    "kettle",
    "blender",
    "toaster",
    "headset",
    "monitor",
    "keyboard",
    "lamp",
    "speaker",
    "router",
    "camera",
    "printer",
    "heater",
    "fan",
    "drill",
    "scanner",
    "charger",
)
GOLDEN_PRODUCTS = ("espresso machine", "projector", "treadmill", "dehumidifier", "sewing machine", "telescope")
ACTIONS = ("refund", "exchange", "repair", "cancel")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# users write dates of many decades; golden years are later than any of them
YEARS, GOLDEN_YEARS = tuple(range(1950, 2030)), tuple(range(2031, 2040))
ORDERS, GOLDEN_ORDERS = (10_000, 59_999), (60_000, 99_999)
AMOUNTS, GOLDEN_AMOUNTS = (20, 480), (500, 990)

TICKET_TEMPLATES = (
    "Log this request: {c} wants a {a} for order {n}.",
    "New request from {c}: {a} on order {n}. Log it.",
    "Please log it: customer {c} asks for a {a}, order {n}.",
    "{c} wrote in about order {n}, they want a {a}. Log it.",
)
SQL_TEMPLATES = {
    "count_city": (
        "How many orders came from {city}?",
        "Count the orders shipped to {city}.",
        "Write the query: number of orders from {city}.",
        "SELECT COUNT(*) FROM orders WHERE city = '{city}'",
    ),
    "sum_customer": (
        "What is the total amount spent by {c}?",
        "Total order amount for customer {c}?",
        "Write the query: how much has {c} spent in all?",
        "SELECT SUM(amount) FROM orders WHERE customer = '{c}'",
    ),
    "ids_over": (
        "List the ids of orders over {m} dollars.",
        "Which order ids have an amount above {m}?",
        "Write the query: ids of orders worth more than {m}.",
        "SELECT id FROM orders WHERE amount > {m}",
    ),
}
SUPPORT_TOPICS = {  # team -> problem phrasings (the product is a slot)
    "billing": (
        "I was charged twice for my {p}.",
        "The invoice for my {p} shows the wrong price.",
        "I want my money back for the {p}.",
        "My card was billed for a {p} I never ordered.",
    ),
    "repairs": (
        "My {p} stopped working after a week.",
        "The {p} makes a strange noise and then turns off.",
        "My {p} arrived broken, can it be fixed?",
        "The screen of my {p} cracked on its own.",
    ),
    "shipping": (
        "My {p} has not arrived yet.",
        "Where is my {p}? The tracking has not moved.",
        "The {p} was delivered to the wrong address.",
        "Can you send my {p} faster?",
    ),
    "accounts": (
        "I cannot log in to see the order of my {p}.",
        "I forgot my password, and I need the receipt of my {p}.",
        "Please change the email on my account, I bought a {p}.",
        "My account is locked since I ordered a {p}.",
    ),
}
SUPPORT_ASK = ("Which team handles this? ", "Route this ticket: ", "Support triage: ", "Which team should take it? ")
DATE_TEMPLATES = (
    "Write {d} {mo} {y} in our date format.",
    "Our format for the date {mo} {d}, {y}?",
    "Convert to house date format: {d} {mo} {y}.",
)


@dataclass(frozen=True)
class Item:
    task_type: str
    prompt: str
    expected: str


def _ticket(rng: random.Random, golden: bool) -> Item:
    c = rng.choice(GOLDEN_CUSTOMERS if golden else CUSTOMERS)
    n = rng.randint(*(GOLDEN_ORDERS if golden else ORDERS))
    a = rng.choice(ACTIONS)
    return Item("ticket", rng.choice(TICKET_TEMPLATES).format(c=c, a=a, n=n), f"{a}:{n}:{c}")


def _sql(rng: random.Random, golden: bool) -> Item:
    kind = rng.choice(sorted(SQL_TEMPLATES))
    *asks, query = SQL_TEMPLATES[kind]
    slots = dict(
        city=rng.choice(GOLDEN_CITIES if golden else CITIES),
        c=rng.choice(GOLDEN_CUSTOMERS if golden else CUSTOMERS),
        m=rng.randrange(*(GOLDEN_AMOUNTS if golden else AMOUNTS), 10),
    )
    return Item("sql", rng.choice(asks).format(**slots), query.format(**slots))


def _support(rng: random.Random, golden: bool) -> Item:
    team = rng.choice(sorted(SUPPORT_TOPICS))
    text = rng.choice(SUPPORT_TOPICS[team]).format(p=rng.choice(GOLDEN_PRODUCTS if golden else PRODUCTS))
    return Item("support", rng.choice(SUPPORT_ASK) + text, f"route: {team}")


def _date(rng: random.Random, golden: bool) -> Item:
    y, m, d = rng.choice(GOLDEN_YEARS if golden else YEARS), rng.randint(1, 12), rng.randint(1, 28)
    return Item("date", rng.choice(DATE_TEMPLATES).format(d=d, mo=MONTHS[m - 1], y=y), f"{y}-{m:02d}-{d:02d}")


MAKERS: dict[str, Callable[[random.Random, bool], Item]] = {
    "ticket": _ticket,
    "sql": _sql,
    "support": _support,
    "date": _date,
}


def draw(task_type: str, rng: random.Random, golden: bool = False) -> Item:
    return MAKERS[task_type](rng, golden)


def golden_set(per_task: int = 12, seed: int = 1234) -> list[GoldenItem]:
    """Held-out items about unseen entities, distinct prompts, in a fixed order."""
    rng, out, seen = random.Random(f"golden:{seed}"), [], set()
    for task in TASKS:
        n = 0
        while n < per_task:
            item = draw(task, rng, golden=True)
            if item.prompt in seen:
                continue
            seen.add(item.prompt)
            out.append(
                GoldenItem(
                    f"{task}-{n:02d}",
                    item.prompt,
                    item.expected,
                    task,
                    SCORER[task],
                    f'{{"max_new_tokens": {MAX_NEW_TOKENS[task]}}}',
                )
            )
            n += 1
    return out


def cold_start_examples(n: int = 48, seed: int = 0) -> list[Example]:
    """What the app's developers wrote before launch: a few examples of the first three tasks."""
    rng = random.Random(f"cold:{seed}")
    return [
        Example(i.prompt, i.expected, i.task_type)
        for i in (draw(COLD_START_TASKS[k % len(COLD_START_TASKS)], rng) for k in range(n))
    ]


def is_right(task_type: str, answer: str, expected: str) -> bool:
    """What the user knows: whether the answer is the right one, by the task's own scorer."""
    return SCORERS[SCORER[task_type]](answer, expected) == 1.0


def wrong_answer(task_type: str, expected: str, rng: random.Random) -> str:
    """A plausible wrong correction: the right answer of another question of the same task."""
    for _ in range(20):
        other = draw(task_type, rng).expected
        if other != expected:
            return other
    return expected
