"""Chat records at training time: a record's `messages` (system prompt, history, retrieved context,
the turn answered) are what the trainer renders with the model's chat template, not the last turn."""

from __future__ import annotations

import pytest

from schemas.records import TrainingCandidate
from streams.datasets import content
from tests.unit.test_conversation import PASSAGES, SYSTEM, conversation_candidate
from trainer.examples import Example, chat_turns
from trainer.model import build_default
from trainer.train import encode_status


@pytest.fixture(scope="module")
def loaded():
    return build_default(["a small corpus of words for the tokenizer", SYSTEM, *PASSAGES], seed=0)


def test_the_whole_conversation_and_its_context_reach_the_rendered_prompt(loaded):
    record = content.sft_record(conversation_candidate(), content.WindowStats(), 0.1)
    ex = Example(record["prompt"], record["target"], "support", chat_turns(record["messages"]))
    text = loaded.prompt_text(ex.prompt, ex.messages)
    assert text.startswith("<|system|>" + SYSTEM) and "[1] " + PASSAGES[0] in text
    assert "<|call|>lookup_order(" in text and "<|tool|>" in text and text.endswith("<|assistant|>")
    assert text.index("didn't arrive") < text.index("how long does a refund take?")
    ids, labels, status = encode_status(loaded, ex, 512)
    assert status == "ok" and len(ids) == len(labels)
    # the single-turn record renders exactly as before conversations existed
    single = content.sft_record(
        TrainingCandidate(
            "r1", 1_800_000_000_000, "u", "s", "2+2?", "4", "accepted", label="sft_positive", target="4"
        ),
        content.WindowStats(),
        0.1,
    )
    assert (
        loaded.prompt_text("2+2?", chat_turns(single["messages"]))
        == loaded.prompt_text("2+2?")
        == "<|user|>2+2?<|assistant|>"
    )


def test_a_template_that_refuses_a_role_gets_the_conversation_as_one_turn(loaded):
    strict = "{% for m in messages %}{% if m['role'] not in ('user', 'assistant') %}{{ raise_exception('no ' + m['role']) }}{% endif %}[{{ m['content'] }}]{% endfor %}"
    loaded.tokenizer.chat_template, saved = strict, loaded.tokenizer.chat_template
    try:
        text = loaded.prompt_text("q", ({"role": "system", "content": "S"}, {"role": "user", "content": "q"}))
    finally:
        loaded.tokenizer.chat_template = saved
    assert text == "[system: S\n\nuser: q]"


def test_examples_stay_hashable_and_compare_as_before():
    a = Example("p", "t", "x", ({"role": "user", "content": "p"},))
    assert a == Example("p", "t", "x") and len({a, Example("p", "t", "x")}) == 1


def test_the_trainer_reads_a_chat_records_conversation_from_the_sealed_shards():
    import io

    import fastavro

    from schemas.codec import Codec
    from trainer.cycle import preference_pairs, sft_examples

    codec = Codec()
    c = conversation_candidate(
        user_action="corrected",
        label="sft_correction",
        correction="Up to 5 days.",
        target="Up to 5 days.",
        pair_chosen="Up to 5 days.",
        pair_rejected="Refunds take up to 5 business days.",
    )
    files = {}
    for kind, schema, record in (
        ("sft", "sft_record", content.sft_record(c, content.WindowStats(), 0.0)),
        ("preference", "preference_record", content.preference_record(c, content.WindowStats(), 0.0)),
    ):
        buf = io.BytesIO()
        fastavro.writer(buf, codec.current(schema).parsed, [record])
        files[f"ds/{kind}/train.avro"] = buf.getvalue()

    class Store:  # the shape of the dataset store the trainer reads: a manifest and files
        def manifest(self, dataset_id):
            return {"shards": [{"kind": k, "path": f"{k}/train.avro"} for k in ("sft", "preference")]}

        def open(self, path):
            return io.BytesIO(files[path])

    [train], [] = sft_examples(Store(), "ds")
    assert train.target == "Up to 5 days." and [m["role"] for m in train.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert train.messages[2]["tool_calls"][0]["function"]["name"] == "lookup_order"
    [pair], [] = preference_pairs(Store(), "ds")
    assert pair.messages == train.messages
