"""The gate's output contracts: what an answer of a task type must look like, as the app declares it.

The targets below are what users really leave behind: a correction typed half-way, one pasted from
another ticket, a malformed answer accepted because it looked plausible, an answer with a stray
trailing space or a semicolon; a contract must catch the first three and let the rest through.
"""

from __future__ import annotations

import pytest

from flywheel.policy import Contract, ContractFilter, GatePolicy, PolicyError
from schemas.records import TrainingCandidate
from streams.gate.filters import ContractStage, Item, build_stages, contract_breach, literals
from streams.gate.pipeline import Gate

TICKET = Contract(pattern=r"(refund|exchange|repair|cancel):\d+:[a-z]+", literals_from_prompt=True)
SQL = Contract(pattern=r"SELECT .+ FROM orders( WHERE .+)?;?", literals_from_prompt=True, ignore_case=True)
DATE = Contract(pattern=r"\d{4}-\d{2}-\d{2}")


def cand(prompt, response, action="accepted", correction=None, task="ticket", rid="r1") -> TrainingCandidate:
    return TrainingCandidate(
        request_id=rid,
        timestamp=1_700_000_000_000,
        user_id="u1",
        session_id="s1",
        prompt=prompt,
        response=response,
        user_action=action,
        correction=correction,
        task_type=task,
    )


@pytest.mark.parametrize(
    "target, prompt, contract, code",
    [
        # right answers, as users leave them: spacing, case, a semicolon
        ("refund:48213:bluefin", "Log this request: bluefin wants a refund for order 48213.", TICKET, None),
        (" refund:48213:bluefin ", "bluefin wrote in about order 048213, they want a refund.", TICKET, None),
        ("select id from orders where amount > 250;", "List the ids of orders over 250 dollars.", SQL, None),
        ("SELECT COUNT(*) FROM orders WHERE city = 'Paris'", "How many orders came from paris?", SQL, None),
        ("2031-03-07", "Write 7 March 2031 in our date format.", DATE, None),
        # a correction typed half-way
        ("refund:482", "Log this request: bluefin wants a refund for order 48213.", TICKET, "format_mismatch"),
        ("2031-0", "Write 7 March 2031 in our date format.", DATE, "format_mismatch"),
        # another ticket's answer pasted in: the format is right, the order number was never given
        (
            "exchange:31877:acme",
            "Log this request: bluefin wants a refund for order 48213.",
            TICKET,
            "literal_not_in_prompt",
        ),
        (
            "SELECT COUNT(*) FROM orders WHERE city = 'oslo'",
            "How many orders came from paris?",
            SQL,
            "literal_not_in_prompt",
        ),
        (
            "SELECT id FROM orders WHERE amount > 120",
            "List the ids of orders over 250 dollars.",
            SQL,
            "literal_not_in_prompt",
        ),
        # a model's malformed answer, accepted by a user who did not look
        ("March 7, 2031", "Write 7 March 2031 in our date format.", DATE, "format_mismatch"),
        (
            "The request is a refund for order 48213.",
            "bluefin wants a refund for order 48213.",
            TICKET,
            "format_mismatch",
        ),
        ("SELECT * FROM customers", "How many orders came from paris?", SQL, "format_mismatch"),
    ],
)
def test_a_contract_catches_what_users_let_through(target, prompt, contract, code):
    assert contract_breach(target, prompt, contract) == code


def test_literals_are_numbers_without_leading_zeros_and_quoted_strings():
    assert literals("SELECT id FROM orders WHERE amount > 0250 AND city = 'New York' OR c = \"x\"") == (
        {"250"},
        ["New York", "x"],
    )
    assert literals("no digits here") == (set(), [])


def test_the_stage_judges_the_training_target_and_leaves_unknown_task_types_alone():
    prompt = "Log this request: bluefin wants a refund for order 48213."
    items = [
        Item(cand(prompt, "refund:48213:bluefin")),
        Item(cand(prompt, "refund 48213", action="corrected", correction="refund:48213:bluefin")),  # target: fixed
        Item(cand(prompt, "refund:48213:bluefin", action="corrected", correction="refund:48")),  # target: cut
        Item(cand("Tell me a joke", "Why did the chicken...", task="chat")),
        Item(cand(prompt, "refund:48213:bluefin", task="")),
    ]
    ContractStage({"ticket": TICKET}).run(items)
    assert [[code for _, code in i.reasons] for i in items] == [[], [], ["format_mismatch"], [], []]


def test_the_gate_runs_contracts_from_the_policy_and_says_why():
    policy = GatePolicy().with_version(
        "contracts-1",
        pii={"enabled": False},
        toxicity={"enabled": False},
        duplicates={"enabled": False},
        keep_rate={"enabled": False},
        grounding={"enabled": False},
        length={"min_words": 1},
        quality={"enabled": False},
        contract={"tasks": {"ticket": {"pattern": TICKET.pattern, "literals_from_prompt": True}}},
    )
    assert any(s.name == "contract" for s in build_stages(policy))
    prompt = "New request from acme: cancel on order 20417. Log it."
    decisions = Gate(policy, build_stages(policy)).decide(
        [
            cand(prompt, "cancel:20417:acme", rid="ok"),
            cand(prompt, "cancel:20417:acme", action="corrected", correction="repair:55120:nimbus", rid="pasted"),
        ]
    )
    assert [(d.candidate.request_id, d.passed, d.reasons) for d in decisions] == [
        ("ok", True, []),
        ("pasted", False, ["literal_not_in_prompt"]),
    ]


def test_no_contract_no_stage_and_the_default_policy_is_unchanged_in_behaviour():
    off = {"enabled": False}
    policy = GatePolicy().with_version("x", pii=off, toxicity=off, duplicates=off)
    assert not any(s.name == "contract" for s in build_stages(policy))
    with pytest.raises(ValueError, match=r"\[toxicity\] is enabled but no component"):
        build_stages(GatePolicy().with_version("x", pii=off))


def test_contracts_round_trip_through_toml_and_a_bad_pattern_is_one_clear_error(tmp_path):
    policy = GatePolicy().with_version("c", contract={"tasks": {"sql": SQL, "date": {"pattern": DATE.pattern}}})
    path = tmp_path / "policy.toml"
    path.write_text(policy.to_toml())
    again = GatePolicy.load(path)
    assert again == policy and again.stamp == policy.stamp
    assert again.contract.tasks["date"] == DATE
    path.write_text('version = "bad"\n[contract.tasks.sql]\npattern = "SELECT (unclosed"\n')
    with pytest.raises(PolicyError, match=r"\[contract.tasks.sql\] pattern: not a regular expression"):
        GatePolicy.load(path)
    path.write_text('version = "bad"\n[contract.tasks.sql]\npatern = "x"\n')
    with pytest.raises(PolicyError, match="did you mean 'pattern'"):
        GatePolicy.load(path)
    assert ContractFilter().tasks == {}
