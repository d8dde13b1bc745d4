"""Toxicity scorers: detoxify's real loading code on a tiny checkpoint built here, and profanity-check.

Offline (HF_HUB_OFFLINE is set in conftest). The tiny checkpoint is built once per module.
"""

from __future__ import annotations

import logging

import pytest
import torch

from streams.gate.toxicity import DetoxifyScorer, ProfanityScorer, ToxicityModelError, ToxicityScorer, load_scorer
from tests.fixtures.models import CLASSES, build_tiny_detoxify

TOXIC = [
    "You are an idiot.",
    "what a pathetic LOSER",
    "Your SQL is stupid and so are you!",
    "Shut up, moron.",
    "idiots, all of them",
]
CLEAN = [
    "The answer is 42.",
    "SELECT name, COUNT(*) FROM users GROUP BY name;",
    "Hi Sam, could we move our meeting to Thursday? Thanks, Alex",
    "def reverse(s):\n    return s[::-1]",
    "Summary: the team shipped the beta and will start the redesign next week.",
    "You are right, thanks for the clear question.",
]
LONG_CLEAN = " ".join(["The report says the project is on plan and the team will review the next step."] * 6)
LONG_TOXIC = LONG_CLEAN[:300] + " you idiot " + LONG_CLEAN[300:]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-detoxify")
    build_tiny_detoxify(d)
    return d


@pytest.fixture(scope="module")
def ckpt(tiny_dir):
    return tiny_dir / "tiny-detoxify.ckpt"


@pytest.fixture(scope="module")
def detox(ckpt):
    threads = torch.get_num_threads()
    scorer = load_scorer(str(ckpt))  # config dir read from the checkpoint's model_type
    yield scorer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def profanity():
    return load_scorer()


def _alter(ckpt, dest, change):
    loaded = torch.load(ckpt, weights_only=False)
    change(loaded)
    torch.save(loaded, dest)
    return dest


# -- detoxify ----------------------------------------------------------------------------------------


def test_detoxify_loads_through_load_scorer(detox, tiny_dir):
    assert isinstance(detox, DetoxifyScorer) and isinstance(detox, ToxicityScorer)
    assert detox.name == "detoxify"
    assert detox.classes == list(CLASSES)
    assert detox.checkpoint == str(tiny_dir / "tiny-detoxify.ckpt")


def test_detoxify_separates_toxic_from_clean(detox):
    toxic = detox.score(TOXIC + [LONG_TOXIC])
    clean = detox.score(CLEAN + [LONG_CLEAN])
    assert min(toxic) > 0.5, toxic
    assert max(clean) < 0.1, clean


def test_detoxify_batches_keep_order(ckpt, detox):
    small = DetoxifyScorer(str(ckpt), batch_size=2)  # 11 texts of mixed length: 6 batches, sorted by length inside
    texts = [t for pair in zip(TOXIC, CLEAN) for t in pair] + [LONG_TOXIC]
    together = small.score(texts)
    alone = [detox.score([t])[0] for t in texts]
    assert together == pytest.approx(alone, abs=1e-4)
    assert [s > 0.5 for s in together] == [True, False] * len(TOXIC) + [True]


def test_detoxify_empty_texts_score_zero_without_the_model(detox):
    assert detox.score([]) == []
    assert detox.score(["", "   \n", "you idiot", ""])[:2] == [0.0, 0.0]
    assert detox.score(["", "you idiot", ""])[0::2] == [0.0, 0.0]
    assert detox.score(["you idiot", ""])[0] > 0.5


def test_detoxify_scores_are_floats_in_unit_interval(detox):
    scores = detox.score(TOXIC + CLEAN + ["x" * 50_000, "日本語のテキスト", "🙂" * 100, "[CLS] [SEP] [PAD]"])
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in scores), scores


def test_detoxify_cuts_long_texts(ckpt):
    scorer = DetoxifyScorer(str(ckpt), max_chars=20)
    # the insult is cut off in the second text
    cut = scorer.score(["you idiot " + "hello " * 2000, "hello " * 10 + "you idiot"])
    assert cut[0] > 0.5 and cut[1] < 0.1, cut
    tokens = DetoxifyScorer(str(ckpt), max_chars=100_000)
    assert tokens.max_length == 128  # the tiny tokenizer's limit: 3,000 words are cut there, no error
    assert tokens.score(["hello " * 3000])[0] < 0.1


def test_detoxify_score_is_the_max_over_classes(ckpt, tmp_path):
    """A checkpoint whose only strong class is `threat` must still flag: the score is not `toxicity` alone."""

    def only_threat(loaded):
        sd = loaded["state_dict"]
        strong, threat = CLASSES.index("toxicity"), CLASSES.index("threat")
        for key in ("classifier.weight", "classifier.bias"):
            sd[key] = sd[key].clone()
            sd[key][[strong, threat]] = sd[key][[threat, strong]]
            sd[key][CLASSES.index("insult")] = sd[key][CLASSES.index("obscene")]

    scorer = DetoxifyScorer(str(_alter(ckpt, tmp_path / "threat.ckpt", only_threat)))
    toxic, clean = scorer.score(["you idiot", "hello there"])
    assert toxic > 0.5 and clean < 0.1


def test_detoxify_config_dir_given_explicitly(ckpt, tiny_dir):
    scorer = load_scorer(str(ckpt), str(tiny_dir / "config"))
    assert scorer.score(["you moron", "thanks"]) == pytest.approx([0.9975, 0.0025], abs=1e-3)


def test_detoxify_threads_are_set(ckpt):
    before = torch.get_num_threads()
    try:
        assert DetoxifyScorer(str(ckpt), threads=1).threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_detoxify_rejects_what_is_not_a_list_of_strings(detox):
    with pytest.raises(TypeError):
        detox.score("you idiot")
    with pytest.raises(TypeError):
        detox.score(["fine", None])


def test_scored_text_is_never_logged(ckpt, caplog):
    secret = "you idiot, my card is 4111 1111 1111 1111"
    with caplog.at_level(logging.DEBUG):
        scorer = load_scorer(str(ckpt))
        scorer.score([secret])
        load_scorer().score([secret])
    assert caplog.records, "the loads should log"
    for r in caplog.records:
        assert "4111" not in r.getMessage() and "4111" not in str(vars(r))


# -- load errors: one line naming the path ---------------------------------------------------------------


def _garbage(ckpt, dest):
    dest.write_bytes(b"\x00not a checkpoint" * 10)
    return dest


def _truncated(ckpt, dest):
    dest.write_bytes(ckpt.read_bytes()[:4096])
    return dest


def _empty(ckpt, dest):
    dest.write_bytes(b"")
    return dest


def _no_config(ckpt, dest):
    return _alter(ckpt, dest, lambda c: c.pop("config"))


def _no_classes(ckpt, dest):
    return _alter(ckpt, dest, lambda c: c["config"].pop("dataset"))


def _missing_weights(ckpt, dest):
    return _alter(ckpt, dest, lambda c: c["state_dict"].pop("classifier.weight"))


def _wrong_shapes(ckpt, dest):
    def change(c):
        c["state_dict"]["classifier.weight"] = torch.zeros(6, 64)

    return _alter(ckpt, dest, change)


def _remote_model_type(ckpt, dest):
    def change(c):
        c["config"]["arch"]["args"]["model_type"] = "bert-base-uncased"

    return _alter(ckpt, dest, change)


@pytest.mark.parametrize(
    "make, says",
    [
        (None, "no such file"),
        (_garbage, "not a readable torch checkpoint"),
        (_truncated, "not a readable torch checkpoint"),
        (_empty, "not a readable torch checkpoint"),
        (_no_config, "needs the keys 'config' and 'state_dict'"),
        (_no_classes, "config.dataset.args.classes"),
        (_missing_weights, "classifier.weight"),
        (_wrong_shapes, "does not load"),
        (_remote_model_type, "'bert-base-uncased' is not a local directory"),
    ],
    ids=[
        "missing",
        "garbage",
        "truncated",
        "empty",
        "no-config",
        "no-classes",
        "missing-weights",
        "wrong-shapes",
        "remote-model-type",
    ],
)
def test_bad_checkpoint_says_which_path_and_what_in_one_line(ckpt, tmp_path, make, says):
    path = tmp_path / "bad.ckpt"
    if make is not None:
        make(ckpt, path)
    with pytest.raises(ToxicityModelError) as err:
        load_scorer(str(path))
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(path) in msg and says in msg, msg
    assert "\n" not in msg and len(msg) < 600, msg
    e = err.value  # no chained traceback under it
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


def test_transformers_load_report_is_not_printed(ckpt, tmp_path):
    """transformers logs a 40-line table for a checkpoint that does not fit; the one-line error replaces it."""
    seen = []

    class Watch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    hf_log = logging.getLogger("transformers")
    watch = Watch()
    hf_log.addHandler(watch)
    try:
        before = hf_log.handlers[:]
        for make in (_missing_weights, _wrong_shapes):
            with pytest.raises(ToxicityModelError):
                load_scorer(str(make(ckpt, tmp_path / f"{make.__name__}.ckpt")))
        assert hf_log.handlers == before  # put back after the load
    finally:
        hf_log.removeHandler(watch)
    assert not [m for m in seen if "LOAD REPORT" in m]


@pytest.mark.parametrize(
    "config_dir, says", [("/nonexistent/toxic-config", "is not a local directory"), ("{tmp}", "has no config.json")]
)
def test_bad_config_dir_is_one_line(ckpt, tmp_path, config_dir, says):
    config_dir = config_dir.format(tmp=tmp_path)
    with pytest.raises(ToxicityModelError) as err:
        load_scorer(str(ckpt), config_dir)
    assert config_dir in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def test_config_dir_without_checkpoint_is_a_mistake(tmp_path):
    with pytest.raises(ToxicityModelError, match="checkpoint is empty"):
        load_scorer("", str(tmp_path))


# -- the fixture builder --------------------------------------------------------------------------------


def test_builder_is_deterministic_and_takes_its_own_words(tmp_path, ckpt):
    again = torch.load(build_tiny_detoxify(tmp_path / "again"), weights_only=False)["state_dict"]
    first = torch.load(ckpt, weights_only=False)["state_dict"]
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)

    custom = DetoxifyScorer(str(build_tiny_detoxify(tmp_path / "custom", seed=3, toxic_words=["banana"])))
    banana, idiot = custom.score(["I like a banana", "you idiot"])
    assert banana > 0.5 and idiot < 0.1


# -- profanity-check -----------------------------------------------------------------------------------


def test_profanity_is_the_default(profanity):
    assert isinstance(profanity, ProfanityScorer) and isinstance(profanity, ToxicityScorer)
    assert profanity.name == "profanity-check"


def test_profanity_scores_insults_above_clean_text(profanity):
    insult, clean = profanity.score(["You are a stupid, worthless idiot.", "Thanks, the report is attached."])
    assert insult > 0.5
    assert insult > clean
    assert clean < 0.1


def test_profanity_order_empty_and_range(profanity):
    texts = ["", "Shut up, moron.", "  ", "Hi Sam, could we move our meeting to Thursday?", "Fuck you."]
    scores = profanity.score(texts)
    assert scores[0] == 0.0 and scores[2] == 0.0
    assert scores[1] > 0.5 and scores[4] > 0.5 and scores[3] < 0.1
    assert all(type(s) is float and 0.0 <= s <= 1.0 for s in scores)
    assert profanity.score([]) == []
    assert profanity.score(texts[::-1]) == scores[::-1]


def test_profanity_scores_are_calibrated_onto_the_policy_scale():
    from streams.gate.toxicity import ProfanityScorer

    cal = ProfanityScorer.calibrate
    assert cal(0.0) == 0.0 and cal(1.0) == pytest.approx(1.0) and cal(0.5) == pytest.approx(0.1)
    points = [i / 100 for i in range(101)]
    assert all(cal(a) < cal(b) for a, b in zip(points, points[1:]))  # monotone: the order of texts is kept
    raw, calibrated = ProfanityScorer(calibrated=False), ProfanityScorer()
    texts = ["How many continents are there?", "You are a stupid idiot and a worthless moron."]
    r, c = raw.score(texts), calibrated.score(texts)
    assert r[0] > 0.1 and c[0] < 0.1  # a quiz question is not abuse on the policy's scale
    assert c[1] > 0.9 and c == [pytest.approx(cal(x)) for x in r]
