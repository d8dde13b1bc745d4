"""The cut to max_length: a long prompt loses its oldest tokens, the target is never cut, and an
example whose target alone does not fit is left out; both are counted and reported (the training
summary in the registry, the models event's metrics, a log line)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from flywheel.policy import TrainerPolicy  # noqa: E402
from trainer import recipe, synthetic  # noqa: E402
from trainer.examples import Example  # noqa: E402
from trainer.model import Architecture, build_default  # noqa: E402
from trainer.train import IGNORE, TrainConfig, encode_status, fine_tune, fit  # noqa: E402

TINY = Architecture(vocab_size=400, n_embd=32, n_layer=1, n_head=2, n_positions=64)


@pytest.fixture(scope="module")
def tiny():
    corpus = synthetic.generate(200, ["sql", "support", "qa"], seed=2)
    return build_default((e.prompt + " " + e.target for e in corpus), TINY, seed=1)


def lengths(loaded, ex: Example) -> tuple[int, int]:
    tok = loaded.tokenizer
    return (
        len(tok(loaded.prompt_text(ex.prompt), add_special_tokens=False)["input_ids"]),
        len(tok(loaded.target_text(ex.target), add_special_tokens=False)["input_ids"]),
    )


def test_fit_cuts_the_prompt_from_the_left_and_never_the_target():
    prompt, target = list(range(100, 110)), [1, 2, 3]
    assert fit(prompt, target, 20) == (prompt + target, [IGNORE] * 10 + target, "ok")
    ids, labels, status = fit(prompt, target, 8)  # 5 prompt tokens are room: the last 5
    assert status == "prompt_cut" and ids == [105, 106, 107, 108, 109, 1, 2, 3]
    assert labels == [IGNORE] * 5 + [1, 2, 3]
    ids, labels, status = fit(prompt, list(range(7)), 8)  # room for one prompt token: the one right before the answer
    assert status == "prompt_cut" and ids == [109, *range(7)] and labels == [IGNORE, *range(7)]
    for n in (8, 9, 30):  # the target alone leaves no room for the prompt
        ids, labels, status = fit(prompt, list(range(n)), 8)
        assert status == "too_long" and len(ids) == 8


def test_a_long_prompt_keeps_its_end_the_question_and_the_answer_turn(tiny):
    question = "How many users signed up in March?"
    ex = Example("Background you may ignore. " * 40 + question, "SELECT count(*) FROM users", "sql")
    prompt_len, target_len = lengths(tiny, ex)
    assert prompt_len + target_len > 64
    ids, labels, status = encode_status(tiny, ex, 64)
    assert status == "prompt_cut" and len(ids) == 64
    kept_prompt = ids[: 64 - target_len]
    text = tiny.tokenizer.decode(kept_prompt)
    assert text.endswith(question + "<|assistant|>")  # the newest part of the prompt and the turn marker survive
    assert "<|user|>" not in text  # the oldest part went
    assert labels[: 64 - target_len] == [IGNORE] * (64 - target_len)
    target = [t for t in labels if t != IGNORE]
    assert tiny.tokenizer.decode(target) == "SELECT count(*) FROM users<|end|>"  # whole, with its end token


def test_fine_tune_counts_cut_prompts_and_leaves_out_targets_that_cannot_fit(tiny):
    base = synthetic.generate(24, ["sql", "support"], seed=5)
    long_prompts = [Example("Earlier conversation, long. " * 30 + e.prompt, e.target, e.task_type) for e in base[:5]]
    long_targets = [Example(e.prompt, " ".join([e.target] * 30), e.task_type) for e in base[5:8]]
    examples = base[8:] + long_prompts + long_targets
    limit = 48
    expect_cut = expect_out = 0
    for ex in examples:  # what the cut must find, from the tokenizer alone
        p, t = lengths(tiny, ex)
        expect_out += t >= limit
        expect_cut += t < limit < p + t
    assert expect_cut >= 5 and expect_out == 3
    config = TrainConfig(epochs=1, learning_rate=1e-3, batch_size=8, max_length=limit)
    report = fine_tune(tiny, examples, config)
    assert (report.prompt_truncated, report.too_long) == (expect_cut, expect_out)
    assert report.examples == len(examples) - expect_out and report.max_length == limit
    summary = recipe.TrainingOutcome(report, None, None).summary()["training"]  # what the registry keeps
    assert (
        summary["prompt_truncated"] == expect_cut
        and summary["too_long"] == expect_out
        and summary["max_length"] == limit
    )
    with pytest.raises(ValueError, match="longer than 48 tokens"):
        fine_tune(tiny, long_targets, config)


def test_the_length_is_at_most_what_the_model_takes(tiny):
    """A policy asking for more tokens than the model has positions trains at the model's length (GPT-2 would
    fail on a position past 64), cutting prompts to fit."""
    ex = [Example("Earlier conversation, long. " * 30 + "Which table holds invoices?", "invoices", "sql")] * 4
    outcome = recipe.train(tiny, ex, (), TrainerPolicy(epochs=1, batch_size=4, max_length=4096))
    assert outcome.sft.max_length == 64 and outcome.sft.prompt_truncated == 4 and outcome.sft.too_long == 0
    assert outcome.summary()["training"]["tokens"] == 4 * 64
