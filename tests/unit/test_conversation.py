"""Conversations in events (interaction v3, candidate v4): old versions read as one-turn
conversations, the rules and limits a conversation meets (dead letters otherwise), the join carrying
it, the gate redacting every turn, and chat-form training records with the context placed."""

from __future__ import annotations

import json

import pytest

from schemas import Codec, DecodeError, EncodeError
from schemas.conversation import message
from schemas.records import Interaction, InvalidEvent, TrainingCandidate
from streams.datasets import content
from streams.datasets.chat import ChatLayout
from streams.gate.filters import Item, PiiStage
from streams.gate.pii import Redactor
from streams.join.core import ACTION, INTERACTION, TICK_HEADER, DictStore, JoinCore, Record

codec = Codec()
JSON = {"content-type": b"application/json"}
T0 = 1_700_000_000_000
MIN = 60_000

# written as an app sends it: a system prompt, two earlier turns with a tool call, passages, a tool offered
SYSTEM = "You are Acme's support bot. Be brief."
PASSAGES = ["Refunds are paid within 5 business days of approval.", "Orders over $50 ship free {in the EU}."]
TURNS = [
    {"role": "user", "content": "hi, my order #A-1 didn't arrive \U0001f622"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "name": "lookup_order", "arguments": '{"order": "A-1"}'}],
    },
    {"role": "tool", "content": '{"status": "lost"}', "tool_call_id": "call_1"},
    {"role": "assistant", "content": "Your order was lost. I can refund it."},
    {"role": "user", "content": "ok, how long does a refund take?"},
]
TOOLS = [{"name": "lookup_order", "description": "Find an order by id", "parameters": '{"type": "object"}'}]


def conversation_json(**over) -> dict:
    event = {
        "request_id": "r-conv",
        "session_id": "s1",
        "user_id": "u1",
        "event_time": T0,
        "model_version": "m1",
        "system": SYSTEM,
        "messages": TURNS,
        "tools": TOOLS,
        "retrieved_context": PASSAGES,
        "response": "Refunds take up to 5 business days.",
    }
    event.update(over)
    return event


def decode_json(event) -> dict:
    return codec.decode("interaction", json.dumps(event).encode(), JSON)


# -- the codec ---------------------------------------------------------------------------------------


def test_a_json_conversation_decodes_with_every_key_and_the_prompt_taken_from_the_last_user_turn():
    rec = decode_json(conversation_json())
    assert rec["prompt"] == "ok, how long does a refund take?"
    assert len(rec["messages"]) == 5 and all(
        set(m) == {"role", "content", "name", "tool_calls", "tool_call_id"} for m in rec["messages"]
    )
    assert rec["messages"][1]["tool_calls"] == [
        {"id": "call_1", "name": "lookup_order", "arguments": '{"order": "A-1"}'}
    ]
    i = Interaction.from_dict(rec).check()
    # the same record through Avro: the bytes decode to it again
    assert codec.decode("interaction", codec.encode("interaction", i.to_dict())) == rec


def test_old_single_turn_events_become_one_turn_conversations():
    v1, v2 = codec.versions("interaction")[:2]
    old = {
        "request_id": "r1",
        "session_id": "s",
        "user_id": "u",
        "event_time": T0,
        "model_version": "m0",
        "variant": "",
        "task_type": "",
        "prompt": "Qu'est-ce que c'est ?",
        "response": "Un test.",
        "retrieved_context": ["doc"],
        "latency_ms": None,
    }
    for version in (v1, v2):
        rec = codec.decode("interaction", codec.encode("interaction", old, version=version))
        assert (
            rec["messages"] == [message("user", "Qu'est-ce que c'est ?")]
            and rec["system"] == ""
            and rec["tools"] == []
        )
        assert rec["retrieved_context"] == ["doc"]
    # an older candidate too (v3: no conversation fields)
    cv3 = codec.versions("candidate")[2]
    c = TrainingCandidate("r1", T0, "u", "s", "p?", "a.", "accepted").to_dict()
    data = codec.encode(
        "candidate", {k: v for k, v in c.items() if k in {f["name"] for f in cv3.raw["fields"]}}, version=cv3
    )
    assert codec.decode("candidate", data)["messages"] == [message("user", "p?")]


def test_a_current_event_sent_with_a_prompt_only_still_has_its_turn():
    rec = decode_json(
        {
            "request_id": "r",
            "session_id": "",
            "user_id": "u",
            "event_time": T0,
            "model_version": "m",
            "prompt": "2+2?",
            "response": "4",
        }
    )
    assert rec["messages"] == [message("user", "2+2?")]


@pytest.mark.parametrize(
    "messages, words",
    [
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": ["x"]}], None),  # a list where text goes: the schema refuses it
        ([{"role": "tool", "content": "42"}], "tool_call_id"),
        ([{"role": "user", "content": "x", "tool_calls": [{"name": "f"}]}], "only an assistant"),
        (
            [{"role": "assistant", "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}],
            None,
        ),  # arguments must be JSON text
        ([{"role": "assistant", "tool_calls": [{"arguments": "{}"}]}], None),
        (["hello"], None),
    ],
)
def test_broken_turns_are_invalid_events(messages, words):
    with pytest.raises((DecodeError, InvalidEvent)) as err:
        Interaction.from_dict(decode_json(conversation_json(messages=messages))).check()
    if isinstance(err.value, DecodeError):
        assert err.value.reason == "invalid_event"
    if words:
        assert words in str(err.value)


def test_the_input_limits_hold_inside_a_conversation():
    def reason(event=None, raw=None):
        with pytest.raises(DecodeError) as err:
            codec.decode("interaction", raw if raw is not None else json.dumps(event).encode(), JSON)
        return err.value.reason

    assert reason(conversation_json(messages=[{"role": "user", "content": "x"}] * 1025)) == "too_many_items"
    assert reason(conversation_json(messages=[{"role": "user", "content": "x" * 200_001}])) == "too_long"
    # a turn nests 5 deep; content made of nested arrays goes past 8 and stops at the parser
    deep = json.dumps(conversation_json(messages=[{"role": "user", "content": "PLACE"}])).replace(
        '"PLACE"', "[" * 6 + "]" * 6
    )
    assert reason(raw=deep.encode()) == "too_deep"
    # the Avro path: a turn over the string limit, written by a producer that does not check
    small = Codec(
        limits=__import__("schemas.codec", fromlist=["InputLimits"]).InputLimits(max_string_chars=100, max_items=3)
    )
    ok = Interaction.from_dict(decode_json(conversation_json(messages=TURNS[-1:]))).to_dict()
    with pytest.raises(DecodeError) as err:
        small.decode("interaction", codec.encode("interaction", {**ok, "messages": [message("user", "y" * 101)]}))
    assert err.value.reason == "too_long"
    with pytest.raises(DecodeError) as err:
        small.decode("interaction", codec.encode("interaction", {**ok, "messages": [message("user", "y")] * 4}))
    assert err.value.reason == "too_many_items"
    with pytest.raises(DecodeError) as err:
        calls = [{"id": "", "name": "f", "arguments": "z" * 101}]
        small.decode("interaction", codec.encode("interaction", {**ok, "response_tool_calls": calls}))
    assert err.value.reason == "too_long"


# -- the join ----------------------------------------------------------------------------------------


def _rec(kind, off, value, key, headers=None):
    return Record(kind, f"t.{kind}", 0, off, key, value, headers or {})


def test_the_join_carries_the_conversation_and_dead_letters_a_broken_one():
    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=30 * MIN,
        watermark_delay_ms=0,
        marker_horizon_ms=24 * 60 * MIN,
        max_event_bytes=256 * 1024,
    )
    good = json.dumps(conversation_json()).encode()
    bad = json.dumps(conversation_json(request_id="r-bad", messages=[{"role": "tool", "content": "x"}])).encode()
    action = json.dumps(
        {"request_id": "r-conv", "user_id": "u1", "event_time": T0 + MIN, "action": "accepted"}
    ).encode()
    out = j.apply_all(
        [
            _rec(INTERACTION, 0, good, b"r-conv", JSON),
            _rec(INTERACTION, 1, bad, b"r-bad", JSON),
            _rec(ACTION, 0, action, b"r-conv", JSON),
        ]
    )
    assert [(d.reason, d.source_offset) for d in out.deadletters] == [("invalid_event", 1)]
    out = j.apply_all(
        [
            _rec(INTERACTION, 2, b"", None, {TICK_HEADER: str(T0 + 31 * MIN).encode()}),
            _rec(ACTION, 1, b"", None, {TICK_HEADER: str(T0 + 31 * MIN).encode()}),
        ]
    )
    [c] = [TrainingCandidate.from_dict(codec.decode("candidate", e.value)) for e in out.candidates]
    assert c.label == "sft_positive" and c.prompt == TURNS[-1]["content"]
    assert c.system == SYSTEM and [m["role"] for m in c.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert c.tools[0]["name"] == "lookup_order" and c.retrieved_context == PASSAGES


# -- the gate ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redactor():
    return Redactor()


def test_the_gate_redacts_every_turn_the_system_prompt_tool_calls_and_the_context(redactor):
    email, phone, card = "jane.doe@example.com", "+1 415-555-0132", "4111 1111 1111 1111"
    turns = [dict(t) for t in TURNS]
    turns[0] = {"role": "user", "content": f"I'm jane, mail me at {email}"}
    turns[1] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "name": "lookup_order", "arguments": json.dumps({"email": email})}],
    }
    turns[3] = {"role": "assistant", "content": f"I will call you on {phone}."}
    turns[4] = {"role": "user", "content": f"my card is {card}"}
    rec = decode_json(
        conversation_json(
            system=f"Escalate to {email}.", messages=turns, retrieved_context=[f"Customer phone: {phone}"]
        )
    )
    i = Interaction.from_dict(rec).check()
    c = TrainingCandidate(
        i.request_id,
        i.event_time,
        i.user_id,
        i.session_id,
        i.prompt,
        i.response,
        "accepted",
        retrieved_context=i.retrieved_context,
        system=i.system,
        messages=i.messages,
        tools=i.tools,
    )
    item = Item(c)
    PiiStage(redactor, reject_secrets=False).run([item])
    blob = json.dumps(c.to_dict(), default=str)
    for secret in (email, "415-555-0132", card, "1111 1111"):
        assert secret not in blob, secret
    assert c.prompt == c.messages[-1]["content"] != turns[4]["content"]
    # the prompt and its echo in the last turn are counted once
    assert item.redactions.get("CREDIT_CARD") == 1


# -- the datasets ------------------------------------------------------------------------------------


def conversation_candidate(**kw) -> TrainingCandidate:
    i = Interaction.from_dict(decode_json(conversation_json())).check()
    fields = dict(
        retrieved_context=list(i.retrieved_context),
        system=i.system,
        messages=i.messages,
        tools=i.tools,
        user_action="accepted",
        label="sft_positive",
        target=i.response,
        policy_version="p@1",
        quality_score=0.8,
    )
    fields.update(kw)
    return TrainingCandidate(i.request_id, i.event_time, i.user_id, i.session_id, i.prompt, i.response, **fields)


def test_a_rag_conversation_reaches_the_training_record_with_its_context():
    c = conversation_candidate()
    r = content.sft_record(c, content.WindowStats(), 0.1)
    codec.encode("sft_record", r)  # fits the schema as written
    roles = [m["role"] for m in r["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    system = r["messages"][0]["content"]
    assert system.startswith(SYSTEM) and "[1] Refunds are paid within 5 business days" in system
    assert "[2] Orders over $50 ship free {in the EU}." in system  # braces in a passage are text, not a template
    assert r["context"] == PASSAGES and r["tools"][0]["name"] == "lookup_order"
    line = content.chat_sft(r)
    assert line["messages"][-1] == {"role": "assistant", "content": "Refunds take up to 5 business days."}
    assert (
        line["messages"][2]["tool_calls"][0]["name"] == "lookup_order"
        and line["messages"][3]["tool_call_id"] == "call_1"
    )
    assert line["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert "None" not in json.dumps(line) and "null" not in json.dumps(line)


@pytest.mark.parametrize("placement", ["user", "turn", "none"])
def test_the_context_goes_where_the_layout_says(placement):
    layout = ChatLayout(placement, "Docs:\n{passages}", "- {text}")
    r = content.sft_record(conversation_candidate(), content.WindowStats(), 0.1, layout=layout)
    codec.encode("sft_record", r)
    msgs = r["messages"]
    assert msgs[0] == message("system", SYSTEM)
    block = "Docs:\n- " + PASSAGES[0] + "\n\n- " + PASSAGES[1]
    if placement == "user":
        assert msgs[-1]["content"] == f"{block}\n\n{TURNS[-1]['content']}" and len(msgs) == 6
    elif placement == "turn":
        assert msgs[-2] == message("user", block) and msgs[-1]["content"] == TURNS[-1]["content"]
    else:
        assert all("Refunds are paid" not in m["content"] for m in msgs) and r["context"] == PASSAGES


def test_a_correction_makes_a_chat_preference_pair_with_the_same_prompt_side():
    c = conversation_candidate(
        user_action="corrected",
        label="sft_correction",
        correction="Up to 5 business days.",
        target="Up to 5 business days.",
        pair_chosen="Up to 5 business days.",
        pair_rejected="Refunds take up to 5 business days.",
        response_tool_calls=[{"id": "c9", "name": "refund", "arguments": "{}"}],
    )
    sft = content.sft_record(c, content.WindowStats(), 0.1)
    pref = content.preference_record(c, content.WindowStats(), 0.1)
    codec.encode("preference_record", pref)
    assert sft["target_tool_calls"] == []  # the correction is the target, not the served tool call
    assert pref["messages"] == sft["messages"]
    trl = content.chat_preference(pref)
    assert trl["prompt"][0]["role"] == "system" and trl["chosen"] == [
        {"role": "assistant", "content": "Up to 5 business days."}
    ]


def test_single_turn_records_keep_their_old_shape():
    c = TrainingCandidate("r1", T0, "u", "s", "What is 2+2?", "4", "accepted", label="sft_positive", target="4")
    r = content.sft_record(c, content.WindowStats(), 0.1)
    assert r["messages"] == [message("user", "What is 2+2?")] and r["context"] == []
    assert content.chat_sft(r)["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]


# -- hostile conversations ---------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from schemas.conversation import conversation_texts  # noqa: E402
from tests.unit.test_fuzz_join import any_value, json_values  # noqa: E402

turn_values = st.one_of(
    any_value.filter(lambda v: _jsonable(v)), st.sampled_from(["user", "assistant", "tool", "system", "developer"])
)
turns = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "role": st.one_of(
                    st.sampled_from(["user", "assistant", "tool", "system", "developer", "robot", ""]), turn_values
                )
            },
            optional={
                "content": turn_values,
                "name": turn_values,
                "tool_call_id": turn_values,
                "tool_calls": st.one_of(
                    turn_values,
                    st.lists(
                        st.one_of(
                            json_values,
                            st.fixed_dictionaries(
                                {"name": turn_values}, optional={"id": turn_values, "arguments": turn_values}
                            ),
                        ),
                        max_size=3,
                    ),
                ),
                "extra": turn_values,
            },
        ),
    ),
    max_size=6,
)


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def test_a_lone_surrogate_in_a_turn_is_a_dead_letter_not_a_crash():
    body = json.dumps(conversation_json(messages=[{"role": "user", "content": "\ud800 hi"}])).encode()
    j = JoinCore(
        codec,
        DictStore(),
        settle_window_ms=30 * MIN,
        watermark_delay_ms=0,
        marker_horizon_ms=24 * 60 * MIN,
        max_event_bytes=256 * 1024,
    )
    assert [d.reason for d in j.apply_all([_rec(INTERACTION, 0, body, b"r-conv", JSON)]).deadletters] == [
        "invalid_event"
    ]


@settings(
    max_examples=1500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(messages=turns, system=turn_values, tools=st.one_of(turn_values, st.lists(json_values, max_size=3)))
def test_a_hostile_conversation_is_refused_with_a_reason_or_goes_all_the_way_to_a_record(messages, system, tools):
    """Refused only as a DecodeError or InvalidEvent (a dead letter with a reason); or it joins, is
    redacted slot by slot, and makes a chat record that fits its schema. Never an unprocessable record."""
    body = json.dumps(conversation_json(messages=messages, system=system, tools=tools)).encode()
    try:
        i = Interaction.from_dict(codec.decode("interaction", body, JSON)).check()
        codec.encode("interaction", i.to_dict())  # a lone surrogate passes the schema check, not the encoder
    except (DecodeError, InvalidEvent, EncodeError):
        j = JoinCore(
            codec,
            DictStore(),
            settle_window_ms=30 * MIN,
            watermark_delay_ms=0,
            marker_horizon_ms=24 * 60 * MIN,
            max_event_bytes=256 * 1024,
        )
        out = j.apply_all([_rec(INTERACTION, 0, body, b"r-conv", JSON)])
        assert [d.reason for d in out.deadletters] != ["unprocessable"] and len(out.deadletters) == 1
        return
    c = TrainingCandidate(
        i.request_id,
        i.event_time,
        i.user_id,
        i.session_id,
        i.prompt,
        i.response,
        "accepted",
        label="sft_positive",
        target=i.response,
        retrieved_context=i.retrieved_context,
        system=i.system,
        messages=i.messages,
        tools=i.tools,
        response_tool_calls=i.response_tool_calls,
    )
    for text, put in list(conversation_texts(c)):
        assert isinstance(text, str)
        put(text.upper())
    codec.decode("candidate", codec.encode("candidate", c.to_dict()))
    record = content.sft_record(c, content.WindowStats(), 0.1)
    if record is not None:
        codec.encode("sft_record", record)
        json.dumps(content.chat_sft(record))


def test_toxicity_is_scored_on_every_turn_of_the_conversation_not_only_the_last():
    from streams.gate.filters import ToxicityStage
    from streams.gate.toxicity import ProfanityScorer

    stage = ToxicityStage(ProfanityScorer(), 0.5, ("prompt", "response", "target"))
    clean = conversation_candidate()
    abusive = conversation_candidate(
        messages=[message("user", "you are a fucking useless piece of shit bot")] + clean.messages[1:]
    )
    earlier_reply = conversation_candidate(
        messages=clean.messages[:3] + [message("assistant", "shut up, you stupid bitch")] + clean.messages[4:]
    )
    items = [Item(clean), Item(abusive), Item(earlier_reply)]
    stage.run(items)
    assert [bool(i.reasons) for i in items] == [False, True, True]
    assert clean.prompt == abusive.prompt  # the last turn is the same: only the history differs


def test_the_review_page_shows_the_conversation_escaped_before_the_prompt():
    from streams.review.items import ReviewItem
    from streams.review.queue import Lease, QueueStats
    from streams.review.web import render_item

    xss = "<script>window.__xss=1</script>"
    c = conversation_candidate(system=f"Be nice {xss}").to_dict()
    c["messages"][0]["content"] = f"hello {xss}"
    it = ReviewItem(
        "r-conv",
        c,
        gate_passed=True,
        sampled_for=["random"],
        probability=0.5,
        window=1,
        reviews_needed=1,
        source="t/0/1",
    )
    page = render_item(
        Lease(it, "L1", T0 + 600_000, 1, T0),
        QueueStats(ready=1, leased=1, oldest_age_s=1.0, outbox=0, counts={}),
        0,
        "alice",
        "csrf",
        "n",
    )
    section = page[page.index('<section id="conversation">') : page.index('<section id="prompt">')]
    assert "<script>" not in page and "&lt;script&gt;" in section
    assert section.count("<li>") == 4  # the earlier turns; the last is the prompt, shown under Prompt
    assert "lookup_order" in section and "answering <code>call_1</code>" in section and "Be nice" in section
    single = ReviewItem(
        "r1",
        TrainingCandidate("r1", T0, "u", "s", "2+2?", "4", "accepted").to_dict(),
        gate_passed=True,
        sampled_for=["random"],
        probability=0.5,
        window=1,
        reviews_needed=1,
        source="t/0/1",
    )
    assert 'id="conversation"' not in render_item(
        Lease(single, "L2", T0 + 600_000, 1, T0),
        QueueStats(ready=1, leased=1, oldest_age_s=1.0, outbox=0, counts={}),
        0,
        "a",
        "c",
        "n",
    )
