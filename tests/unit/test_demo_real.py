"""The real-model demo's pure parts: the app's tasks, the golden set of unseen inputs, the users'
corrections, the intervals, the findings and the report's table and plot."""

from __future__ import annotations

import random

from flywheel.demo import real, tasks
from flywheel.demo.traffic import UserTraits
from flywheel.report import render


def _entities(text: str) -> set[str]:
    return set(text.replace(".", " ").replace(",", " ").replace("'", " ").replace(":", " ").replace("?", " ").split())


def test_golden_items_ask_about_entities_that_never_occur_in_traffic_or_the_cold_start():
    golden = tasks.golden_set(real.RealSpec().golden_per_task)
    assert len(golden) == real.RealSpec().golden_per_task * len(tasks.TASKS) and len(
        {g.prompt for g in golden}
    ) == len(golden)
    rng = random.Random(7)
    seen_words: set[str] = set()
    for _ in range(5000):
        item = tasks.draw(rng.choice(tasks.TASKS), rng)
        seen_words |= _entities(item.prompt) | _entities(item.expected)
    for ex in tasks.cold_start_examples():
        seen_words |= _entities(ex.prompt) | _entities(ex.target)
    golden_only = set(tasks.GOLDEN_CUSTOMERS) | set(tasks.GOLDEN_CITIES) | {str(y) for y in tasks.GOLDEN_YEARS}
    golden_only |= {w for p in tasks.GOLDEN_PRODUCTS for w in p.split()} - {"machine"}
    assert not golden_only & seen_words
    for g in golden:  # every golden item names at least one unseen entity or value
        words = _entities(g.prompt)
        numbers = {int(w) for w in words if w.isdigit()}
        unseen = (
            words & golden_only
            or any(tasks.GOLDEN_ORDERS[0] <= n <= tasks.GOLDEN_ORDERS[1] for n in numbers)
            or any(tasks.GOLDEN_AMOUNTS[0] <= n <= tasks.GOLDEN_AMOUNTS[1] for n in numbers)
        )
        assert unseen, g.prompt


def test_the_long_tail_task_is_absent_from_the_cold_start():
    assert (
        {e.task_type for e in tasks.cold_start_examples()}
        == set(tasks.COLD_START_TASKS)
        == {"ticket", "sql", "support"}
    )
    assert "date" in tasks.TASKS


def test_a_right_answer_is_judged_by_the_tasks_scorer():
    assert tasks.is_right(
        "sql", "select count(*) from orders where city='oslo'", "SELECT COUNT(*) FROM orders WHERE city = 'oslo'"
    )
    assert not tasks.is_right(
        "sql", "SELECT COUNT(*) FROM order WHERE city = 'oslo'", "SELECT COUNT(*) FROM orders WHERE city = 'oslo'"
    )
    assert tasks.is_right("date", "2031-03-07", "2031-03-07") and not tasks.is_right(
        "date", "07/03/2031", "2031-03-07"
    )
    assert not tasks.is_right("ticket", "refund:12345", "refund:12345:acme")


def test_sloppy_users_correct_wrongly_or_partially_and_careful_ones_do_not():
    q = real.Request(
        "r", "u", "s", 0, "ticket", "Log this request: acme wants a refund for order 12345.", "refund:12345:acme"
    )
    rng = random.Random(0)
    careful = [real.user_correction(rng, q, UserTraits(sloppy=0.0)) for _ in range(200)]
    assert set(careful) == {q.expected}
    sloppy = [real.user_correction(rng, q, UserTraits(sloppy=1.0)) for _ in range(400)]
    assert q.expected not in sloppy
    partial = [c for c in sloppy if q.expected.startswith(c)]
    assert 120 < len(partial) < 280 and all(tasks.is_right("ticket", c, q.expected) is False for c in sloppy)


def test_traffic_carries_the_gates_cases_and_is_the_same_for_the_same_seed():
    spec = real.RealSpec(requests_per_cycle=400, toxic_rate=0.05, pii_rate=0.05)
    a = real.traffic(spec, 1, random.Random(3), 0)
    b = real.traffic(spec, 1, random.Random(3), 0)
    assert [q.prompt for q in a] == [q.prompt for q in b]
    assert sum(q.toxic for q in a) > 5 and sum(q.personal for q in a) > 5
    assert {q.task_type for q in a} == set(tasks.TASKS)


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_more_items():
    small = [1, 0] * 10
    large = [1, 0] * 200
    lo_s, hi_s = real.interval(small)
    lo_l, hi_l = real.interval(large)
    assert lo_s < 0.5 < hi_s and lo_l < 0.5 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert real.interval([1.0] * 30) == (1.0, 1.0)


def _report(shipped: list[float], others: dict[str, list[float]], n: int = 40) -> dict:
    def rows(qualities):
        out = []
        for cycle, q in enumerate(qualities):
            scores = [1.0] * round(q * n) + [0.0] * (n - round(q * n))
            lo, hi = real.interval(scores)
            out.append(
                {
                    "cycle": cycle,
                    "quality": sum(scores) / n,
                    "low": lo,
                    "high": hi,
                    "by_task": {},
                    "outcome": "promoted",
                    "candidate": {"quality": q, "examples": 10, "replayed": 0, "steps": 2} if cycle else None,
                    "scores": scores,
                }
            )
        return out

    arms = {
        "never_retrained": rows(others.get("never_retrained", [shipped[0]] * len(shipped))),
        "shipped": rows(shipped),
    }
    for name, qs in others.items():
        arms.setdefault(name, rows(qs))
    states = {name: real.ArmState(name, None, arms[name][-1]["scores"], rows=arms[name]) for name in arms}
    spec = real.RealSpec(arms=tuple(arms))
    report = {
        "model": "m",
        "golden_items": n,
        "golden_tasks": ["ticket"],
        "requests": 100,
        "seconds": 1.0,
        "arms": arms,
        "traffic": [],
        "comparisons": real.comparisons(states, spec),
    }
    report["findings"] = real.findings(report)
    return report


def test_findings_say_when_the_shipped_arm_behaves_as_the_seed_predicts():
    report = _report(
        [0.0, 0.3, 0.5, 0.8], {"no_gate": [0.0, 0.3, 0.5, 0.8], "cold_start_data": [0.0, 0.05, 0.05, 0.1]}
    )
    text = " ".join(report["findings"])
    assert "improved for 3 consecutive cycles" in text
    assert "as predicted: shipped vs (a) never retrained" in text
    assert "as predicted: shipped vs (d) cold-start data only" in text
    assert "not distinguishable" in text and "NOT as predicted" not in text


def test_findings_say_when_an_arm_does_not_behave_as_predicted():
    report = _report(
        [0.0, 0.3, 0.3, 0.35], {"no_gate": [0.0, 0.6, 0.8, 0.9], "cold_start_data": [0.0, 0.3, 0.3, 0.35]}
    )
    findings = report["findings"]
    assert any(f.startswith("NOT as predicted: the shipped arm improved for at most 1") for f in findings)
    assert any(f.startswith("NOT as predicted: shipped vs (c) no gate") for f in findings)
    assert any(f.startswith("NOT as predicted: shipped vs (d) cold-start data only") for f in findings)


def test_the_report_shows_every_arm_per_cycle_with_its_interval_in_the_table_and_the_plot():
    report = _report([0.1, 0.4, 0.6], {"no_gate": [0.1, 0.35, 0.55], "cold_start_data": [0.1, 0.15, 0.2]})
    text = render.arms_text(report)
    for label in ("(a) never retrained", "(b) flywheel as shipped", "(c) no gate", "(d) cold-start data only"):
        assert text.count(label) >= 3  # one row per cycle
    last = report["arms"]["shipped"][-1]
    assert f"{100 * last['low']:.1f}% - {100 * last['high']:.1f}%" in text
    page = render.arms_page(report)
    assert page.count("<polyline") == 4
    assert page.count('opacity="0.6"') == 4 * 3  # an interval bar per arm per cycle
    assert "Findings" in page


def test_the_apps_contracts_remove_bad_corrections_and_keep_every_right_answer():
    """Over simulated traffic: every right target passes the app's contracts; corrections cut short are all
    caught, pasted ones from another request mostly (unless the other request shares the literal or has none,
    as a support route has); the figures are what the demo's findings report."""
    from flywheel.policy import ContractFilter
    from streams.gate.filters import contract_breach

    contracts = ContractFilter(tasks=tasks.CONTRACTS).tasks
    rng = random.Random(11)
    sloppy = UserTraits(sloppy=0.999)
    right = caught = wrong = 0
    for n in range(2000):
        item = tasks.draw(tasks.TASKS[n % len(tasks.TASKS)], rng)
        assert contract_breach(item.expected, item.prompt, contracts[item.task_type]) is None, item
        q = real.Request(f"r{n}", "u", "s", 0, item.task_type, item.prompt, item.expected)
        target = real.user_correction(rng, q, sloppy)
        if tasks.is_right(item.task_type, target, item.expected):
            right += 1
            continue
        wrong += 1
        caught += contract_breach(target, item.prompt, contracts[item.task_type]) is not None
    assert wrong > 1500
    # support routes ("route: billing" pasted for "route: repairs") and pasted dates are well-formed: about a
    # quarter of all bad corrections pass, the rest are caught
    assert 0.65 < caught / wrong < 0.9, caught / wrong
    assert real.app_policy(real.RealSpec()).contract.tasks["sql"].literals_from_prompt
