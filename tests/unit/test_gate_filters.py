"""The gate's pure filters: action, length, quality score, grounding, keep rate, and the pipeline's
error handling. Model-backed filters have their own files (test_pii, test_toxicity, test_dedup)."""

from __future__ import annotations

import pytest

from schemas.records import TrainingCandidate
from streams.gate.filters import (
    ActionStage,
    DuplicateStage,
    GroundingStage,
    Item,
    LengthStage,
    QualityStage,
    build_stages,
)
from streams.gate.grounding import grounding
from streams.gate.keeprate import KeepRate
from streams.gate.pipeline import Gate
from flywheel.policy import GatePolicy, QualityFilter
from streams.gate.quality import check_format, kept_share, quality_score, quality_terms

ANSWER = (
    "The capital of Australia is Canberra. Canberra was chosen as a compromise between Sydney and Melbourne "
    "and became the seat of government in 1927. Let me know if you would like a more detailed explanation."
)
CONTEXT = [
    "The capital of Australia is Canberra. Canberra was chosen as a compromise between Sydney and Melbourne "
    "and became the seat of government in 1927."
]


def cand(**kw) -> TrainingCandidate:
    base = dict(
        request_id="r1",
        timestamp=1_700_000_000_000,
        user_id="u1",
        session_id="s1",
        prompt="What is the capital of Australia?",
        response=ANSWER,
        user_action="accepted",
        task_type="qa",
    )
    base.update(kw)
    return TrainingCandidate(**base)


def run(stage, *candidates):
    items = [Item(c) for c in candidates]
    stage.run(items)
    return items


def codes(item):
    return [code for _, code in item.reasons]


# -- action and length ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, passes",
    [
        ("accepted", True),
        ("copied", True),
        ("corrected", True),
        ("regenerated", False),
        ("abandoned", False),
        ("thumbs_up", False),
    ],
)
def test_action_filter(action, passes):
    [item] = run(ActionStage(GatePolicy().action.allowed), cand(user_action=action))
    assert codes(item) == ([] if passes else ["action_excluded"])


def test_length_counts_the_training_target_words():
    short = " ".join(["word"] * 19)
    ok, too_short, corrected = run(
        LengthStage(20),
        cand(response=" ".join(["word"] * 20)),
        cand(response=short),
        cand(user_action="corrected", response=ANSWER, correction=short),
    )
    assert codes(ok) == [] and ok.candidate.scores["words"] == 20
    assert codes(too_short) == ["too_short"]
    assert codes(corrected) == ["too_short"]  # the correction is what a model would learn to say


def test_length_token_minimum_with_a_real_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([ANSWER] * 3, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    from streams.gate.pipeline import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path))
    [item] = run(LengthStage(5, 1000, tokenizer), cand())
    assert codes(item) == ["too_few_tokens"]
    assert item.candidate.scores["tokens"] > item.candidate.scores["words"]  # a tiny vocabulary splits words
    [item] = run(LengthStage(5, 10, tokenizer), cand())
    assert codes(item) == []


def test_a_tokenizer_that_does_not_load_says_so(tmp_path):
    from streams.gate.pipeline import TokenizerError, load_tokenizer

    with pytest.raises(TokenizerError, match="does not load offline"):
        load_tokenizer(str(tmp_path / "nothing-here"))


# -- quality score ---------------------------------------------------------------------------------

Q = QualityFilter()


def test_quality_score_follows_the_documented_formula():
    c = cand(thumbs=1, rating=5.0, uncertainty=0.2, time_to_action_ms=30_000)
    terms = quality_terms(c, Q)
    assert terms == {"base": 0.70, "thumbs": 0.10, "rating": 0.20, "uncertainty": pytest.approx(-0.05)}
    assert quality_score(terms) == 0.95


def test_quality_signals_move_the_score_the_right_way():
    score = lambda **kw: quality_score(quality_terms(cand(**kw), Q))  # noqa: E731
    plain = score()
    assert score(thumbs=-2) < plain < score(thumbs=3)
    assert score(rating=1.0) < plain < score(rating=5.0)
    assert score(time_to_action_ms=500) < plain
    assert score(uncertainty=0.9) < score(uncertainty=0.1)
    assert score(user_action="copied") > plain > score(user_action="regenerated")
    assert score(response=ANSWER.rstrip(".") + " and then the") < plain  # truncated
    assert score(response="As an AI language model, I cannot help with that. " + ANSWER) < plain
    assert score(response=" ".join(["the same words again"] * 15) + ".") < plain
    assert score(response="```python\nprint(1)\n" + ANSWER) < plain
    assert 0.0 <= score(user_action="thumbs_down", thumbs=-1, rating=1.0, uncertainty=1.0) <= 1.0


def test_a_correction_that_rewrites_everything_is_trusted_less():
    small_fix = ANSWER.replace("1927", "1913")
    rewrite = "Completely different text about something else that keeps nothing of the original answer at all."
    assert kept_share(ANSWER, small_fix) > 0.9 and kept_share(ANSWER, rewrite) < 0.2
    fixed = quality_terms(cand(user_action="corrected", correction=small_fix), Q)
    rewritten = quality_terms(cand(user_action="corrected", correction=rewrite), Q)
    assert "rewrite" not in fixed or fixed["rewrite"] == 0
    assert rewritten["rewrite"] < -0.1


def test_format_checks():
    assert check_format(ANSWER).score == 1.0
    assert check_format("def f(x):\n    return x").truncated is False  # code may end without a full stop
    assert check_format("It was the best of").truncated is True
    assert check_format("``` open fence").broken_fence is True


def test_quality_stage_rejects_below_threshold_and_stores_the_score():
    good, bad = run(QualityStage(Q), cand(), cand(user_action="regenerated"))
    assert codes(good) == [] and good.candidate.quality_score == good.candidate.scores["quality"] >= 0.6
    assert codes(bad) == ["low_quality"] and bad.candidate.scores["quality.base"] == 0.15
    [scored_only] = run(QualityStage(Q, reject=False), cand(user_action="regenerated"))
    assert codes(scored_only) == [] and scored_only.candidate.quality_score < 0.6


# -- grounding -------------------------------------------------------------------------------------


def test_grounding_supports_claims_the_context_holds():
    assert grounding(ANSWER, CONTEXT).score == 1.0
    wrong = ANSWER.replace("is Canberra", "is Sydney")
    g = grounding(wrong, CONTEXT)
    assert g.claims == 2 and g.supported == 1 and g.score == 0.5  # "Sydney" is in the context, but not as capital
    assert (
        grounding("Water boils at 90 degrees Celsius.", ["Water boils at 100 degrees Celsius at sea level."]).score
        == 0.0
    )


def test_grounding_is_skipped_without_context_or_claims_and_says_so():
    no_context, no_claims, wrong = run(
        GroundingStage(0.8, 0.5),
        cand(),
        cand(response="Happy to help with that!", retrieved_context=CONTEXT),
        cand(response=ANSWER.replace("is Canberra", "is Sydney"), retrieved_context=CONTEXT),
    )
    assert codes(no_context) == [] and no_context.notes == ["grounding_skipped"]
    assert codes(no_claims) == [] and no_claims.notes == ["grounding_no_claims"]
    assert codes(wrong) == ["ungrounded"] and wrong.candidate.scores["grounding"] == 0.5


# -- keep rate -------------------------------------------------------------------------------------


def test_keep_rate_cuts_at_the_rolling_quantile_per_task_type():
    keep = KeepRate(band=(0.2, 0.3), window=1000, min_samples=100)
    keep.observe("qa", [i / 1000 for i in range(1000)])
    assert keep.threshold("qa") == pytest.approx(0.7)
    assert keep.keeps("qa", 0.71) and not keep.keeps("qa", 0.69)
    assert keep.threshold("code") is None and keep.keeps("code", 0.0)  # a new task type warms up first
    keep.observe("qa", [0.0] * 1000)  # the window rolls: old scores leave it
    assert keep.threshold("qa") == 0.0


def test_keep_rate_position_in_the_band():
    keep = KeepRate(band=(0.2, 0.3), window=100, min_samples=10)
    keep.record("qa", [True] * 5)
    assert keep.position("qa") == "warming_up"
    keep.record("qa", [True] * 25 + [False] * 70)
    assert keep.rate("qa") == 0.3 and keep.position("qa") == "inside"
    keep.record("qa", [False] * 100)
    assert keep.position("qa") == "below"
    restored = KeepRate(band=(0.2, 0.3), window=100, min_samples=10)
    keep.observe("qa", [0.5] * 20)
    restored.restore(keep.to_json())
    assert restored.rate("qa") == keep.rate("qa") and restored.threshold("qa") == keep.threshold("qa")


def test_the_gate_estimates_the_keep_band_but_leaves_the_cut_to_the_seal():
    """Which candidates are the top 30 % depends on the whole window, not on what one process saw
    first: the gate passes them all and only tracks its pass rate and the band's estimated cut."""
    import random

    from streams.gate.pipeline import Gate

    rng = random.Random(4)
    policy = GatePolicy.from_dict(
        {
            "pii": {"enabled": False},
            "duplicates": {"enabled": False},
            "length": {"enabled": False},
            "quality": {"enabled": False},
            "toxicity": {"enabled": False},
            "grounding": {"enabled": False},
        }
    )
    gate = Gate(policy, build_stages(policy))
    decisions = [d for _ in range(5) for d in gate.decide([cand(quality_score=rng.random()) for _ in range(100)])]
    assert all(d.passed for d in decisions) and not any("below_keep_quantile" in d.reasons for d in decisions)
    assert gate.keep_rate.rate("qa") == 1.0 and 0.6 < gate.keep_rate.threshold("qa") < 0.8


def test_the_duplicate_stage_writes_near_keys_that_near_copies_share():
    from streams.gate.dedup import DuplicateIndex, MemoryBandStore

    stage = DuplicateStage(DuplicateIndex(MemoryBandStore()))
    text = (
        "The capital of Australia is Canberra. It was chosen as a compromise between Sydney and Melbourne, "
        "and it has been the seat of government since 1927 when parliament first met there."
    )
    items = [
        Item(cand(response=text)),
        Item(cand(response=text.replace("since 1927", "since the year 1927"))),
        Item(cand(response="Paris is the capital of France and its largest city by far, on the Seine river.")),
        Item(cand(response=text)),
    ]
    stage.run(items)
    keys = [[i.candidate.dedup_keys[k : k + 8] for k in range(0, len(i.candidate.dedup_keys), 8)] for i in items]
    assert len(keys[0]) == 11 and keys[0] == keys[3]  # deterministic
    assert set(keys[0]) & set(keys[1]) and not set(keys[0]) & set(keys[2])
    assert not any(i.rejected for i in items)


# -- the pipeline ----------------------------------------------------------------------------------


class Broken:
    """A model that fails: a stand-in for an OOM or a corrupt checkpoint, not for a real scorer."""

    name = "broken"

    def __init__(self, failures: int):
        self.failures = failures

    def score(self, texts):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("model failed")
        return [0.0] * len(texts)


def _gate(scorer):
    from streams.gate.filters import build_stages

    policy = GatePolicy.from_dict(
        {"pii": {"enabled": False}, "duplicates": {"enabled": False}, "keep_rate": {"enabled": False}}
    )
    return Gate(policy, build_stages(policy, scorer=scorer))


def test_a_failing_filter_rejects_with_filter_error_and_never_passes_unchecked():
    gate = _gate(Broken(failures=3))  # the batch, its retry, and the candidate alone
    [d] = gate.decide([cand()])
    assert not d.passed and d.reasons == ["filter_error:toxicity"] and d.removed_by == "toxicity"
    [d] = gate.decide([cand(request_id="r2")])  # the model is back: the next batch is scored
    assert d.passed and "toxicity" in d.candidate.scores


def test_a_candidate_that_breaks_a_filter_fails_alone():
    class Fragile(Broken):
        def score(self, texts):
            if any("\u2603" in t for t in texts):
                raise ValueError("this model cannot read a snowman")
            return [0.0] * len(texts)

    decisions = _gate(Fragile(failures=0)).decide(
        [cand(request_id=f"r{i}") for i in range(3)] + [cand(request_id="snow", response=ANSWER + " \u2603")]
    )
    assert [d.reasons for d in decisions] == [[], [], [], ["filter_error:toxicity"]]


def test_a_stage_is_its_hooks_not_its_class():
    """The gate asks a stage where it runs and what to do with what it could not check; a stage of
    one's own needs only `name` and `run`, and cannot be made without `run`."""
    from streams.gate.filters import Stage

    class Incomplete(Stage):
        name = "incomplete"

    with pytest.raises(TypeError):
        Incomplete()

    class Shouty(Stage):
        name = "shouty"
        sees_rejected = True  # runs even after an earlier stage rejected, like the redactor
        unchecked: list = []

        def run(self, items):
            for item in items:
                if "\u2603" in item.candidate.response:
                    raise ValueError("cannot read a snowman")
                item.candidate.response = item.candidate.response.upper()

        def on_unchecked(self, items):
            self.unchecked.extend(i.candidate.request_id for i in items)
            for item in items:
                item.candidate.response = "[withheld]"

    policy = GatePolicy.from_dict(
        {
            "evaluate_all": False,
            "pii": {"enabled": False},
            "duplicates": {"enabled": False},
            "keep_rate": {"enabled": False},
        }
    )
    shouty = Shouty()
    gate = Gate(policy, [ActionStage(policy.action.allowed), shouty])
    ok, regenerated, snow = gate.decide(
        [
            cand(request_id="ok"),
            cand(request_id="re", user_action="regenerated"),
            cand(request_id="snow", response=ANSWER + " \u2603"),
        ]
    )
    assert ok.passed and ok.candidate.response == ANSWER.upper()
    # rejected by the action stage, and still seen by a stage that sees rejected candidates
    assert regenerated.reasons == ["action_excluded"] and regenerated.candidate.response == ANSWER.upper()
    assert snow.reasons == ["filter_error:shouty"] and snow.candidate.response == "[withheld]"
    assert shouty.unchecked == ["snow"]


def test_a_filter_that_fails_once_is_retried():
    [d] = _gate(Broken(failures=1)).decide([cand()])
    assert d.passed and d.reasons == []


def test_decisions_carry_every_reason_and_the_policy_stamp():
    gate = _gate(Broken(failures=0))
    [d] = gate.decide([cand(user_action="regenerated", response="Too short.")])
    assert d.reasons == ["action_excluded", "too_short", "low_quality"]
    assert d.removed_by == "action" and d.candidate.policy_version == gate.policy.stamp
    assert d.candidate.notes == ["grounding_skipped"]


def test_an_infrastructure_error_propagates_for_the_caller_to_retry():
    """Redis away is not the candidates' fault: the batch is retried later, not rejected."""
    from streams.gate.filters import build_stages

    class Unreachable(ConnectionError):
        pass

    class DownScorer(Broken):
        def score(self, texts):
            raise Unreachable("index unreachable")

    policy = GatePolicy.from_dict({"pii": {"enabled": False}, "duplicates": {"enabled": False}})
    gate = Gate(policy, build_stages(policy, scorer=DownScorer(0)), transient=(Unreachable,))
    with pytest.raises(Unreachable):
        gate.decide([cand()])
